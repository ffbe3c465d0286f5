"""`resnet-study bench runs`: whole `train` processes sharing one machine, P at a time, as a sweep runs them.

    resnet-study bench runs --device cuda --processes 1,2,4,8       # runs per GPU: the packing `sweep local` uses
    resnet-study bench runs --device cpu --processes 3 --sequential  # do 3 runs at once beat 3 in a row?

For each P: P identical `resnet-study train` processes (seeds 0..P-1, one results dir) start together; the figure is
the wall time until the last ends, and the aggregate training throughput: the sum over processes of their
steady-state img/s (the median over epochs after the first, whose time holds cuDNN autotuning and warm-up).
`--sequential` also runs the same P trainings one after another, for the time a queue of one would take.
With `share_cores` (the default, as `sweep local` does) each of the P processes gets OMP_NUM_THREADS = cores / P;
without it each takes its own default, as P plain `train` commands started by hand would.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _train_command(args: list[str], seed: int, results_dir: Path) -> list[str]:
    return [sys.executable, "-m", "resnet_study.jobs", "train", *args, "--seed", str(seed), "--progress", "json",
            "--results-dir", str(results_dir)]


def _run_together(args: list[str], seeds: list[int], results_dir: Path, env: dict) -> dict:
    start = time.perf_counter()
    procs = [subprocess.Popen(_train_command(args, s, results_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for s in seeds]
    outputs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    rates, epochs = [], []
    for p, (out, err) in zip(procs, outputs):
        if p.returncode:
            raise RuntimeError(f"train exited {p.returncode}: {err.strip().splitlines()[-1:]}")
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        steady = [r["images_per_second"] for r in rows[1:]] or [r["images_per_second"] for r in rows]
        rates.append(statistics.median(steady))
        epochs.append([r["epoch_seconds"] for r in rows])
    return {"processes": len(seeds), "wall_seconds": wall, "aggregate_images_per_second": sum(rates),
            "per_process_images_per_second": rates, "epoch_seconds": epochs}


def _env(processes: int | None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if processes:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    return env


def bench_runs(train_args: list[str], processes: list[int], sequential: bool = False, share_cores: bool = True,
               log=print) -> dict:
    levels = []
    with tempfile.TemporaryDirectory(prefix="resnet-study-bench-runs-") as tmp:
        for p in processes:
            level = _run_together(train_args, list(range(p)), Path(tmp) / f"together-{p}",
                                  _env(p if share_cores else None))
            if sequential:
                start = time.perf_counter()
                for s in range(p):
                    _run_together(train_args, [s], Path(tmp) / f"sequential-{p}", _env(1 if share_cores else None))
                level["sequential_wall_seconds"] = time.perf_counter() - start
            levels.append(level)
            log(format_level(level))
    return {"bench": "runs", "train_args": train_args, "share_cores": share_cores, "levels": levels,
            "best_processes": max(levels, key=lambda lv: lv["aggregate_images_per_second"])["processes"]}


def format_level(level: dict) -> str:
    text = (f"{level['processes']} at once: {level['wall_seconds']:.1f} s wall, "
            f"{level['aggregate_images_per_second']:.0f} img/s in all "
            f"({', '.join(f'{r:.0f}' for r in level['per_process_images_per_second'])} per process)")
    if "sequential_wall_seconds" in level:
        text += (f"; one after another: {level['sequential_wall_seconds']:.1f} s "
                 f"(together / in a row = {level['wall_seconds'] / level['sequential_wall_seconds']:.2f})")
    return text


def format_report(res: dict) -> str:
    lines = [f"train {' '.join(res['train_args'])}", "",
             f"{'processes':>9} {'wall s':>8} {'img/s in all':>13} {'img/s each':>11}"
             + (f" {'in a row s':>11} {'together/row':>13}" if "sequential_wall_seconds" in res["levels"][0] else "")]
    for lv in res["levels"]:
        line = (f"{lv['processes']:>9} {lv['wall_seconds']:>8.1f} {lv['aggregate_images_per_second']:>13.0f} "
                f"{statistics.mean(lv['per_process_images_per_second']):>11.0f}")
        if "sequential_wall_seconds" in lv:
            line += f" {lv['sequential_wall_seconds']:>11.1f} {lv['wall_seconds'] / lv['sequential_wall_seconds']:>13.2f}"
        lines.append(line)
    lines.append(f"\nmost images/s with {res['best_processes']} process(es) at a time")
    return "\n".join(lines)
