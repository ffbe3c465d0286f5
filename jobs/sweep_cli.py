"""`resnet-study sweep list|run|local|plan|status|render`: a sweep spec's cells as local processes or a Kubernetes Job.

A cell is all seeds of one experiment, each run with its own run id; its runs train in one process on a CPU and in a
process each on CUDA (jobs/packing.py).

    resnet-study sweep list jobs/demo.yaml                 # index -> cell: its seeds and run ids
    resnet-study sweep local jobs/demo.yaml --parallel 2   # every cell not yet completed, 2 processes at a time
    resnet-study sweep plan jobs/seed-study.yaml --device cuda   # expected device-hours and wall-clock
    resnet-study sweep status jobs/demo.yaml               # each cell and its runs: completed / running / ...
    JOB_COMPLETION_INDEX=3 resnet-study sweep cell jobs/seed-study.yaml   # one cell (what each Kubernetes pod runs)
    resnet-study sweep render jobs/seed-study.yaml > k8s/sweep.yaml
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import typer

from ..core import EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM, Stopped, StudyError, runtime, store
from ..core.storage import Storage, local_cache, open_storage
from ..core.vocab import DEVICES, check_choice
from . import kubernetes, packing, slurm, sweep as sw
from .state import CELL_STATES, states
from .options import Format, ResultsDir, print_rows, run_option_parameters, \
    run_options_argv, run_options_from, with_parameters

app = typer.Typer(help="Sweep specs: expand a grid into cells (all seeds of one experiment each) and run them "
                       "(local, compose, Kubernetes).", no_args_is_help=True)
Spec = typer.Argument(..., help="A sweep spec (YAML), or the file name of a shipped one: demo.yaml, seed-study.yaml, "
                                "paper-cifar10.yaml.")
LOG_DIR = "sweep-logs"  # under the results dir: one log per cell that `sweep local` ran
ENGINES = ("kubernetes", "slurm")
# After SIGTERM a cell finishes its step and checkpoints every run; a cell that takes longer is killed (it then
# resumes from its last checkpoint). The same margin as the Kubernetes grace period (GRACE_SECONDS, jobs/sweep.py).
STOP_WAIT_S = sw.GRACE_SECONDS


@app.command("list")
def sweep_list(spec: str = Spec, fmt: str = Format):
    """Print each cell of the spec with its index (the Kubernetes JOB_COMPLETION_INDEX), its seeds and the run id
    of each seed."""
    sweep = sw.load(spec)
    fields = sweep.varying()
    columns = ["index", *fields, "layers", "seeds", "run_ids"]
    joiner = "\n" if fmt == "table" else " "
    rows = [(c.index, *(_show(getattr(c.config, f)) for f in fields), c.config.layers,
             c.seeds if fmt == "json" else ",".join(map(str, c.seeds)),
             c.run_ids if fmt == "json" else joiner.join(c.run_ids)) for c in sweep.cells]
    print_rows(columns, rows, fmt, title=f"{sweep.name}: {len(sweep)} cells x {len(sweep.spec.seed_list)} seeds = "
                                         f"{len(sweep.runs)} runs")


def sweep_cell(spec: str = Spec,
              index: Optional[int] = typer.Option(None, help="Cell index (default: $JOB_COMPLETION_INDEX, set by an "
                                                             "Indexed Kubernetes Job)."),
              **values):
    """Train one cell: all its seeds, each resumed from its checkpoint or reported completed (on a CPU in this
    process, on CUDA a child process per run: jobs/packing.py)."""
    opts = run_options_from(values)
    sweep = sw.load(spec)
    index = _index(sweep, index)
    cell = sweep.cell(index)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{sweep.name} cell {index}/{len(sweep)}: seeds {','.join(map(str, cell.seeds))}: {' '.join(cell.run_ids)}")
    packing.train_cell(list(cell.runs), opts, log=log)


_sweep_cell = with_parameters(sweep_cell, run_option_parameters())
app.command("cell")(_sweep_cell)
# The name that Jobs rendered before 2026-12-04 call; hidden, so `sweep cell` is the one that help shows.
app.command("run", hidden=True)(_sweep_cell)


def _index(sweep: sw.Sweep, index: Optional[int]) -> int:
    """--index, else the Indexed Job's JOB_COMPLETION_INDEX, refused when the Job was rendered with one run per
    index (resnet-study 0.1: its indices mean other experiments)."""
    if index is not None:
        return index
    env = os.environ.get("JOB_COMPLETION_INDEX")
    if env is None:
        raise StudyError(f"which cell? pass --index I (0..{len(sweep) - 1}) or set JOB_COMPLETION_INDEX")
    if os.environ.get(sw.INDEX_MODE_ENV) != sw.INDEX_MODE:
        raise StudyError(f"this Job was rendered by resnet-study 0.1 with one run per index (no "
                         f"{sw.INDEX_MODE_ENV}={sw.INDEX_MODE}); its indices are not cells: render it again with "
                         f"`resnet-study sweep render {sweep.path.name}` and apply the new Job")
    try:
        return int(env)
    except ValueError:
        raise StudyError(f"JOB_COMPLETION_INDEX must be an integer (got {env!r})") from None


def sweep_local(spec: str = Spec,
                parallel: Optional[int] = typer.Option(None, "--parallel", "-p", min=1,
                                                       show_default=f"1 on the CPU; on a GPU "
                                                                    f"{packing.RUNS_PER_GPU} runs per GPU",
                                                       help="Cells to run at a time, each in its own process."),
                **values):
    """Run every cell that is not completed as `resnet-study sweep cell` processes, P at a time: each trains its
    seeds (jobs/packing.py: together on a CPU, a process each on CUDA), resumes interrupted runs, skips completed
    ones and ones running elsewhere. Logs: RESULTS/sweep-logs/."""
    opts = run_options_from(values, progress="json")
    sweep = sw.load(spec)
    results = store.results_location(opts.results_dir)
    store.ensure_writable(results)
    parallel = parallel or packing.default_parallel(opts.device, len(sweep.spec.seed_list))
    logs = log_folder(results, sweep.name)
    logs.mkdir(parents=True, exist_ok=True)
    todo, outcome = [], {}
    for cell, state, _ in states(sweep, results):
        if state == "completed":
            outcome[cell.index] = "skipped: completed before"
        elif state == "running":
            outcome[cell.index] = "skipped: running elsewhere"
        else:
            todo.append((cell.index, state))
    print(f"{sweep.name}: {len(sweep)} cells ({len(sweep.runs)} runs); {len(todo)} to run "
          f"({_counts(s for _, s in todo)}), {len(sweep) - len(todo)} skipped; {parallel} at a time; logs in {logs}",
          flush=True)
    threads = threads_per_cell(opts, parallel, len(todo))
    base = packing.cli_command() + ["sweep", "cell", str(sweep.path.resolve()),
                             *run_options_argv(opts.model_copy(update={"threads": threads}))]
    stop = _StopOnSignal()
    try:
        _schedule(sweep, todo, parallel, base, logs, outcome, stop)
    finally:
        stop.restore()
        if not results.is_local:  # the logs go beside the results, each one PUT
            for i in outcome:
                if (logs / f"{i}.log").is_file():
                    results.upload(f"{LOG_DIR}/{sweep.name}/{i}.log", logs / f"{i}.log")
    _print_states(sweep, results, outcome)
    if stop.requested:  # every cell it ran was stopped cleanly (or killed after STOP_WAIT_S): all resumable
        raise Stopped(f"stopped on {signal.Signals(stop.requested).name}; run the same command again to resume the "
                      f"{sweep.name} sweep", EXIT_SIGTERM if stop.requested == signal.SIGTERM else EXIT_SIGINT)
    if any(o.startswith("failed") for o in outcome.values()):
        raise typer.Exit(EXIT_FAILED)


app.command("local")(with_parameters(sweep_local, run_option_parameters(exclude=("progress",))))


def log_folder(results: Storage, sweep_name: str) -> Path:
    """Where `sweep local` writes each cell's log: RESULTS/sweep-logs/SWEEP/ on a disk; for a bucket this machine's
    cache (core.storage.local_cache), copied to the bucket's sweep-logs/SWEEP/ when the cells end."""
    base = results.root if results.is_local else local_cache(results, "s3")
    return base / LOG_DIR / sweep_name


def threads_per_cell(opts, parallel: int, cells: int) -> int:
    """--threads, else this process's CPU budget shared by the cells that run at once (core.runtime)."""
    return opts.threads or runtime.thread_budget(min(parallel, max(cells, 1)))


def _schedule(sweep, todo, parallel, base, logs, outcome, stop) -> None:
    """Start the cells of `todo`, `parallel` at a time, until all have ended or a stop is asked for (then SIGTERM
    the running cells, which checkpoint every run, and wait STOP_WAIT_S for them)."""
    running: dict[int, tuple[subprocess.Popen, float]] = {}
    queue = list(todo)
    try:
        while (queue or running) and not stop.requested:
            while queue and len(running) < parallel:
                i, state = queue.pop(0)
                with open(logs / f"{i}.log", "ab") as f:
                    proc = subprocess.Popen(base + ["--index", str(i)], stdout=f, stderr=subprocess.STDOUT,
                                            preexec_fn=_die_with_parent)
                running[i] = (proc, time.monotonic())
                print(f"cell {i} {'resumed' if state != 'missing' else 'started'}: seeds "
                      f"{','.join(map(str, sweep.cells[i].seeds))}", flush=True)
            for i, (proc, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[i]
                outcome[i] = "completed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
                print(f"cell {i} {outcome[i]} in {time.monotonic() - t0:.0f} s" +
                      ("" if proc.returncode == 0 else f"; log: {logs / f'{i}.log'}"), flush=True)
                if proc.returncode:
                    _print_tail(logs / f"{i}.log")
            time.sleep(0.2)
    finally:
        for proc, _ in running.values():
            proc.terminate()
        for i, (proc, _) in running.items():
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            outcome[i] = "interrupted"


def _print_states(sweep, results, outcome) -> None:
    rows = []
    for cell, state, runs in states(sweep, results):
        done = [r for _, s, r in runs if s == "completed"]
        rows.append((cell.index, ",".join(map(str, cell.seeds)), outcome.get(cell.index, "not started"), state,
                     f"{len(done)}/{len(runs)}", _pct_mean([r.test_error for r in done])))
    print_rows(["index", "seeds", "this call", "state", "runs completed", "test_error_pct (mean)"], rows, "table",
               title=f"{sweep.name}: {_counts(r[3] for r in rows)}")


@app.command("plan")
def sweep_plan(
    spec: str = Spec,
    device: str = typer.Option("auto", help="cpu, cuda or auto: the device the sweep will train on. cuda on a "
                                            "machine without one plans from any GPU's measured runs."),
    parallel: Optional[int] = typer.Option(None, "--parallel", "-p", min=1,
                                           help="Cells at a time (default: the spec's parallelism)."),
    bench: bool = typer.Option(True, "--bench/--no-bench", help="Benchmark depths with no measured run here."),
    fmt: str = Format,
    results_dir: Optional[str] = ResultsDir,
):
    """Expected training time per cell (all its seeds, in one process) and in all (device-hours, wall-clock at the
    parallelism), from measured runs in the store, else a short benchmark here, else "unknown". Saved for `sweep
    status` to compare."""
    from . import plan as pl

    check_choice("--device", "device", device, DEVICES)
    sweep = sw.load(spec)
    results = store.results_location(results_dir)
    p = parallel or sweep.spec.parallelism
    res = pl.plan(sweep, results, device, p, bench, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    rows = [(c["index"], ",".join(map(str, c["seeds"])), c["layers"], c["epochs"], c["images"],
             None if c["images_per_second"] is None else round(c["images_per_second"]), c["source"],
             pl.duration(c["seconds"])) for c in res["cells"]]
    print_rows(["index", "seeds", "layers", "epochs", "images", "img/s", "throughput", "planned"], rows, fmt,
               title=f"{sweep.name} on {res['device']} in {res['precision']}")
    if fmt == "table":
        hours = None if res["device_seconds"] is None else res["device_seconds"] / 3600
        print(f"{len(sweep)} cells ({len(sweep.runs)} runs): {'unknown' if hours is None else f'{hours:.2f}'} device-hours; wall-clock with "
              f"{p} at a time: {pl.duration(res['wall_seconds'])}"
              + (f" ({res['unknown_cells']} cells of unknown throughput)" if res["unknown_cells"] else ""))
    if saved := pl.save(res, results):
        print(f"plan saved to {saved}", file=sys.stderr)


@app.command("status")
def sweep_status(spec: str = Spec, fmt: str = Format, results_dir: Optional[str] = ResultsDir):
    """Each cell's state (completed, running, partial, interrupted (resumable), failed or missing) and each of its
    runs': epochs done, test error, why it failed or stopped, and its planned and actual training time when
    `sweep plan` was run."""
    from . import plan as pl

    sweep = sw.load(spec)
    results = store.results_location(results_dir)
    planned = {r["run_id"]: r["seconds"] for c in (pl.load_saved(results, sweep.name) or {}).get("cells", [])
               for r in c.get("runs", [])}
    cells, both = [], []
    job = slurm.load_job(results, sweep.name)  # submitted by `sweep submit --engine slurm`
    tasks = slurm.task_states(job["job_id"]) if job else {}
    for cell, state, runs in states(sweep, results):
        out = []
        for cfg, run_state, row in runs:
            actual = row.train_seconds if row and run_state == "completed" else None
            if actual is not None and planned.get(cfg.run_id) is not None:
                both.append((planned[cfg.run_id], actual))
            out.append({"seed": cfg.seed, "run_id": cfg.run_id, "state": run_state,
                        "epochs": f"{row.epochs_done if row else '-'}/{cfg.epochs}",
                        "test_error_pct": _pct(row and row.test_error), "planned_s": _seconds(planned.get(cfg.run_id)),
                        "actual_s": _seconds(actual), "updated_at": row and row.updated_at,
                        "reason": (row.error_message or "") if row and run_state in ("failed", "interrupted") else ""})
        cells.append({"index": cell.index, "state": state, "runs": out})
        if job:
            cells[-1]["slurm"] = _slurm_state(tasks, cell.index, job)
    title = (f"{sweep.name} in {results}: cells {_counts(c['state'] for c in cells)}; runs "
             f"{_counts(r['state'] for c in cells for r in c['runs'])}")
    if job:
        title += f"; Slurm job {job['job_id']}"
        if isinstance(tasks, str):
            print(f"Slurm job {job['job_id']}: {tasks}", file=sys.stderr)
    if fmt == "json":
        import json

        print(json.dumps(cells, default=str, indent=1))
    else:
        columns = ["index", "cell", *(["slurm"] if job else []), "seed", "run_id", "state", "epochs",
                   "test_error_pct", "planned_s", "actual_s", "updated_at", "reason"]
        rows = [(c["index"] if k == 0 else "", c["state"] if k == 0 else "",
                 *([c["slurm"] if k == 0 else ""] if job else []), *r.values())
                for c in cells for k, r in enumerate(c["runs"])]
        print_rows(columns, rows, fmt, title=title)
    if fmt == "table" and both:
        p, a = sum(x for x, _ in both), sum(y for _, y in both)
        print(f"training time of the {len(both)} completed runs with a plan: planned {pl.duration(p)}, actual "
              f"{pl.duration(a)} (actual / planned = {a / p:.2f})")


@app.command("render")
def sweep_render(
    spec: str = Spec,
    image: str = typer.Option(sw.IMAGE, help="Container image (or retag with kustomize `images:`)."),
    parallelism: Optional[int] = typer.Option(None, min=1, help="Pods (cells) at a time (default: the spec's)."),
    gpus: int = typer.Option(1, min=0, help="nvidia.com/gpu per pod: the cell's seeds share it (0: CPU only)."),
    cpu: str = typer.Option("4", help="CPU request per pod."),
    memory: Optional[str] = typer.Option(None, show_default="3Gi per seed (a process each on a GPU); with --gpus 0, "
                                                             "2Gi + 1Gi per seed",
                                         help="Memory request and limit per pod (a cell: all its seeds)."),
    backoff_limit_per_index: int = typer.Option(3, min=0, help="Retries per cell (each resumes every run)."),
    queue: Optional[str] = typer.Option(None, help="Kueue LocalQueue to submit to: adds the kueue.x-k8s.io/queue-"
                                                   "name label and creates the Job suspended for Kueue to admit."),
    min_parallelism: Optional[int] = typer.Option(None, min=1, help="With --queue: let Kueue admit the Job with as "
                                                                    "few as this many pods at a time (partial "
                                                                    "admission), e.g. on fewer free GPUs."),
    priority_class: Optional[str] = typer.Option(None, help="PriorityClass of the pods (priorityClassName)."),
    results_dir: Optional[str] = typer.Option(None, "--results-dir", show_default="the PVC resnet-study-results",
                                              help="s3://bucket/prefix: results in a bucket, no results volume; "
                                                   "adds the results service over the bucket."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", show_default="the PVC resnet-study-data",
                                           help="s3://bucket/prefix filled by `resnet-study data push`: no data "
                                                "volume."),
    s3_secret: str = typer.Option(kubernetes.S3_SECRET, help="Secret holding the bucket's AWS_* variables (with "
                                                     "--results-dir / --data-dir s3://)."),
    engine: str = typer.Option("kubernetes", help="kubernetes (a manifest) or slurm (an sbatch job array)."),
    time: Optional[str] = typer.Option(None, "--time", show_default="from the saved `sweep plan`",
                                       help="Slurm: --time of each task (minutes, HH:MM:SS, D-HH:MM:SS)."),
    partition: Optional[str] = typer.Option(None, help="Slurm: the partition."),
    account: Optional[str] = typer.Option(None, help="Slurm: the account charged."),
    qos: Optional[str] = typer.Option(None, help="Slurm: the QOS."),
    container: Optional[str] = typer.Option(None, help="Slurm: run each cell in this image (docker name, "
                                                       "docker://..., or a .sif); default: the installed tool."),
    container_runtime: str = typer.Option("apptainer", help="Slurm, with --container: apptainer (apptainer exec "
                                                            "--nv) or pyxis (srun --container-image)."),
    max_requeues: int = typer.Option(slurm.MAX_REQUEUES, min=0, help="Slurm: requeues per cell (time limit, "
                                                                     "retry-later, crash)."),
    signal_before: int = typer.Option(sw.GRACE_SECONDS, min=1, help="Slurm: seconds before the time limit the cell "
                                                                    "checkpoints and the task requeues itself."),
    setup: Optional[str] = typer.Option(None, help="Slurm: a shell line run first, e.g. 'source ~/rs/bin/activate'."),
    log_dir: Optional[str] = typer.Option(None, show_default="RESULTS/sweep-logs/NAME",
                                          help="Slurm: the folder of the tasks' logs (on the shared filesystem)."),
):
    """Print the Kubernetes manifest for the spec (PVCs or buckets, the spec as a ConfigMap, an Indexed Job with one
    index, one pod, per cell), or with --engine slurm one sbatch script (a job array, one task per cell)."""
    if engine == "slurm":
        sys.stdout.write(_slurm_render(**locals())[0])
        return
    check_choice("--engine", "engine", engine, ENGINES)
    _only_for("slurm", engine, time=time, partition=partition, account=account, qos=qos, container=container,
              container_runtime=container_runtime != "apptainer", max_requeues=max_requeues != slurm.MAX_REQUEUES,
              signal_before=signal_before != sw.GRACE_SECONDS, setup=setup, log_dir=log_dir)
    for option, url in (("--results-dir", results_dir), ("--data-dir", data_dir)):
        if url is not None and open_storage(url).is_local:
            raise StudyError(f"{option}: a cluster's pods share a bucket, not this machine's {url!r}; give "
                             f"s3://bucket/prefix, or leave it out for the volume")
    for option, value in (("--queue", queue), ("--priority-class", priority_class), ("--s3-secret", s3_secret)):
        if value is not None and not re.fullmatch(r"[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?", value):
            raise StudyError(f"{option}: {value!r} is not a Kubernetes name (lower-case letters, digits, '-', '.')")
    if min_parallelism is not None and queue is None:
        raise StudyError("--min-parallelism is Kueue's partial admission: give it with --queue NAME")
    sweep = sw.load(spec)
    sys.stdout.write(kubernetes.render(sweep, kubernetes.RenderOptions(
        image=image, parallelism=parallelism, gpus=gpus, cpu=cpu, memory=memory,
        backoff_limit_per_index=backoff_limit_per_index, queue=queue, min_parallelism=min_parallelism,
        priority_class=priority_class, results_dir=results_dir and str(open_storage(results_dir)),
        data_dir=data_dir and str(open_storage(data_dir)), s3_secret=s3_secret)))


def _only_for(engine: str, given: str, **options) -> None:
    """Refuse the other engine's options: one line naming the first."""
    for name, value in options.items():
        if value not in (None, False):
            raise StudyError(f"--{name.replace('_', '-')} is for --engine {engine}, not {given}; drop it or render "
                             f"with --engine {engine}")


def _slurm_render(spec, image, parallelism, gpus, cpu, memory, backoff_limit_per_index, queue, min_parallelism,
                  priority_class, results_dir, data_dir, s3_secret, engine, time, partition, account, qos, container,
                  container_runtime, max_requeues, signal_before, setup, log_dir, **_):
    """The sbatch script for `sweep render|submit --engine slurm`, its sweep and its results store."""
    _only_for("kubernetes", engine, image=image != sw.IMAGE,
              backoff_limit_per_index=backoff_limit_per_index != 3, queue=queue, min_parallelism=min_parallelism,
              priority_class=priority_class, s3_secret=s3_secret != kubernetes.S3_SECRET)
    check_choice("--container-runtime", "container runtime", container_runtime, slurm.CONTAINER_RUNTIMES)
    sweep = sw.load(spec)
    results = store.results_location(results_dir)  # a folder on the shared filesystem, or a bucket
    data = None if data_dir is None else (str(open_storage(data_dir)) if "://" in data_dir
                                          else str(Path(data_dir).resolve()))
    script = slurm.render(sweep, kubernetes.RenderOptions(parallelism=parallelism, gpus=gpus, cpu=cpu,
                                                          memory=memory, data_dir=data),
                          slurm.SlurmOptions(time=time, partition=partition, account=account, qos=qos,
                                             container=container, container_runtime=container_runtime,
                                             max_requeues=max_requeues, signal_before=signal_before, setup=setup,
                                             log_dir=log_dir, plan=_saved_plan(results, sweep.name)), results)
    return script, sweep, results


def _saved_plan(results: Storage, name: str) -> dict | None:
    """The saved `sweep plan`, where this machine can read the store (a bucket may need credentials it lacks)."""
    from . import plan as pl

    try:
        return pl.load_saved(results, name)
    except StudyError:
        return None


def sweep_submit(spec: str = Spec,
                 engine: str = typer.Option("slurm", help="slurm (for Kubernetes, `kubectl apply -f` the render)."),
                 wait: bool = typer.Option(False, "--wait", help="Wait until every task has ended; exit 1 unless "
                                                                 "all completed."),
                 **values):
    """Submit the spec to Slurm (sbatch of `sweep render --engine slurm`, the same options) and keep the job id
    beside the plan in the results store, for `sweep status`."""
    if engine != "slurm":
        raise StudyError(f"--engine {engine}: `sweep submit` submits to Slurm; for Kubernetes `kubectl apply -f` "
                         f"the output of `sweep render`")
    script, sweep, results = _slurm_render(spec=spec, engine=engine, **values)
    store.ensure_writable(results)
    logs = Path(next(line for line in script.splitlines() if line.startswith("#SBATCH --output="))
                .removeprefix("#SBATCH --output=")).parent
    logs.mkdir(parents=True, exist_ok=True)  # sbatch does not create it: a task with no log folder fails
    job_id = slurm.sbatch(script)
    saved = slurm.save_job(results, {"spec": sweep.name, "engine": "slurm", "job_id": job_id, "cells": len(sweep),
                                     "logs": str(logs), "submitted_at": _now()})
    print(f"{sweep.name}: submitted job {job_id} ({len(sweep)} array tasks, one per cell); logs in {logs}; job id "
          f"saved to {saved}; watch with `resnet-study sweep status {sweep.path.name}`", flush=True)
    if not wait:
        return
    while slurm.active(job_id):
        time.sleep(2)
    tasks = slurm.task_states(job_id)
    if isinstance(tasks, str):
        raise StudyError(tasks)
    for i, t in sorted(tasks.items()):
        print(f"cell {i}: {t.describe()}")
    if any(t.state != "COMPLETED" for t in tasks.values()):
        raise typer.Exit(EXIT_FAILED)


def _submit_parameters() -> list:
    import inspect

    return [p for name, p in inspect.signature(sweep_render).parameters.items() if name not in ("spec", "engine")]


app.command("submit")(with_parameters(sweep_submit, _submit_parameters()))


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _slurm_state(tasks, index: int, job: dict) -> str:
    """A cell's Slurm task as `sweep status` shows it; for a failed one, the last error line of its log (why)."""
    if isinstance(tasks, str) or index not in tasks:
        return "unknown"
    task = tasks[index]
    shown = task.describe()
    if task.state in ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
        try:
            lines = (Path(job["logs"]) / f"{index}.log").read_text(errors="replace").splitlines()
        except (OSError, KeyError):
            lines = []
        errors = [line for line in lines if line.startswith("error: ")]
        if errors:
            shown += f": {errors[-1].removeprefix('error: ')}"
    return shown


# ---------------------------------------------------------------- helpers


def _show(value):
    return ",".join(map(str, value)) if isinstance(value, list) else value


def _seconds(seconds) -> str:
    return "" if seconds is None else f"{seconds:.1f}"


def _pct(error) -> str:
    return "" if error is None else f"{100 * error:.2f}"


def _pct_mean(errors: list[float]) -> str:
    return _pct(sum(errors) / len(errors)) if errors else ""


def _counts(states) -> str:
    c = Counter(states)
    return ", ".join(f"{k} {c[k]}" for k in CELL_STATES if c[k]) or "nothing"


def _die_with_parent() -> None:
    """In the child: SIGTERM when `sweep local` dies, even by SIGKILL, so no cell runs orphaned."""
    packing.die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to `sweep local`, which stops the cells itself


class _StopOnSignal:
    """SIGINT/SIGTERM ask the scheduling loop to stop; the cells are then terminated (and resume next time).
    `requested`: the first signal's number, 0 while none came."""

    def __init__(self):
        self.requested = 0
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame) -> None:
        self.requested = self.requested or signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _print_tail(path: Path, lines: int = 5) -> None:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    for line in tail:
        print(f"    {line}", file=sys.stderr)
