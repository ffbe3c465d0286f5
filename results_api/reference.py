"""Published numbers and the claims made with them, read from core/reference/ (package data of resnet_study.core).

- He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016, Table 6: CIFAR-10 test error of
  ResNet-20 ... 1202, option-A shortcuts, 64k iterations at batch 128 on a 45k training split, i.e. about
  64 000 * 128 / 45 000 = 182 epochs (`PAPER_EPOCHS`), lr /10 at 32k and 48k iterations (epochs 91 and 136).
- The seed report ("Impact of CNNs on Image Classification", 2024), Table 1: one run per depth, 20/50/100-epoch
  snapshots, CIFAR-10 trained in grayscale, the full training set, training times from two unnamed machines.
- Other anchors (akamaster, Random-Erasing): `published_numbers(anchors=True)`, shown in the report.
- The claims of the paper and of the seed report, as data with their sources: claims.yaml.

Each published number records the training set it was measured on (`val_split`: images held out of the training
set) and its shortcut, so that it is only ever set beside measured runs of the same experiment.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from ..core.vocab import DATASETS

PAPER_EPOCHS = 182
PAPER_VAL_SPLIT = 5000  # the paper's 45k/5k split of CIFAR-10's 50k training images
PAPER = "He et al. 2016, Table 6"
SEED_REPORT = "Seed report 2024, Table 1"
PAPER_SOURCE = ("He et al. 2016, Table 6 (CVPR): CIFAR-10, option A, 64k iterations at batch 128 on 45k images "
                "= about 182 epochs, pad+crop+flip")
SEED_SOURCE = ("Seed report 2024, Table 1: one run per depth, 20/50-epoch figures are snapshots of the 100-epoch run, "
               "CIFAR-10 in grayscale, times from two unnamed machines")


def _text(name: str) -> str:
    return resources.files("resnet_study.core").joinpath("reference", name).read_text()


def _read_csv(name: str) -> list[dict]:
    text = _text(name)
    return list(csv.DictReader(io.StringIO("".join(l for l in text.splitlines(True) if not l.startswith("#")))))


@dataclass(frozen=True)
class ReferenceRow:
    """One published row of the comparison table: cells keyed by (layers, epochs)."""

    key: str
    label: str
    source: str
    dataset: str
    metric: str  # test_error_pct | train_seconds
    cells: dict[tuple[int, int], float]


@dataclass(frozen=True)
class Published:
    """One published number, with the experiment it was measured in."""

    label: str
    source: str
    dataset: str
    metric: str
    layers: int
    epochs: int
    value: float  # the mean over runs where the source gives one, else its single number
    val_split: int  # held out of the training set: 5000 for the paper, 0 for the full set
    shortcut: str = "A"

    def describe(self) -> str:
        return f"{self.label}: ResNet-{self.layers}, {self.epochs} ep"


@lru_cache(maxsize=1)
def reference_rows() -> tuple[ReferenceRow, ...]:
    paper = _read_csv("he2016_cifar10_table6.csv")
    seed = _read_csv("seed_report_table1.csv")
    rows = [ReferenceRow("he2016-table6", PAPER, PAPER_SOURCE, "cifar10", "test_error_pct",
                         {(int(r["layers"]), PAPER_EPOCHS): float(r["test_error_percent"]) for r in paper})]
    for dataset in DATASETS:
        mine = [r for r in seed if r["dataset"] == dataset]
        for metric, column in (("test_error_pct", "test_error_percent"), ("train_seconds", "training_time_s")):
            rows.append(ReferenceRow(f"seed-report-table1-{dataset}-{metric}", SEED_REPORT, SEED_SOURCE, dataset,
                                     metric, {(int(r["layers"]), int(r["epochs"])): float(r[column]) for r in mine}))
    return tuple(rows)


@lru_cache(maxsize=2)
def published_numbers(anchors: bool = False) -> tuple[Published, ...]:
    """Table 6 (the mean of 5 runs for ResNet-110, where the paper gives it) and the seed report's Table 1; with
    `anchors`, the other published test errors too (published_anchors.csv)."""
    out = [Published(PAPER, PAPER_SOURCE, "cifar10", "test_error_pct", int(r["layers"]), PAPER_EPOCHS,
                     float(r["mean_test_error_percent"] or r["test_error_percent"]), PAPER_VAL_SPLIT)
           for r in _read_csv("he2016_cifar10_table6.csv")]
    for r in _read_csv("seed_report_table1.csv"):
        for metric, column in (("test_error_pct", "test_error_percent"), ("train_seconds", "training_time_s")):
            out.append(Published(SEED_REPORT, SEED_SOURCE, r["dataset"], metric, int(r["layers"]), int(r["epochs"]),
                                 float(r[column]), 0))
    if anchors:
        out += [Published(r["source"], r["source"], r["dataset"], "test_error_pct", int(r["layers"]),
                          int(r["epochs"]), float(r["test_error_percent"]), 0)
                for r in _read_csv("published_anchors.csv")]
    return tuple(out)


@dataclass(frozen=True)
class Claim:
    """A claim of the paper or the seed report, tested on the store: `pairs` of cells (a, b) that must each show
    `expect` ("b lower" or "b higher" test error)."""

    id: str
    claim: str
    source: str
    dataset: str
    kind: str  # depth | epochs | plain vs ResNet
    shortcut: str
    val_split: int
    pairs: tuple[tuple[int, int], ...]  # (a, b): depths for kind depth, epoch budgets for kind epochs
    at: tuple[int, ...]  # the epoch budgets (kind depth) or depths (kind epochs) at which each pair is compared
    expect: str
    spec: str  # the shipped sweep spec that measures it
    overrides: tuple[tuple[int, tuple[tuple[str, object], ...]], ...] = ()  # depth -> fields unlike the recipe


@lru_cache(maxsize=1)
def claims() -> tuple[Claim, ...]:
    out = []
    for c in yaml.safe_load(_text("claims.yaml")):
        out.append(Claim(c["id"], c["claim"], c["source"], c["dataset"], c["kind"], c.get("shortcut", "A"),
                         c.get("val_split", 0), tuple(tuple(p) for p in c["pairs"]), tuple(c["at"]), c["expect"],
                         c["spec"], tuple((int(k), tuple(v.items())) for k, v in c.get("overrides", {}).items())))
    return tuple(out)
