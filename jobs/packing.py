"""How a cell's runs are laid out in processes and on GPUs, said once: `train --seeds`, `sweep cell` (what each
Kubernetes pod runs) and `sweep local` all go through here.

- On a CPU a cell's runs train in one process (core/cell.py): each step already uses every core, and one copy of
  torch and of the data set serves every run (docs/benchmarks.md, "A cell against processes").
- On CUDA each run trains in a process of its own, all of them sharing the GPU: one process that interleaves K runs
  trains them at one run's speed (8 seeds: 10 900 img/s in all on an H200), K processes overlap on the GPU
  (8 processes: 41 700 img/s; docs/benchmarks.md, GPU). At most RUNS_PER_GPU of a cell's processes train at a time
  on each visible GPU; each child is given one GPU (CUDA_VISIBLE_DEVICES, round robin) and its share of the cell's
  CPU threads (`--threads`, else this process's budget, divided by the processes at a time).

`--cell-layout one-process | process-per-run` overrides `auto` (the rule above) on either device.

A cell split into processes: this process trains nothing and holds no lease. It skips completed runs, with
`--if-running exit` leaves the runs another live process holds (exit 3 if that is all of them, as core/cell.py
does), fetches the data set once (from a bucket; with --download), and starts `resnet-study train ... --seed S`
per remaining run with the same run options: each child holds its own run's lease, resumes it, checkpoints it,
writes its shard. SIGTERM / SIGINT are passed on to every child, which checkpoints its run and exits 143 / 130;
runs not yet started stay as they were. The children start in a session of their own (a terminal's Ctrl-C reaches
them once, through this process) and get SIGTERM if this process dies (PR_SET_PDEATHSIG). The exit code is the
children's, combined by `combine_exit_codes`.

Progress: with `--progress json` the children's JSON lines go straight to stdout; with a bar (a terminal), this
process draws one bar per run, advanced per epoch from the children's JSON lines, and prints their log lines above.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence, TypeVar

from ..core import EXIT_CODES, EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM, Stopped, runtime, store
from ..core.config import RunConfig, RunOptions
from ..core.lease import RunBusy, read_holder
from ..core.vocab import DEVICES, check_choice
from .options import experiment_argv, run_options_argv

# One ResNet-20 run leaves an H200 mostly idle; 8 processes filled it best (docs/benchmarks.md, GPU).
RUNS_PER_GPU = 8
# A batch action's severity when a cell's processes end differently: the worst one decides what the engine does.
SEVERITY = ("fail", "retry", "resume", "done")

T = TypeVar("T")


# ---------------------------------------------------------------- the layout


def device_type(device: str) -> str:
    """`cpu` or `cuda`: what `--device` resolves to on this machine (auto: cuda when torch sees a GPU)."""
    check_choice("--device", "device", device, DEVICES)
    if device != "auto":
        return device
    import torch  # only the commands that train or pack for a GPU load it

    return "cuda" if torch.cuda.is_available() else "cpu"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (indices or UUIDs)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    named = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return (named or [str(i) for i in range(count)])[:count]


def process_groups(runs: Sequence[T], device: str, layout: str = "auto") -> list[list[T]]:
    """How the runs of one cell map to processes on `device` (`cpu` or `cuda`): one list per process."""
    if not runs:
        return []
    per_run = layout == "process-per-run" or (layout == "auto" and device == "cuda")
    return [[r] for r in runs] if per_run else [list(runs)]


def runs_at_once(device: str, gpus: int) -> int:
    """How many of a cell's processes train at a time: RUNS_PER_GPU per GPU on CUDA; on a CPU every one."""
    return RUNS_PER_GPU * max(1, gpus) if device == "cuda" else sys.maxsize


def cells_at_once(runs_per_cell: int, gpus: int) -> int:
    """Cells of K runs (K processes each) to run at a time on `gpus` GPUs: RUNS_PER_GPU runs per GPU, at least one."""
    return max(1, RUNS_PER_GPU * gpus // max(1, runs_per_cell))


def default_parallel(device: str, runs_per_cell: int) -> int:
    """`sweep local`'s default cells at a time: on CUDA cells_at_once; on a CPU 1 (a cell already uses every core)."""
    if device == "cpu" or device_type(device) == "cpu":
        return 1
    return cells_at_once(runs_per_cell, len(visible_gpus()))


def combine_exit_codes(codes: Sequence[int]) -> int:
    """One exit code for processes that ended with `codes` (Popen's: -N for killed by signal N, read as 128 + N):
    the most severe batch action of core.EXIT_CODES (fail > retry > resume > done) and, within it, the first code
    of the table (so 3, every run left busy elsewhere, only when no process ended 0). A code the table does not
    know (137: SIGKILL) counts as EXIT_FAILED."""
    known = {e.code for e in EXIT_CODES}
    seen = {c if c in known else EXIT_FAILED for c in (128 - c if c < 0 else c for c in codes)}
    for action in SEVERITY:
        for e in EXIT_CODES:
            if e.batch == action and e.code in seen:
                return e.code
    return 0


# ---------------------------------------------------------------- training a cell


def train_cell(cfgs: list[RunConfig], opts: RunOptions, log=print) -> None:
    """Train one cell in the layout above: in this process (core.cell), or one child process per run."""
    from ..core.cell import train_cell as train_in_this_process  # torch: imported only by the commands that train

    device = device_type(opts.device) if len(cfgs) > 1 else opts.device
    groups = process_groups(cfgs, device, opts.cell_layout)
    if len(groups) <= 1:
        train_in_this_process(cfgs, opts, log=log)
        return
    code = _train_as_processes(cfgs, opts, device, log)
    if code in (EXIT_SIGTERM, EXIT_SIGINT):
        raise Stopped(f"stopped on {'SIGTERM' if code == EXIT_SIGTERM else 'SIGINT'}: every run started was "
                      f"checkpointed; run the same command again to resume", code)
    if code:
        import typer

        raise typer.Exit(code)


def cli_command() -> list[str]:
    """The `resnet-study` of this interpreter's environment."""
    script = Path(sys.executable).with_name("resnet-study")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "resnet_study.jobs"]


def die_with_parent() -> None:
    """In a child: ask Linux for SIGTERM when its parent dies, even by SIGKILL, so no run trains orphaned."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _train_as_processes(cfgs: list[RunConfig], opts: RunOptions, device: str, log) -> int:
    from ..core import data  # torch, like core.cell: only the commands that train load it
    from ..core.cell import completed

    rdir = store.results_location(opts.results_dir)
    store.ensure_writable(rdir)
    todo = [cfg for cfg in cfgs if not completed(rdir, cfg, log)]
    if opts.if_running == "exit":
        todo = _leave_held(todo, rdir, log)
    if not todo:
        return 0
    # Fetched once, here, rather than by every child at once into the same folder: a bucket's data set, --download.
    data_dir = data.local_data_dir(todo[0].dataset, opts.data_dir)
    if opts.download:
        data.load(todo[0].dataset, data_dir, download=True)
    gpus = visible_gpus() if device == "cuda" else []
    at_once = min(len(todo), runs_at_once(device, len(gpus)))
    threads = max(1, opts.threads // at_once) if opts.threads else runtime.thread_budget(at_once)
    bar = opts.progress == "bar" or (opts.progress == "auto" and sys.stderr.isatty())
    child = opts.model_copy(update={"device": device, "threads": threads, "cell_layout": "one-process",
                                    "progress": "json"})
    log(f"a cell of {len(todo)} runs on {device}: a process each, {at_once} at a time, CPU threads: {threads} each")
    relay = _BarRelay(todo, rdir) if bar else None
    codes: dict[str, int] = {}
    queue = list(enumerate(todo))
    running: dict[str, subprocess.Popen] = {}
    with _Forward(running) as forward:
        try:
            while queue or running:
                while queue and len(running) < at_once and not forward.requested:
                    k, cfg = queue.pop(0)
                    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": gpus[k % len(gpus)]} if gpus else {})}
                    argv = [*cli_command(), "train", *experiment_argv(cfg), *run_options_argv(child)]
                    pipe = subprocess.PIPE if relay else None
                    proc = subprocess.Popen(argv, env=env, stdout=pipe, stderr=pipe, text=True,
                                            start_new_session=True, preexec_fn=die_with_parent)
                    running[cfg.run_id] = proc
                    if relay:
                        relay.follow(cfg.run_id, proc)
                    log(f"{cfg.run_id}: seed {cfg.seed} in process {proc.pid}"
                        + (f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else ""))
                if forward.requested:
                    queue.clear()  # not started: nothing to stop, and the same command starts them
                for run_id, proc in list(running.items()):
                    if proc.poll() is not None:
                        if relay:
                            relay.join(run_id)
                        codes[run_id] = proc.returncode
                        del running[run_id]
                        log(f"{run_id}: its process ended with exit code {proc.returncode}")
                time.sleep(0.1)
        finally:
            if relay:
                relay.close()
    ended = list(codes.values()) + ([128 + forward.requested] if forward.requested else [])  # stopped: resumable
    code = combine_exit_codes(ended)
    if code:
        log(f"the cell's processes ended with exit codes {', '.join(map(str, codes.values())) or 'none'}: exit "
            f"code {code}")
    return code


def _leave_held(todo: list[RunConfig], rdir, log) -> list[RunConfig]:
    """--if-running exit: the runs another live process holds are left to it; exit 3 when that is every run."""
    held = {cfg.run_id: h for cfg in todo
            if (h := read_holder(store.run_storage(rdir, cfg.run_id))) is not None and h.alive()}
    if held and len(held) == len(todo):
        what = "; ".join(f"{rid} is being trained by {h.describe()}" for rid, h in held.items())
        raise RunBusy(f"every run asked for is being trained elsewhere: {what}; not waiting (--if-running exit); run "
                      f"the same command later, or with --if-running wait")
    for rid, h in held.items():
        log(f"{rid} is being trained by {h.describe()}; left to it (--if-running exit)")
    return [cfg for cfg in todo if cfg.run_id not in held]


class _Forward:
    """SIGTERM / SIGINT, while the children run: passed on to every running child, and no new child starts."""

    def __init__(self, running: dict[str, subprocess.Popen]):
        self.running, self.requested, self._old = running, None, {}

    def _handle(self, signum, frame) -> None:
        self.requested = signum
        for proc in list(self.running.values()):
            if proc.poll() is None:
                proc.send_signal(signum)

    def __enter__(self) -> "_Forward":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


class _BarRelay:
    """A terminal's progress for a cell split into processes: one bar per run, advanced per epoch from its child's
    JSON lines; the children's log lines printed above the bars."""

    def __init__(self, cfgs: list[RunConfig], rdir):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[info]}"), transient=False)
        self.bar.start()
        self.tasks, self.threads = {}, {}
        for cfg in cfgs:
            shard = store.read_shard(rdir, cfg.run_id)
            self.tasks[cfg.run_id] = self.bar.add_task(cfg.run_id, total=cfg.epochs, info="",
                                                       completed=len(shard.epochs) if shard else 0)

    def follow(self, run_id: str, proc: subprocess.Popen) -> None:
        self.threads[run_id] = [threading.Thread(target=self._rows, args=(run_id, proc.stdout), daemon=True),
                                threading.Thread(target=self._lines, args=(proc.stderr,), daemon=True)]
        for t in self.threads[run_id]:
            t.start()

    def _rows(self, run_id: str, stream) -> None:
        for line in stream:
            try:
                row = json.loads(line)
            except ValueError:
                self.bar.console.print(line.rstrip(), markup=False, highlight=False)
                continue
            self.bar.update(self.tasks[run_id], completed=row["epoch"],
                            info=f"epoch {row['epoch']}: train {row['train_error']:.2%} test {row['test_error']:.2%} "
                                 f"{row['images_per_second']:.0f} img/s")

    def _lines(self, stream) -> None:
        for line in stream:
            self.bar.console.print(line.rstrip(), markup=False, highlight=False)

    def join(self, run_id: str) -> None:
        for t in self.threads.get(run_id, []):
            t.join()

    def close(self) -> None:
        self.bar.stop()
