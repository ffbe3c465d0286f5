"""`resnet-study sweep plan`: what a sweep will cost before it is launched, and how that compares after.

A cell (all seeds of one experiment) trains its runs together in one process, so its expected training time is
its runs' images (epochs x training images, summed over its seeds) / the device's throughput. The throughput is,
in order:

1. measured: the median device img/s of the store's completed runs of the same depth on the same device name and
   precision: train_size x epochs_done / train_seconds of the run, times the runs that trained beside it in its
   process (cell_runs), preferring runs from cells of the same size;
2. benchmarked now: a short `bench train` of this project's loop, (b), on this machine at the cell's depth and
   augmentation, with the threads each of the parallel processes would get (only where the device is here);
3. unknown, said so.

Totals: device-hours (a cell holds one device, GPU or CPU process, for its time) and the wall-clock at the spec's
parallelism (or --parallel), longest cells first onto the first free slot. Evaluation is not counted, as
train_seconds does not count it. The plan is saved as RESULTS/sweep-plans/<name>.json; `sweep status` shows it
beside each cell's actual training time.
"""

from __future__ import annotations

import heapq
import json
import statistics
from dataclasses import asdict, dataclass

from ..core import StudyError, datasets, runtime, store, userdata
from ..core.storage import Storage
from ..core.config import RunConfig
from .sweep import Sweep

PLAN_DIR = "sweep-plans"


def train_images(cfg: RunConfig) -> int:
    """Training images per epoch: the first train_limit of the full set (its size from core.datasets; an .npz of
    the user's is read for it), less the validation split."""
    spec = datasets.get(cfg.dataset)
    full = spec.train_images or len(userdata.load_user(spec, None)[0]["y_train"])
    return min(cfg.train_limit or full, full) - cfg.val_split


@dataclass
class RunPlan:
    run_id: str
    seed: int
    images: int  # epochs x training images
    seconds: float | None


@dataclass
class CellPlan:
    index: int
    seeds: list[int]
    layers: int
    epochs: int
    images: int  # of all its runs
    images_per_second: float | None  # the device's, all runs together
    source: str
    seconds: float | None
    runs: list[RunPlan]


def measured_rates(results: Storage, device_name: str | None, precision: str) -> dict[int, list[tuple[int, float]]]:
    """layers -> [(cell size, device img/s)] of each completed run on `device_name` (None: any GPU) in
    `precision`."""
    if not store.has_snapshot(results):
        return {}
    rates: dict[int, list[tuple[int, float]]] = {}
    for layers, cell_runs, rate in store.completed_rates(results, device_name, precision):
        rates.setdefault(layers, []).append((cell_runs, rate))
    return rates


def _measured(rates: list[tuple[int, float]], cell_runs: int) -> tuple[float, str]:
    same = [r for k, r in rates if k == cell_runs]
    chosen = same or [r for _, r in rates]
    return statistics.median(chosen), f"measured ({len(chosen)} run{'s' if len(chosen) > 1 else ''})"


def _bench_rate(cfg: RunConfig, device: str, threads: int) -> float:
    from .bench.train import BenchOptions, run_bench

    res = run_bench(BenchOptions(device=device, n=cfg.n, shortcut=cfg.shortcut, dataset=cfg.dataset,
                                 augment=[cfg.augment], batch_size=cfg.batch_size, steps=6, warmup=3, rounds=1,
                                 eval_images=1000, threads=threads, classic=False))
    return res["pipelines"][f"b:{cfg.augment}"]["images_per_second"]


def plan(sweep: Sweep, results: Storage, device: str, parallel: int, bench: bool = True, log=print) -> dict:
    import torch

    from ..core.train import device_name, resolve_precision

    dev = None  # the device here, when the plan is for this machine
    if device == "cuda" and not torch.cuda.is_available():
        name, precision = None, "bf16"  # a plan for a GPU elsewhere: any GPU's measured runs
        where = "any GPU (none here)"
    else:
        dev = torch.device("cuda" if device in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
        name, precision = device_name(dev), resolve_precision("auto", dev).precision
        where = name
    rates = measured_rates(results, name, precision)
    benched: dict[tuple, float] = {}
    threads = runtime.thread_budget(parallel)
    cells = []
    for cell in sweep.cells:
        cfg = cell.config
        images = [r.epochs * train_images(r) for r in cell.runs]
        if rates.get(cfg.layers):
            rate, source = _measured(rates[cfg.layers], len(cell.runs))
        elif bench and dev is not None:
            key = (cfg.n, cfg.shortcut, cfg.dataset, cfg.augment, cfg.batch_size)
            if key not in benched:
                log(f"no completed ResNet-{cfg.layers} run on {where} in {precision}: benchmarking it now")
                benched[key] = _bench_rate(cfg, dev.type, threads)
            rate, source = benched[key], "benchmarked now"
        else:
            rate, source = None, "unknown"
        seconds = sum(images) / rate if rate else None
        # the runs of a cell advance together, step by step: each takes (about) the cell's time
        runs = [RunPlan(r.run_id, r.seed, k, seconds) for r, k in zip(cell.runs, images)]
        cells.append(CellPlan(cell.index, cell.seeds, cfg.layers, cfg.epochs, sum(images), rate, source, seconds,
                              runs))
    known = [c.seconds for c in cells if c.seconds is not None]
    return {"spec": sweep.name, "device": where, "precision": precision, "parallel": parallel,
            "cells": [asdict(c) for c in cells], "unknown_cells": len(cells) - len(known),
            "device_seconds": sum(known) if len(known) == len(cells) else None,
            "wall_seconds": _wall(known, parallel) if len(known) == len(cells) else None}


def _wall(seconds: list[float], parallel: int) -> float:
    """Longest first onto the first free of `parallel` slots: the sweep's wall-clock time."""
    slots = [0.0] * max(1, parallel)
    for s in sorted(seconds, reverse=True):
        heapq.heappush(slots, heapq.heappop(slots) + s)
    return max(slots)


def save(plan_: dict, results: Storage) -> str | None:
    """Keep the plan beside the results (a folder or the bucket) for `sweep status`; where it was kept, or None
    where the results cannot be written (a plan is worth having, not worth failing for)."""
    storage = results
    name = f"{PLAN_DIR}/{plan_['spec']}.json"
    try:
        storage.write(name, json.dumps(plan_, indent=1).encode())
    except (OSError, StudyError):
        return None
    return f"{storage}/{name}"


def load_saved(results: Storage, name: str) -> dict | None:
    try:
        found = results.read(f"{PLAN_DIR}/{name}.json")
        return json.loads(found) if found is not None else None
    except (OSError, ValueError):
        return None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

