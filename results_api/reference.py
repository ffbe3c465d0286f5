"""Published numbers to compare against, read from core/reference/*.csv (shipped as package data of `core`).

- He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016, Table 6: CIFAR-10 test error of
  ResNet-20 ... 1202, option-A shortcuts, 64k iterations at batch 128 on a 45k training split, i.e. about
  64 000 * 128 / 45 000 = 182 epochs (`PAPER_EPOCHS`).
- The seed report ("Impact of CNNs on Image Classification", 2024), Table 1: one run per depth, 20/50/100-epoch
  snapshots, CIFAR-10 trained in grayscale, training times from two unnamed machines.
- Other anchors (akamaster, Random-Erasing): `anchors()`, shown in the report.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

PAPER_EPOCHS = 182
PAPER_SOURCE = ("He et al. 2016, Table 6 (CVPR): CIFAR-10, option A, 64k iterations at batch 128 on 45k images "
                "= about 182 epochs, pad+crop+flip")
SEED_SOURCE = ("Seed report 2024, Table 1: one run per depth, 20/50-epoch figures are snapshots of the 100-epoch run, "
               "CIFAR-10 in grayscale, times from two unnamed machines")


@dataclass(frozen=True)
class ReferenceRow:
    """One published row of the comparison table: cells keyed by (layers, epochs)."""

    key: str
    label: str
    source: str
    dataset: str
    metric: str  # test_error (%) | train_seconds
    cells: dict[tuple[int, int], float]


def _read_csv(name: str) -> list[dict]:
    text = resources.files("core").joinpath("reference", name).read_text()
    return list(csv.DictReader(io.StringIO("".join(l for l in text.splitlines(True) if not l.startswith("#")))))


@lru_cache(maxsize=1)
def reference_rows() -> tuple[ReferenceRow, ...]:
    paper = _read_csv("he2016_cifar10_table6.csv")
    seed = _read_csv("seed_report_table1.csv")
    rows = [ReferenceRow("he2016-table6", "He et al. 2016, Table 6", PAPER_SOURCE, "cifar10", "test_error",
                         {(int(r["layers"]), PAPER_EPOCHS): float(r["test_error_percent"]) for r in paper})]
    for dataset in ("cifar10", "fashion-mnist"):
        mine = [r for r in seed if r["dataset"] == dataset]
        for metric, column in (("test_error", "test_error_percent"), ("train_seconds", "training_time_s")):
            rows.append(ReferenceRow(f"seed-report-table1-{dataset}-{metric}", "Seed report 2024, Table 1",
                                     SEED_SOURCE, dataset, metric,
                                     {(int(r["layers"]), int(r["epochs"])): float(r[column]) for r in mine}))
    return tuple(rows)


@lru_cache(maxsize=1)
def anchors() -> tuple[dict, ...]:
    """Further published test errors (%) with their sources: the report lists them beside the measured ones."""
    return tuple({**r, "layers": int(r["layers"]), "epochs": int(r["epochs"]),
                  "test_error_percent": float(r["test_error_percent"])} for r in _read_csv("published_anchors.csv"))
