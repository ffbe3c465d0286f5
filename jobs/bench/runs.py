"""`resnet-study bench processes`: whole `train` processes sharing one machine, P at a time, as a sweep runs them;
and K separate processes against one cell of K runs in one process.

    resnet-study bench processes --device cuda --processes 1,2,4,8       # runs per GPU: the packing `sweep local` uses
    resnet-study bench processes --device cpu --processes 3 --sequential  # do 3 runs at once beat 3 in a row?
    resnet-study bench processes --device cpu --processes 1,2,4,8 --cells  # P processes vs `train --seeds 0..P-1`

For each P: P identical `resnet-study train` processes (seeds 0..P-1, one results dir) start together; the figure is
the wall time until the last ends, and the aggregate training throughput: the sum over processes of their
steady-state img/s (the median over epochs after the first, whose time holds cuDNN autotuning and warm-up).
`--sequential` also runs the same P trainings one after another, for the time a queue of one would take.
With `share_cores` (the default, as `sweep local` does) each of the P processes gets OMP_NUM_THREADS = cores / P;
without it each takes its own default, as P plain `train` commands started by hand would.

`--cells` runs, for each K, the K processes at once as above and then one `train --seeds 0..K-1` process (the
same K runs as a cell, with all the cores): img/s in all and per run, wall time, and peak memory (the sum of the
processes' peak RSS; the cell's own peak RSS), from the kernel's rusage of each process.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ...core import EXIT_SIGTERM, runtime


def _train_command(args: list[str], seeds: list[int], results_dir: Path) -> list[str]:
    seed_args = ["--seed", str(seeds[0])] if len(seeds) == 1 else ["--seeds", ",".join(map(str, seeds))]
    return [sys.executable, "-m", "resnet_study.jobs", "train", *args, *seed_args, "--progress", "json",
            "--results-dir", str(results_dir)]


def _finish(proc: subprocess.Popen) -> tuple[str, str, float]:
    """(stdout, stderr, peak RSS in MB) of a finished process, from the kernel's rusage of it."""
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"train exited {proc.returncode}: {err.strip().splitlines()[-1:]}")
    return out, err, usage.ru_maxrss / 1024  # KiB on Linux


def _steady_rates(out: str) -> dict[str, float]:
    """run id -> the median img/s of its epochs after the first (the first holds warm-up and autotuning)."""
    by_run: dict[str, list[dict]] = {}
    for line in out.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            by_run.setdefault(row["run_id"], []).append(row)
    return {rid: statistics.median([r["images_per_second"] for r in rows[1:]] or
                                   [r["images_per_second"] for r in rows]) for rid, rows in by_run.items()}


def _run_together(args: list[str], seeds: list[int], results_dir: Path, env: dict) -> dict:
    """One process per seed, all at once."""
    start = time.perf_counter()
    procs = [subprocess.Popen(_train_command(args, [s], results_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for s in seeds]
    finished = [_finish(p) for p in procs]
    wall = time.perf_counter() - start
    rates = [next(iter(_steady_rates(out).values())) for out, _, _ in finished]
    return {"processes": len(seeds), "wall_seconds": wall, "aggregate_images_per_second": sum(rates),
            "per_process_images_per_second": rates, "peak_rss_mb": sum(rss for _, _, rss in finished)}


def _run_cell(args: list[str], seeds: list[int], results_dir: Path, env: dict) -> dict:
    """The same seeds as one cell in one process (`--cell-layout one-process`: on CUDA a cell is otherwise a process
    per run, which the K processes above already measure)."""
    start = time.perf_counter()
    proc = subprocess.Popen(_train_command(args + ["--cell-layout", "one-process"], seeds, results_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, _, rss = _finish(proc)
    rates = list(_steady_rates(out).values())
    return {"runs": len(seeds), "wall_seconds": time.perf_counter() - start,
            "aggregate_images_per_second": sum(rates), "per_run_images_per_second": rates, "peak_rss_mb": rss}


def _env(processes: int | None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if processes:
        env["OMP_NUM_THREADS"] = str(runtime.thread_budget(processes))
    return env


def bench_stop(train_args: list[str], seeds: list[int], repeats: int, log=print) -> dict:
    """How long a cell takes from SIGTERM to its exit: the current step finished, then every run's mid-epoch
    checkpoint and shard written, the leases released. What the Kubernetes grace period must cover. Each repeat
    starts the cell afresh, waits until every run has finished epoch 1 and is a moment into epoch 2, then signals."""
    stops = []
    with tempfile.TemporaryDirectory(prefix="resnet-study-bench-stop-") as tmp:
        for r in range(repeats):
            proc = subprocess.Popen(_train_command(train_args, seeds, Path(tmp) / f"r{r}"), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=_env(1))
            for _ in seeds:  # one line per run: epoch 1 stored
                if not proc.stdout.readline():
                    raise RuntimeError(f"train ended before epoch 1: {proc.stderr.read().strip()[-300:]}")
            time.sleep(1.0)
            start = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate()
            stops.append(time.perf_counter() - start)
            if proc.returncode != EXIT_SIGTERM:
                raise RuntimeError(f"train exited {proc.returncode}, not {EXIT_SIGTERM}: {err.strip()[-300:]}")
            log(f"repeat {r + 1}: SIGTERM to exit {stops[-1]:.2f} s ({err.count('checkpoint written')} runs "
                f"checkpointed)")
    return {"bench": "stop", "train_args": train_args, "seeds": seeds, "seconds": stops,
            "median_seconds": statistics.median(stops), "max_seconds": max(stops)}


def format_stop_report(res: dict) -> str:
    return (f"train {' '.join(res['train_args'])} --seeds {','.join(map(str, res['seeds']))}\n"
            f"SIGTERM to exit (step finished, every run checkpointed mid-epoch): median {res['median_seconds']:.2f} s, "
            f"max {res['max_seconds']:.2f} s over {len(res['seconds'])} repeats")


def bench_cells(train_args: list[str], runs: list[int], log=print) -> dict:
    """For each K: K separate processes at once (cores / K threads each), then one cell of the K runs."""
    levels = []
    with tempfile.TemporaryDirectory(prefix="resnet-study-bench-cells-") as tmp:
        for k in runs:
            level = {"runs": k, "processes": _run_together(train_args, list(range(k)), Path(tmp) / f"processes-{k}",
                                                           _env(k)),
                     "cell": _run_cell(train_args, list(range(k)), Path(tmp) / f"cell-{k}", _env(1))}
            levels.append(level)
            log(format_cell_level(level))
    return {"bench": "cells", "train_args": train_args, "levels": levels}


def format_cell_level(level: dict) -> str:
    p, c = level["processes"], level["cell"]
    return (f"{level['runs']} runs: {level['runs']} processes {p['wall_seconds']:.1f} s, "
            f"{p['aggregate_images_per_second']:.0f} img/s, {p['peak_rss_mb']:.0f} MB; one cell "
            f"{c['wall_seconds']:.1f} s, {c['aggregate_images_per_second']:.0f} img/s, {c['peak_rss_mb']:.0f} MB")


def format_cells_report(res: dict) -> str:
    lines = [f"train {' '.join(res['train_args'])}", "",
             f"{'runs':>4}  {'as':<9} {'wall s':>7} {'img/s in all':>13} {'img/s per run':>14} {'peak RSS MB':>12}"]
    for lv in res["levels"]:
        for name, key, per in (("processes", "processes", "per_process_images_per_second"),
                               ("one cell", "cell", "per_run_images_per_second")):
            m = lv[key]
            lines.append(f"{lv['runs']:>4}  {name:<9} {m['wall_seconds']:>7.1f} {m['aggregate_images_per_second']:>13.0f} "
                         f"{statistics.mean(m[per]):>14.0f} {m['peak_rss_mb']:>12.0f}")
    return "\n".join(lines)


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
