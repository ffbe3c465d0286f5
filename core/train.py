"""One run: the paper's training recipe (He et al. §4.2), its step, evaluation, checkpoint and record.

    resnet-study train --n 3 --dataset fashion-mnist --epochs 20               # one run
    resnet-study train --n 3 --dataset fashion-mnist --epochs 20 --seeds 0-2   # a cell: core/cell.py

- SGD, momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 after each milestone epoch (default 50 % and 75 % of
  the run: every epoch budget is its own run with its own schedule), batch 128, cross-entropy.
- The model that is reported is the model after the last epoch. The test set never chooses anything: when a
  validation split is held out (`--val-split 5000`, the paper's 45k/5k), it is evaluated every epoch too.
- After every epoch: a checkpoint (model, optimizer, generator, epoch, the epoch rows so far), then the run's shard
  in the results store. On SIGTERM / SIGINT the cell finishes the current step and checkpoints mid-epoch (the
  epoch's order, the position in it and the partial sums too), so the run resumes at that step and ends exactly as
  if it had never stopped. A `kill -9` at any moment leaves exactly one row per epoch after the re-run.
- Hot path: data resident on the device as uint8, batched per-sample augmentation there, channels_last, bf16
  autocast where the hardware computes in bf16 (`--precision auto`: CUDA, and CPUs with AMX or AVX512-BF16), the lr a device
  tensor updated in place, metrics summed on the device and read once per epoch: no host synchronisation inside a
  step, so a step can be captured as a CUDA graph and replayed.

`Run` holds all of one run's state (model, optimizer, generator, loaders, position, sums, rows, record, lease), so
a cell (core/cell.py) is a list of them advanced in turn.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import RetryLater, StudyError, data, runtime, store
from .config import RunConfig, RunOptions
from .lease import Lease
from .model import param_count, resnet
from .records import ConfusionRecord, EpochRecord, RunRecord
from .storage import Storage
from .vocab import DEVICES, PRECISIONS, check_choice

EVAL_BATCH = 1000


def resolve_device(device: str) -> torch.device:
    check_choice("--device", "device", device, DEVICES)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RetryLater("--device cuda asked for, but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and core count: what throughput is compared by (sweep plan)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {runtime.cpu_model()} ({os.cpu_count()} cores)"


def now() -> datetime:
    """UTC, naive, to the second: how the store keeps time."""
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


class PrecisionChoice(NamedTuple):
    precision: str  # fp32 or bf16
    reason: str  # what decided it, recorded per run (`precision_reason`)


def resolve_precision(precision: str, device: torch.device, cpu_flags: frozenset[str] | None = None) -> PrecisionChoice:
    """`auto`: bf16 autocast where the hardware computes in bf16 (CUDA GPUs from Ampere on; CPUs with a bf16 flag:
    AMX, AVX512-BF16, Arm BF16, core.runtime.BF16_CPU_FLAGS), else fp32. On the CPU the flags are read once from
    /proc/cpuinfo (`cpu_flags`: a given set instead, for tests). Measured on an AMD EPYC with avx512_bf16 and no AMX:
    bf16 1.4-1.6x fp32 (docs/benchmarks.md); where bf16 is emulated (AVX2 only) it is ~10x slower, so fp32.
    bf16 autocast keeps fp32 weights, optimizer state and losses (tested); convolutions and matrix products run in
    bf16, and the activations between them are bf16.
    """
    if check_choice("--precision", "precision", precision, PRECISIONS) != "auto":
        return PrecisionChoice(precision, f"--precision {precision}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return PrecisionChoice("bf16", "auto: the GPU computes bf16")
        return PrecisionChoice("fp32", "auto: the GPU has no bf16 units")
    flag = runtime.cpu_bf16_flag(cpu_flags)
    if flag:
        return PrecisionChoice("bf16", f"auto: CPU flag {flag}")
    return PrecisionChoice("fp32", f"auto: no bf16 CPU flag ({', '.join(runtime.BF16_CPU_FLAGS)}): bf16 emulated")


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): before reading a wall clock around device work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(model: torch.nn.Module, cfg: RunConfig, lr: torch.Tensor) -> torch.optim.Optimizer:
    """The paper's SGD with momentum and weight decay. Fused: one kernel per update that reads the lr from a device
    tensor, which the schedule changes in place (`lr.fill_`): a float lr would be frozen into a captured CUDA
    graph, and the foreach path reads a tensor lr back to the host every step."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           fused=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: torch.Tensor) -> None:
    """Point every param group at the run's lr tensor (after load_state_dict, which puts back the saved value: a
    float in checkpoints written before 0.2)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


# ---------------------------------------------------------------- the step, evaluation


def train_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, precision: str, loss_sum: torch.Tensor,
               wrong: torch.Tensor) -> None:
    """One SGD step on (x, y); adds the batch's summed loss and its wrong predictions to the device-side sums.
    Queues device work only: nothing here waits for the device."""
    with autocast(x.device, precision):
        out = model(x)
        loss = F.cross_entropy(out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    loss_sum += loss.detach().float() * len(y)
    wrong += (out.argmax(1) != y).sum()


def train_one_epoch(model, loader, optimizer, device, precision: str = "fp32") -> tuple[float, float, float, int]:
    """Every batch of `loader` through `train_step`: (mean loss, error fraction, seconds, images). One sync, at the
    end. (The benchmark harness times the step with it; a cell advances its runs batch by batch instead.)"""
    model.train()
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    synchronize(device)
    start = time.perf_counter()
    for x, y in loader:
        train_step(model, optimizer, x, y, precision, loss_sum, wrong)
        seen += len(y)
    synchronize(device)
    seconds = time.perf_counter() - start
    return loss_sum.item() / seen, wrong.item() / seen, seconds, seen


@torch.inference_mode()
def evaluate(model, loader, device, precision: str = "fp32") -> tuple[float, float, torch.Tensor]:
    """Returns (mean loss, error fraction, KxK confusion counts [true, predicted]; K = the model's outputs, the data
    set's classes). No augmentation, big batches."""
    model.eval()
    k = model.fc.out_features
    loss_sum = torch.zeros((), device=device)
    confusion = torch.zeros(k * k, device=device, dtype=torch.long)
    for x, y in loader:
        with autocast(device, precision):
            out = model(x)
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
        confusion += torch.bincount(y * k + out.argmax(1), minlength=k * k)
    confusion = confusion.view(k, k).cpu()
    total = int(confusion.sum())
    return loss_sum.item() / total, 1 - confusion.diag().sum().item() / total, confusion


# ---------------------------------------------------------------- one run's state


@dataclass
class Setting:
    """What the runs of one process share: where they run, in what precision, and what produced them."""

    opts: RunOptions
    results_dir: Storage  # the results store (core.storage), resolved once by the command
    device: torch.device
    precision: str
    threads: int
    provenance: dict
    cell_runs: int
    log: object


class LeaseLost(Exception):
    """Another process took this run over (this one was presumed dead): stop it without writing anything more."""


class Run:
    """One seed of one experiment being trained: everything it needs in one object.

    `begin_epoch()`, then `step()` until `steps_left()` is 0, then `end_epoch()`; `finish()` after the last epoch.
    `stop()` writes a mid-epoch checkpoint and marks the run interrupted. Every run has its own generator (data
    order, augmentation), its own initial weights (torch.manual_seed(seed) right before the model is built) and its
    own validation split and normalisation statistics, so a run trained inside a cell is the run `train --seed s`
    makes."""

    def __init__(self, cfg: RunConfig, ds: data.DataSet, setting: Setting, lease: Lease):
        self.cfg, self.run_id, self.ds, self.setting, self.lease = cfg, cfg.run_id, ds, setting, lease
        device = setting.device
        torch.manual_seed(cfg.seed)
        self.model = resnet(cfg.n, cfg.shortcut, len(ds.classes)).to(device, memory_format=torch.channels_last)
        self.step_model = torch.compile(self.model) if setting.opts.compile else self.model
        self.lr = torch.tensor(cfg.lr_at(1), device=device)
        self.optimizer = make_optimizer(self.model, cfg, self.lr)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        mean, std = data.channel_stats(ds.train)
        self.loader = data.DeviceLoader(ds.train, cfg.batch_size, mean, std, device=device, augment=cfg.augment,
                                        shuffle=True, generator=self.generator)
        self.test_loader = data.DeviceLoader(ds.test, EVAL_BATCH, mean, std, device=device)
        self.val_loader = data.DeviceLoader(ds.val, EVAL_BATCH, mean, std, device=device) if ds.val else None
        self.loss_sum = torch.zeros((), device=device)
        self.wrong = torch.zeros((), device=device, dtype=torch.long)
        self.rows: list[EpochRecord] = []
        self.order: torch.Tensor | None = None  # this epoch's order of the training rows
        self.position = 0  # batches of this epoch done
        self.seconds = 0.0  # this epoch's training time so far (earlier processes included)
        self._clock: float | None = None
        self.steps_here = 0  # steps trained by this process
        self.record = self._restore()

    # -------- checkpoint and resume

    def _restore(self) -> RunRecord:
        results_dir, opts, log = self.setting.results_dir, self.setting.opts, self.setting.log
        previous = store.read_shard(results_dir, self.run_id)
        ckpt = store.load_checkpoint(results_dir, self.run_id, map_location=self.setting.device)
        if ckpt is not None:
            self.rows = [EpochRecord.model_validate(r) for r in ckpt["rows"]]
            _check_resume(self.run_id, self.rows[-1] if self.rows else None, self.setting.provenance,
                          opts.strict_resume, log)
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            set_lr(self.optimizer, self.lr)
            self.generator.set_state(ckpt["generator"].cpu())
            partial = ckpt.get("partial")
            if partial:
                self.order = partial["order"].to(self.setting.device)
                self.position, self.seconds = partial["position"], partial["seconds"]
                self.loss_sum.fill_(partial["loss_sum"])
                self.wrong.fill_(partial["wrong"])
                log(f"{self.run_id}: resuming epoch {ckpt['epoch'] + 1} at step {self.position} of "
                    f"{len(self.loader)}")
            else:
                log(f"{self.run_id}: resuming after epoch {ckpt['epoch']}")
        record = RunRecord(
            run_id=self.run_id, **self.cfg.model_dump(), layers=self.cfg.layers,
            train_size=len(self.ds.train), val_size=len(self.ds.val) if self.ds.val else 0,
            test_size=len(self.ds.test), params=param_count(self.model), status="running",
            epochs_done=len(self.rows),
            started_at=previous.run.started_at if previous and previous.run.started_at else now(), updated_at=now(),
            device_type=self.setting.device.type, device_name=device_name(self.setting.device),
            cell_runs=self.setting.cell_runs,
            precision=self.setting.precision, threads=self.setting.threads,
            train_seconds=sum(r.epoch_seconds for r in self.rows), config=self.cfg.model_dump_json(),
            **self.setting.provenance,
        )
        if self.rows:
            _set_final(record, self.rows[-1])
        return record

    def _checkpoint(self, mid_epoch: bool) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "epoch": len(self.rows), "rows": [r.model_dump() for r in self.rows],
                 "generator": self.generator.get_state(), "config": self.cfg.model_dump()}
        if mid_epoch:
            state["partial"] = {"order": self.order.cpu(), "position": self.position, "seconds": self.seconds,
                                "loss_sum": self.loss_sum.item(), "wrong": self.wrong.item()}
        store.save_checkpoint(self.setting.results_dir, self.run_id, state)

    def write_shard(self, confusion: list[ConfusionRecord] | None = None) -> None:
        self.record.updated_at = now()
        store.write_shard(self.setting.results_dir, self.record, self.rows, confusion or [])

    # -------- the epoch

    @property
    def epoch(self) -> int:
        """The epoch being trained (1-based)."""
        return len(self.rows) + 1

    def done(self) -> bool:
        return len(self.rows) >= self.cfg.epochs

    def begin_epoch(self) -> None:
        """Set the epoch's lr (in place) and, unless resuming mid-epoch, draw its order and zero its sums."""
        self.lr.fill_(self.cfg.lr_at(self.epoch))
        if self.order is None:
            self.order = self.loader.order()
            self.position, self.seconds = 0, 0.0
            self.loss_sum.zero_()
            self.wrong.zero_()
        self.model.train()
        self._clock = time.perf_counter()

    def steps_left(self) -> int:
        return len(self.loader) - self.position

    def step(self) -> None:
        """The epoch's next batch: the last one of an epoch has its own (shorter) shape."""
        x, y = self.loader.batch(self.order, self.position)
        train_step(self.step_model, self.optimizer, x, y, self.setting.precision, self.loss_sum, self.wrong)
        self.position += 1
        self.steps_here += 1

    def stop_clock(self) -> None:
        """Add the time since the clock started to this epoch's (call after the device has caught up)."""
        if self._clock is not None:
            self.seconds += time.perf_counter() - self._clock
            self._clock = None

    def end_epoch(self) -> EpochRecord:
        """Evaluate, then the epoch's row, checkpoint and shard (in that order: a row is only ever stored with the
        checkpoint that produced it)."""
        self.stop_clock()
        seen = len(self.ds.train)
        train_loss, train_error = self.loss_sum.item() / seen, self.wrong.item() / seen
        precision, device = self.setting.precision, self.setting.device
        test_loss, test_error, _ = evaluate(self.model, self.test_loader, device, precision)
        val_loss, val_error = (evaluate(self.model, self.val_loader, device, precision)[:2] if self.val_loader
                               else (None, None))
        prov = self.setting.provenance
        row = EpochRecord(run_id=self.run_id, epoch=self.epoch, lr=self.cfg.lr_at(self.epoch), train_loss=train_loss,
                          train_error=train_error, test_loss=test_loss, test_error=test_error, val_loss=val_loss,
                          val_error=val_error, epoch_seconds=self.seconds, images_per_second=seen / self.seconds,
                          source_hash=prov["source_hash"], data_fingerprint=prov["data_fingerprint"])
        if self.lease.lost:
            raise LeaseLost(self.run_id)
        self.rows.append(row)
        self.order = None
        self._checkpoint(mid_epoch=False)
        self.record.epochs_done = len(self.rows)
        self.record.train_seconds = sum(r.epoch_seconds for r in self.rows)
        _set_final(self.record, row)
        self.write_shard()
        return row

    def finish(self) -> RunRecord:
        """The finished model's confusion matrices, and the run completed."""
        precision, device, classes = self.setting.precision, self.setting.device, self.ds.classes
        _, _, test_cm = evaluate(self.model, self.test_loader, device, precision)
        confusion = _confusion_rows(self.run_id, "test", test_cm, classes)
        if self.val_loader:
            confusion += _confusion_rows(self.run_id, "val", evaluate(self.model, self.val_loader, device,
                                                                      precision)[2], classes)
        self.record.status, self.record.finished_at = "completed", now()
        self.write_shard(confusion)
        self.setting.log(
            f"{self.run_id}: completed {self.cfg.epochs} epochs in {self.record.train_seconds:.1f} s of training "
            f"({self.steps_here} steps in this process); test error {self.record.test_error:.4f}"
            + (f", val error {self.record.val_error:.4f}" if self.val_loader else ""))
        return self.record

    def stop(self, why: str) -> None:
        """Stopped by a signal: checkpoint where it is (mid-epoch, if it is), mark the run interrupted."""
        self.stop_clock()
        if self.lease.lost:
            return
        if self.order is not None or self.rows:
            # mid-epoch whenever the epoch's order was drawn: the generator has moved past it
            self._checkpoint(mid_epoch=self.order is not None)
        self.record.status, self.record.error_message = "interrupted", why
        self.write_shard()
        where = (f"epoch {self.epoch} at step {self.position} of {len(self.loader)}" if self.order is not None
                 else f"after epoch {len(self.rows)}")
        self.setting.log(f"{self.run_id}: stopped ({why}) {where}, checkpoint written "
                         f"({self.steps_here} steps in this process)")

    def fail(self, error: BaseException) -> None:
        if self.lease.lost:
            return
        self.record.status = "failed"
        self.record.error_message = f"{type(error).__name__}: {error}"[:2000]
        self.write_shard()


def _confusion_rows(run_id: str, split: str, matrix: torch.Tensor, classes: list[str]) -> list[ConfusionRecord]:
    return [ConfusionRecord(run_id=run_id, split=split, true_label=t, predicted_label=p, true_class=classes[t],
                            predicted_class=classes[p], count=int(matrix[t, p]))
            for t in range(len(classes)) for p in range(len(classes))]


def _check_resume(run_id: str, last: EpochRecord | None, provenance: dict, strict: bool, log) -> None:
    """A resume on other code or data than the last epoch's: one line of warning, or refused with --strict-resume
    (before anything is written)."""
    changed = [f"{what} {getattr(last, key)} -> {provenance[key]}" for key, what in
               (("source_hash", "code"), ("data_fingerprint", "data"))
               if last is not None and getattr(last, key) is not None and getattr(last, key) != provenance[key]]
    if not changed:
        return
    if strict:
        raise StudyError(f"{run_id}: refusing to resume on other {' and '.join(changed)} (--strict-resume); "
                         f"run the code and data of its checkpoint, or drop --strict-resume to record the change")
    log(f"warning: {run_id}: resuming on other {' and '.join(changed)}; each epoch row records which it ran on")


def _set_final(record: RunRecord, last: EpochRecord) -> None:
    """A run's final metrics are its last epoch's: the test set never picks an epoch."""
    record.train_error, record.test_loss, record.test_error = last.train_error, last.test_loss, last.test_error
    record.val_loss, record.val_error = last.val_loss, last.val_error


# ---------------------------------------------------------------- progress: a bar on a terminal, JSON lines otherwise


class Progress:
    """One bar per run on a terminal (`--progress bar`), else one JSON line per finished epoch per run."""

    def __init__(self, runs: list[Run], mode: str = "auto"):
        self.bar, self.tasks = None, {}
        if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeElapsedColumn

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self.bar.start()
            for r in runs:
                steps = len(r.loader)
                self.tasks[r.run_id] = self.bar.add_task(r.run_id, total=r.cfg.epochs * steps, info="",
                                                         completed=len(r.rows) * steps + r.position)

    def step(self, run: Run) -> None:
        if self.bar:
            self.bar.advance(self.tasks[run.run_id])

    def epoch(self, run: Run, row: EpochRecord) -> None:
        if self.bar:
            val = f" val {row.val_error:.2%}" if row.val_error is not None else ""
            self.bar.update(self.tasks[run.run_id],
                            info=f"epoch {row.epoch}/{run.cfg.epochs}: train {row.train_error:.2%} "
                                 f"test {row.test_error:.2%}{val} {row.images_per_second:.0f} img/s")
        else:
            print(row.model_dump_json(), flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
