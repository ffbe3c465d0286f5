"""`resnet-study sweep list|run|local|status|render`: a sweep spec's cells as local processes or a Kubernetes Job.

    resnet-study sweep list jobs/demo.yaml                 # index -> cell
    resnet-study sweep local jobs/demo.yaml --parallel 2   # every cell not yet completed, 2 processes at a time
    resnet-study sweep plan jobs/seed-study.yaml --device cuda   # expected device-hours and wall-clock
    resnet-study sweep status jobs/demo.yaml               # completed / running / interrupted / failed / missing
    JOB_COMPLETION_INDEX=3 resnet-study sweep run jobs/seed-study.yaml   # one cell (what each Kubernetes pod runs)
    resnet-study sweep render jobs/seed-study.yaml > k8s/sweep.yaml
"""

from __future__ import annotations

import ctypes
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

from ..core import StudyError, store
from ..core.vocab import DEVICES, PRECISIONS, check_choice
from . import sweep as sw
from .options import IF_RUNNING, PROGRESS_MODES, Compile, DataDir, Device, Download, Format, IfRunning, Precision, \
    Progress, ResultsDir, StrictResume, Threads, check_option, print_rows, results_dir_or_default

app = typer.Typer(help="Sweep specs: expand a grid into cells and run them (local, compose, Kubernetes).",
                  no_args_is_help=True)
Spec = typer.Argument(..., help="A sweep spec (YAML), or the file name of a shipped one: demo.yaml, seed-study.yaml, "
                                "paper-cifar10.yaml.")
LOG_DIR = "sweep-logs"  # under the results dir: one log per cell that `sweep local` ran


@app.command("list")
def sweep_list(spec: str = Spec, fmt: str = Format):
    """Print each cell of the spec with its index (the Kubernetes JOB_COMPLETION_INDEX) and run id."""
    sweep = sw.load(spec)
    fields = sweep.varying()
    columns = ["index", *fields, "layers", "run_id"]
    rows = [(i, *(_show(getattr(c, f)) for f in fields), c.layers, c.run_id) for i, c in enumerate(sweep.cells)]
    print_rows(columns, rows, fmt, title=f"{sweep.name}: {len(sweep)} cells")


@app.command("run")
def sweep_run(
    spec: str = Spec,
    index: Optional[int] = typer.Option(None, help="Cell index [default: $JOB_COMPLETION_INDEX, set by an "
                                                   "Indexed Kubernetes Job]."),
    device: str = Device,
    precision: str = Precision,
    threads: Optional[int] = Threads,
    if_running: str = IfRunning,
    strict_resume: bool = StrictResume,
    compile: bool = Compile,
    download: bool = Download,
    progress: str = Progress,
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
):
    """Run one cell in this process: trains it, resumes it from its checkpoint, or reports it completed."""
    from ..core.train import RunOptions, run  # torch: imported only by the commands that train

    sweep = sw.load(spec)
    if index is None:
        env = os.environ.get("JOB_COMPLETION_INDEX")
        if env is None:
            raise StudyError("which cell? pass --index I (0.."f"{len(sweep) - 1}) or set JOB_COMPLETION_INDEX")
        try:
            index = int(env)
        except ValueError:
            raise StudyError(f"JOB_COMPLETION_INDEX must be an integer (got {env!r})") from None
    cfg = sweep.cell(index)
    check_option("--progress", progress, PROGRESS_MODES)
    check_option("--if-running", if_running, IF_RUNNING)
    rdir = results_dir_or_default(results_dir)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{sweep.name} cell {index}/{len(sweep)}: {cfg.run_id}")
    run(cfg, RunOptions(results_dir=rdir, data_dir=data_dir, device=device, download=download, progress=progress,
                        compile=compile, precision=precision, threads=threads, if_running=if_running,
                        strict_resume=strict_resume), log=log)


@app.command("local")
def sweep_local(
    spec: str = Spec,
    parallel: Optional[int] = typer.Option(None, "--parallel", "-p", min=1, show_default="1 on the CPU, "
                                           f"{sw.RUNS_PER_GPU} per GPU",
                                           help="Cells to run at a time. On a GPU several small runs share it "
                                                "best (docs/benchmarks.md)."),
    device: str = Device,
    precision: str = Precision,
    strict_resume: bool = StrictResume,
    compile: bool = Compile,
    download: bool = Download,
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
):
    """Run every cell that is not completed as `resnet-study sweep run` processes, P at a time; resumes
    interrupted cells, skips completed ones and ones running elsewhere. Logs: RESULTS/sweep-logs/."""
    check_choice("--device", "device", device, DEVICES)  # here, once, rather than in every cell process
    check_choice("--precision", "precision", precision, PRECISIONS)
    sweep = sw.load(spec)
    rdir = results_dir_or_default(results_dir)
    store.ensure_writable(rdir)
    parallel = parallel or sw.default_parallel(device)
    logs = rdir / LOG_DIR / sweep.name
    logs.mkdir(parents=True, exist_ok=True)
    todo, outcome = [], {}
    for i, cfg, state, _ in sw.states(sweep, rdir):
        if state == "completed":
            outcome[i] = "skipped: completed before"
        elif state == "running":
            outcome[i] = "skipped: running elsewhere"
        else:
            todo.append((i, state))
    print(f"{sweep.name}: {len(sweep)} cells; {len(todo)} to run ({_counts(s for _, s in todo)}), "
          f"{len(sweep) - len(todo)} skipped; {parallel} at a time; logs in {logs}", flush=True)

    base = _cli_command() + ["sweep", "run", str(sweep.path.resolve()), "--device", device, "--precision",
                             precision, "--progress", "json", "--results-dir", str(rdir)]
    base += ["--data-dir", str(data_dir)] if data_dir else []
    base += ["--compile"] if compile else []
    base += ["--strict-resume"] if strict_resume else []
    base += ["--download"] if download else []
    env = dict(os.environ)
    # P processes share the cores: without this each would start a thread per core.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // min(parallel, max(len(todo), 1)))))

    running: dict[int, tuple[subprocess.Popen, float]] = {}
    queue = list(todo)
    stop = _StopOnSignal()
    try:
        while (queue or running) and not stop.requested:
            while queue and len(running) < parallel:
                i, state = queue.pop(0)
                with open(logs / f"{i}.log", "ab") as f:
                    proc = subprocess.Popen(base + ["--index", str(i)], stdout=f, stderr=subprocess.STDOUT,
                                            env=env, preexec_fn=_die_with_parent)
                running[i] = (proc, time.monotonic())
                print(f"cell {i} {'resumed' if state != 'missing' else 'started'}: {sweep.cells[i].run_id}",
                      flush=True)
            for i, (proc, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[i]
                took = time.monotonic() - t0
                outcome[i] = "completed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
                print(f"cell {i} {outcome[i]} in {took:.0f} s" +
                      ("" if proc.returncode == 0 else f"; log: {logs / f'{i}.log'}"), flush=True)
                if proc.returncode:
                    _print_tail(logs / f"{i}.log")
            time.sleep(0.2)
    finally:
        for i, (proc, _) in running.items():
            proc.terminate()
        for i, (proc, _) in running.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            outcome[i] = "interrupted"
        stop.restore()

    rows = [(i, cfg.run_id, outcome.get(i, "not started"), state, _pct(row and row.test_error))
            for i, cfg, state, row in sw.states(sweep, rdir)]
    print_rows(["index", "run_id", "this run", "state", "test_error_pct"], rows, "table",
               title=f"{sweep.name}: {_counts(r[3] for r in rows)}")
    if stop.requested:
        raise StudyError(f"interrupted; run the same command again to resume the {sweep.name} sweep")
    if any(o.startswith("failed") for o in outcome.values()):
        raise typer.Exit(1)


@app.command("plan")
def sweep_plan(
    spec: str = Spec,
    device: str = typer.Option("auto", help="cpu, cuda or auto: the device the sweep will train on. cuda on a "
                                            "machine without one plans from any GPU's measured runs."),
    parallel: Optional[int] = typer.Option(None, "--parallel", "-p", min=1,
                                           help="Cells at a time [default: the spec's parallelism]."),
    bench: bool = typer.Option(True, "--bench/--no-bench", help="Benchmark depths with no measured run here."),
    fmt: str = Format,
    results_dir: Optional[Path] = ResultsDir,
):
    """Expected training time per cell and in all (device-hours, wall-clock at the parallelism), from measured
    runs in the store, else a short benchmark here, else "unknown". Saved for `sweep status` to compare."""
    from . import plan as pl

    check_choice("--device", "device", device, DEVICES)
    sweep = sw.load(spec)
    rdir = results_dir_or_default(results_dir)
    p = parallel or sweep.spec.parallelism
    res = pl.plan(sweep, rdir, device, p, bench, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    rows = [(c["index"], c["run_id"], c["epochs"], c["images"], None if c["images_per_second"] is None
             else round(c["images_per_second"]), c["source"], pl.duration(c["seconds"])) for c in res["cells"]]
    print_rows(["index", "run_id", "epochs", "images", "img/s", "throughput", "planned"], rows, fmt,
               title=f"{sweep.name} on {res['device']} in {res['precision']}")
    if fmt == "table":
        hours = None if res["device_seconds"] is None else res["device_seconds"] / 3600
        print(f"{len(sweep)} cells: {'unknown' if hours is None else f'{hours:.2f}'} device-hours; wall-clock with "
              f"{p} at a time: {pl.duration(res['wall_seconds'])}"
              + (f" ({res['unknown_cells']} cells of unknown throughput)" if res["unknown_cells"] else ""))
    if saved := pl.save(res, rdir):
        print(f"plan saved to {saved}", file=sys.stderr)


@app.command("status")
def sweep_status(spec: str = Spec, fmt: str = Format, results_dir: Optional[Path] = ResultsDir):
    """Each cell's state from the store (completed, running, interrupted (resumable), failed or missing), with its
    planned and actual training time when `sweep plan` was run."""
    from . import plan as pl

    sweep = sw.load(spec)
    rdir = results_dir_or_default(results_dir)
    planned = {c["run_id"]: c["seconds"] for c in (pl.load_saved(rdir, sweep.name) or {}).get("cells", [])}
    rows, both = [], []
    for i, cfg, state, row in sw.states(sweep, rdir):
        done = row.epochs_done if row else None
        actual = row.train_seconds if row and state == "completed" else None
        if actual is not None and planned.get(cfg.run_id) is not None:
            both.append((planned[cfg.run_id], actual))
        rows.append((i, cfg.run_id, state, f"{done}/{cfg.epochs}" if done is not None else f"-/{cfg.epochs}",
                     _pct(row and row.test_error), _seconds(planned.get(cfg.run_id)), _seconds(actual),
                     row and row.updated_at))
    print_rows(["index", "run_id", "state", "epochs", "test_error_pct", "planned_s", "actual_s", "updated_at"], rows,
               fmt, title=f"{sweep.name} in {rdir}: {_counts(r[2] for r in rows)}")
    if fmt == "table" and both:
        p, a = sum(x for x, _ in both), sum(y for _, y in both)
        print(f"training time of the {len(both)} completed cells with a plan: planned {pl.duration(p)}, actual "
              f"{pl.duration(a)} (actual / planned = {a / p:.2f})")


@app.command("render")
def sweep_render(
    spec: str = Spec,
    image: str = typer.Option(sw.IMAGE, help="Container image (or retag with kustomize `images:`)."),
    parallelism: Optional[int] = typer.Option(None, min=1, help="Pods at a time [default: the spec's]."),
    gpus: int = typer.Option(1, min=0, help="nvidia.com/gpu per pod (0: CPU only)."),
    cpu: str = typer.Option("4", help="CPU request per pod."),
    memory: str = typer.Option("8Gi", help="Memory request and limit per pod."),
    backoff_limit_per_index: int = typer.Option(3, min=0, help="Retries per cell (each resumes)."),
    queue: Optional[str] = typer.Option(None, help="Kueue LocalQueue to submit to: adds the kueue.x-k8s.io/queue-"
                                                   "name label and creates the Job suspended for Kueue to admit."),
    priority_class: Optional[str] = typer.Option(None, help="PriorityClass of the pods (priorityClassName)."),
):
    """Print the Kubernetes manifest for the spec: PVCs, the spec as a ConfigMap, an Indexed Job."""
    for option, value in (("--queue", queue), ("--priority-class", priority_class)):
        if value is not None and not re.fullmatch(r"[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?", value):
            raise StudyError(f"{option}: {value!r} is not a Kubernetes name (lower-case letters, digits, '-', '.')")
    sweep = sw.load(spec)
    sys.stdout.write(sw.render(sweep, image=image, parallelism=parallelism, gpus=gpus, cpu=cpu, memory=memory,
                               backoff_limit_per_index=backoff_limit_per_index, queue=queue,
                               priority_class=priority_class))


# ---------------------------------------------------------------- helpers


def _show(value):
    return ",".join(map(str, value)) if isinstance(value, list) else value


def _seconds(seconds) -> str:
    return "" if seconds is None else f"{seconds:.1f}"


def _pct(error) -> str:
    return "" if error is None else f"{100 * error:.2f}"


def _counts(states) -> str:
    c = Counter(states)
    return ", ".join(f"{k} {c[k]}" for k in ("completed", "running", "interrupted", "failed", "missing") if c[k]) \
        or "nothing"


def _cli_command() -> list[str]:
    """The `resnet-study` of this interpreter's environment."""
    script = Path(sys.executable).with_name("resnet-study")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "resnet_study.jobs"]


def _die_with_parent() -> None:
    """In the child: ask Linux for SIGTERM when `sweep local` dies, even by SIGKILL, so no cell runs orphaned."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to `sweep local`, which stops the cells itself


class _StopOnSignal:
    """SIGINT/SIGTERM ask the scheduling loop to stop; the cells are then terminated (and resume next time)."""

    def __init__(self):
        self.requested = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame) -> None:
        self.requested = True

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
