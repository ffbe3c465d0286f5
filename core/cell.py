"""A cell: all seeds of one experiment, trained in one process on one device from one copy of the data set.

    resnet-study train --n 3 --dataset fashion-mnist --seeds 0-2   # 3 runs of one experiment, one process
    resnet-study train --n 3 --dataset fashion-mnist --seed 1      # a cell of one run

Each run of a cell stays exactly the run `train --seed s` makes: the same run id, its own shard, checkpoint, lease
and provenance, its own initial weights, data order, augmentation, validation split and normalisation statistics
(core.train.Run); the store, the tables and the service see ordinary runs. What the runs share is the raw uint8
images (one copy in memory, on the device) and the process (one torch, one CUDA context).

Execution: the runs advance one step each in turn. On a CPU that is as fast as running them one after another
(each step already uses every thread) and the step of each run is unchanged, so every run's rows and weights are
bit-identical to its single run's (tested). On a GPU it trains the runs at one run's speed, so there the commands
give each run a process of its own instead (jobs/packing.py decides, `--cell-layout`); this module then trains a
cell of one. A run whose epoch ends is evaluated and checkpointed while the others wait; runs resumed at different
epochs or steps simply go on from where each stopped.

Leases (core.lease), per run: a run another live process holds is not trained twice. The cell trains its free
runs first, then waits for the held ones (`--if-running wait`, then resumes them or finds them completed) or
leaves them (`exit`; exit code 3 only if it trained nothing). Completed runs are skipped, so adding seeds to a
cell trains only the new ones.

Stopping: SIGTERM or SIGINT (a preempted pod, `sweep local` stopping its cells, Ctrl-C) lets every run finish its
current step, then writes each one's mid-epoch checkpoint, marks it interrupted, releases the leases and exits
with 143 / 130 (core.Stopped). The same command resumes every run at the step it stopped and ends exactly as
if it had never stopped (tested). A second Ctrl-C stops at once; the runs then resume from their last checkpoint.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch

from . import EXIT_SIGINT, EXIT_SIGTERM, RetryLater, StudyError, Stopped, data, runtime, store
from .config import RunConfig, RunOptions, same_cell
from .lease import Lease, RunBusy
from .records import RunRecord
from .storage import Storage
from .train import LeaseLost, Progress, Run, Setting, resolve_device, resolve_precision, synchronize


def train_cell(cfgs: list[RunConfig], opts: RunOptions, log=print) -> list[RunRecord]:
    """Train (or resume, or skip when finished) every run of one cell; returns the `runs` records of the runs
    that are completed now, in the order of `cfgs`. Raises RunBusy (exit 3) when `--if-running exit` left every
    run that was not completed to other processes, and Stopped on SIGTERM / SIGINT."""
    _check_cell(cfgs)
    results_dir = store.results_location(opts.results_dir)
    records: dict[str, RunRecord] = {}
    todo = []
    for cfg in cfgs:
        if done := completed(results_dir, cfg, log):
            records[cfg.run_id] = done
        else:
            todo.append(cfg)
    if todo:
        records.update(_train_todo(todo, results_dir, opts, log))
    return [records[c.run_id] for c in cfgs if c.run_id in records]


def _check_cell(cfgs: list[RunConfig]) -> None:
    if not cfgs:
        raise StudyError("a cell needs at least one seed; pass --seed S or --seeds 0,1,2")
    if not same_cell(cfgs):
        raise StudyError("the runs of a cell must differ only in their seed")
    seeds = [c.seed for c in cfgs]
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"seed {next(s for s in seeds if seeds.count(s) > 1)} is given twice; list each seed once")


def completed(results_dir: Storage, cfg: RunConfig, log) -> RunRecord | None:
    """The run's `runs` record if it is completed (and a line saying so), else None."""
    previous = store.read_shard(results_dir, cfg.run_id)
    if previous and previous.run.status == "completed":
        log(f"{cfg.run_id}: already completed ({cfg.epochs} epochs, test error {previous.run.test_error:.4f}); "
            f"nothing to do")
        return previous.run
    return None


def _train_todo(todo: list[RunConfig], results_dir: Storage, opts: RunOptions, log) -> dict[str, RunRecord]:
    # Everything that can fail because of the user's input fails here, before the store holds anything.
    store.ensure_writable(results_dir)
    device = resolve_device(opts.device)
    precision, precision_reason = resolve_precision(opts.precision, device)
    threads = opts.threads or runtime.default_threads()[0]
    torch.set_num_threads(threads)
    first = todo[0]
    data_dir = data.local_data_dir(first.dataset, opts.data_dir)  # a bucket's data set: fetched and checked once
    train, test, classes = data.load(first.dataset, data_dir, download=opts.download)
    full = data.DataSet(first.dataset, classes, train.to(device), test.to(device))  # one copy for every run
    datasets = {cfg.run_id: data.select(full, train_limit=cfg.train_limit, test_limit=cfg.test_limit,
                                        val_split=cfg.val_split, seed=cfg.seed) for cfg in todo}
    provenance = {**runtime.provenance(torch, device, data.fingerprint(first.dataset, data_dir)),
                  "precision_reason": precision_reason}
    setting = Setting(opts=opts, results_dir=results_dir, device=device, precision=precision, threads=threads,
                      provenance=provenance, cell_runs=len(todo), log=log)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    records: dict[str, RunRecord] = {}
    with _Signals() as signals:
        leases = {cfg.run_id: Lease(store.run_storage(results_dir, cfg.run_id), cfg.run_id, log=log) for cfg in todo}
        try:
            free, held = [], []
            for cfg in todo:
                (free if leases[cfg.run_id].try_acquire() else held).append(cfg)
            free = _drop_completed(free, results_dir, leases, records, log)  # finished while we looked
            if free:
                records.update(_train_together(free, datasets, leases, setting, signals))
            if held and opts.if_running == "exit":
                _leave(held, leases, trained_some=bool(free), log=log)
                return records
            for cfg in held:  # one at a time, as each holder lets go
                leases[cfg.run_id].acquire(wait=True)
                if _drop_completed([cfg], results_dir, leases, records, log):
                    records.update(_train_together([cfg], datasets, leases, setting, signals))
        finally:
            for lease in leases.values():
                lease.release()
    return records


def _leave(held: list[RunConfig], leases: dict[str, Lease], trained_some: bool, log) -> None:
    """--if-running exit: the held runs are left to their holders; exit code 3 if this process trained nothing."""
    described = []
    for cfg in held:
        holder = leases[cfg.run_id].holder()
        described.append(f"{cfg.run_id} is being trained by {holder.describe() if holder else 'another process'}")
    if trained_some:
        for line in described:
            log(f"{line}; left to it (--if-running exit)")
        return
    what = described[0] if len(held) == 1 else "every run asked for is being trained elsewhere: " + "; ".join(described)
    raise RunBusy(f"{what}; not waiting (--if-running exit); run the same command later, or with --if-running wait")


def _drop_completed(cfgs, results_dir, leases, records, log) -> list[RunConfig]:
    """The runs of `cfgs` still to train; completed ones go to `records` and give their lease back."""
    left = []
    for cfg in cfgs:
        if done := completed(results_dir, cfg, log):
            records[cfg.run_id] = done
            leases[cfg.run_id].release()
        else:
            left.append(cfg)
    return left


def _train_together(cfgs, datasets, leases, setting: Setting, signals: "_Signals") -> dict[str, RunRecord]:
    """Advance the runs one step each in turn until every one has finished its epochs."""
    signals.training = True
    runs: list[Run] = []
    for cfg in cfgs:  # a refused resume (--strict-resume) raises here, before anything is written
        runs.append(Run(cfg, datasets[cfg.run_id], setting, leases[cfg.run_id]))
    records, lost = {}, []
    progress = Progress(runs, setting.opts.progress)
    active = list(runs)
    try:
        for run in runs:
            run.write_shard()  # running
            if run.done():  # killed after its last epoch was stored, before it was marked completed
                records[run.run_id] = run.finish()
                active.remove(run)
            else:
                run.begin_epoch()
        while active:
            if signals.requested:
                why = signal.Signals(signals.requested).name
                for run in active:
                    run.stop(why)
                raise Stopped(f"stopped on {why}: {len(active)} run(s) checkpointed mid-epoch; run the same command "
                              f"again to resume them", EXIT_SIGTERM if signals.requested == signal.SIGTERM
                              else EXIT_SIGINT)
            for run in active:
                run.step()
                progress.step(run)
            ended = [run for run in active if run.steps_left() == 0]
            if not ended:
                continue
            synchronize(setting.device)
            for run in ended:
                run.stop_clock()
            for run in ended:
                try:
                    progress.epoch(run, run.end_epoch())
                except LeaseLost:
                    lost.append(run.run_id)
                    active.remove(run)
                    continue
                if run.done():
                    records[run.run_id] = run.finish()
                    active.remove(run)
                else:
                    run.begin_epoch()
    except (Stopped, LeaseLost):
        raise
    except BaseException as e:
        for run in active:
            run.fail(e)
        raise
    finally:
        progress.close()
        signals.training = False
    if lost:
        raise RetryLater(f"another process took over {', '.join(lost)} (this one was presumed dead); stopped them "
                         f"without writing")
    return records


class _Signals:
    """SIGTERM / SIGINT: while runs train, a request to stop after the current step (`requested`); otherwise (loading
    data, waiting for a lease) they stop the process at once, which has nothing to save. A second SIGINT is
    Ctrl-C's usual KeyboardInterrupt. Only the main thread can take signals: elsewhere this does nothing."""

    def __init__(self):
        self.requested: int | None = None
        self.training = False
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum
        if not self.training:
            raise Stopped(f"stopped on {signal.Signals(signum).name} before training; nothing to save; run the "
                          f"same command again", EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT)

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
