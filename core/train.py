"""One experiment: the paper's training recipe (He et al. §4.2), evaluation, checkpoint and resume.

    resnet-study train --n 3 --dataset fashion-mnist --epochs 20

- SGD, momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 after each milestone epoch (default 50 % and 75 % of
  the run: every epoch budget is its own run with its own schedule), batch 128, cross-entropy.
- The model that is reported is the model after the last epoch. The test set never chooses anything: when a
  validation split is held out (`--val-split 5000`, the paper's 45k/5k), it is evaluated every epoch too.
- After every epoch: a checkpoint (model, optimizer, epoch, RNG states, the epoch rows so far), then the run's shard
  in the results store. The same command again resumes from the checkpoint; the shard is rebuilt from the
  checkpoint's rows, so a `kill -9` at any moment leaves exactly one row per epoch after the re-run.
- Hot path: data resident on the device as uint8, batched per-sample augmentation there, channels_last, bf16
  autocast where the hardware computes in bf16 (`--precision auto`: CUDA, and CPUs with AMX), metrics accumulated
  on the device and read once per epoch.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from . import StudyError, data, runtime, store
from .config import ExperimentConfig
from .lease import Lease
from .model import param_count, resnet
from .records import ConfusionRecord, EpochRecord, RunRecord
from .vocab import DEVICES, NUM_CLASSES, PRECISIONS, check_choice

EVAL_BATCH = 1000


def resolve_device(device: str) -> torch.device:
    check_choice("--device", "device", device, DEVICES)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise StudyError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and core count: what throughput is compared by (sweep plan)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {runtime.cpu_model()} ({os.cpu_count()} cores)"


def now() -> datetime:
    """UTC, naive, to the second: how the store keeps time."""
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 in hardware (Intel AMX, Sapphire Rapids and later): there oneDNN runs the
    convolutions under bf16 autocast about 1.6x faster than fp32 (docs/benchmarks.md); elsewhere bf16 is emulated."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 autocast where the hardware computes in bf16 (CUDA GPUs from Ampere on, AMX CPUs), else fp32.
    bf16 autocast keeps fp32 weights, optimizer state and losses (tested); convolutions and matrix products run in
    bf16, and the activations between them are bf16.
    """
    if check_choice("--precision", "precision", precision, PRECISIONS) != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    return "bf16" if cpu_has_bf16_units() else "fp32"


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): before reading a wall clock around device work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(model: torch.nn.Module, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    """The paper's SGD with momentum and weight decay; foreach: one multi-tensor kernel per update instead of a loop
    over ~65 parameter tensors. The lr is set per epoch (`cfg.lr_at`)."""
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           foreach=True)


# ---------------------------------------------------------------- one epoch, evaluation


def train_one_epoch(model, loader, optimizer, device, precision: str = "fp32", on_step=None,
                    ) -> tuple[float, float, float, int]:
    """Returns (mean loss, error fraction, seconds, images). One host<->device sync, at the end."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    synchronize(device)
    start = time.perf_counter()
    for x, y in loader:
        with autocast(device, precision):
            out = model(x)
            loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().float() * len(y)
        wrong += (out.argmax(1) != y).sum()
        seen += len(y)
        if on_step:
            on_step()
    synchronize(device)
    seconds = time.perf_counter() - start
    return loss_sum.item() / seen, wrong.item() / seen, seconds, seen


@torch.inference_mode()
def evaluate(model, loader, device, precision: str = "fp32") -> tuple[float, float, torch.Tensor]:
    """Returns (mean loss, error fraction, 10x10 confusion counts [true, predicted]). No augmentation, big batches."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    confusion = torch.zeros(NUM_CLASSES * NUM_CLASSES, device=device, dtype=torch.long)
    for x, y in loader:
        with autocast(device, precision):
            out = model(x)
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
        confusion += torch.bincount(y * NUM_CLASSES + out.argmax(1), minlength=NUM_CLASSES * NUM_CLASSES)
    confusion = confusion.view(NUM_CLASSES, NUM_CLASSES).cpu()
    total = int(confusion.sum())
    return loss_sum.item() / total, 1 - confusion.diag().sum().item() / total, confusion


# ---------------------------------------------------------------- progress: a bar on a terminal, JSON lines otherwise


class Progress:
    def __init__(self, run_id: str, epochs: int, steps: int, mode: str = "auto"):
        self.run_id, self.epochs, self.steps = run_id, epochs, steps
        self.bar = None
        if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeElapsedColumn

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self.bar.start()
            self.task = self.bar.add_task(run_id, total=epochs * steps, info="")

    def resume_at(self, epoch: int) -> None:
        if self.bar:
            self.bar.update(self.task, completed=epoch * self.steps)

    def step(self) -> None:
        if self.bar:
            self.bar.advance(self.task)

    def epoch(self, row: EpochRecord) -> None:
        if self.bar:
            val = f" val {row.val_error:.2%}" if row.val_error is not None else ""
            self.bar.update(self.task, info=f"epoch {row.epoch}/{self.epochs}: train {row.train_error:.2%} "
                                            f"test {row.test_error:.2%}{val} {row.images_per_second:.0f} img/s")
        else:
            print(row.model_dump_json(), flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


# ---------------------------------------------------------------- the experiment


@dataclass
class RunOptions:
    """Where and how to run: not part of the run's identity."""

    results_dir: Path
    data_dir: Path | None = None
    device: str = "auto"
    download: bool = False
    progress: str = "auto"  # auto | bar | json
    compile: bool = False
    precision: str = "auto"  # auto | fp32 | bf16
    threads: int | None = None  # intra-op CPU threads; None: core.runtime.default_threads()
    if_running: str = "wait"  # another process trains this run: wait for it, or exit (core.lease)
    strict_resume: bool = False  # refuse to resume a run on other code or data than its checkpoint's


class LeaseLost(Exception):
    """Another process took this run over (this one was presumed dead): stop without writing anything more."""

def _confusion_rows(run_id: str, split: str, matrix: torch.Tensor, classes: list[str]) -> list[ConfusionRecord]:
    return [ConfusionRecord(run_id=run_id, split=split, true_label=t, predicted_label=p, true_class=classes[t],
                            predicted_class=classes[p], count=int(matrix[t, p]))
            for t in range(NUM_CLASSES) for p in range(NUM_CLASSES)]


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _completed(results_dir: Path, cfg: ExperimentConfig, log) -> RunRecord | None:
    previous = store.read_shard(results_dir, cfg.run_id)
    if previous and previous.run.status == "completed":
        log(f"{cfg.run_id}: already completed ({cfg.epochs} epochs, test error {previous.run.test_error:.4f}); "
            f"nothing to do")
        return previous.run
    return None


def run(cfg: ExperimentConfig, opts: RunOptions, log=print) -> RunRecord:
    """Train (or resume, or skip if finished) one experiment; returns its `runs` record. One process at a time
    trains a run (core.lease); a second one waits for it, then finds the run completed or resumes it."""
    results_dir = Path(opts.results_dir)
    if done := _completed(results_dir, cfg, log):
        return done

    # Everything that can fail because of the user's input fails here, before the store holds anything.
    store.ensure_writable(results_dir)
    device = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device)
    threads = opts.threads or runtime.default_threads()[0]
    torch.set_num_threads(threads)
    ds = data.prepare(cfg.dataset, opts.data_dir, download=opts.download, train_limit=cfg.train_limit,
                      test_limit=cfg.test_limit, val_split=cfg.val_split, seed=cfg.seed)
    provenance = runtime.provenance(torch, device, data.data_files(cfg.dataset, opts.data_dir))

    with Lease(store.run_dir(results_dir, cfg.run_id), cfg.run_id, log=log).acquire(opts.if_running == "wait") as lease:
        if done := _completed(results_dir, cfg, log):  # finished by the process this one waited for
            return done
        return _train(cfg, opts, ds, device, precision, threads, provenance, lease, log)


def _train(cfg: ExperimentConfig, opts: RunOptions, ds: data.DataSet, device: torch.device, precision: str,
           threads: int, provenance: dict, lease: Lease, log) -> RunRecord:
    results_dir, run_id = Path(opts.results_dir), cfg.run_id
    previous = store.read_shard(results_dir, run_id)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = resnet(cfg.n, cfg.shortcut).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    mean, std = data.channel_stats(ds.train.images)
    train_loader = data.DeviceLoader(ds.train, cfg.batch_size, mean, std, device=device, augment=cfg.augment,
                                     shuffle=True, generator=generator)
    test_loader = data.DeviceLoader(ds.test, EVAL_BATCH, mean, std, device=device)
    val_loader = data.DeviceLoader(ds.val, EVAL_BATCH, mean, std, device=device) if ds.val else None
    step_model = torch.compile(model) if opts.compile else model

    ckpt_path = store.run_dir(results_dir, run_id) / store.CHECKPOINT_NAME
    rows: list[EpochRecord] = []
    start_epoch = 1
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        rows = [EpochRecord.model_validate(r) for r in ckpt["rows"]]
        _check_resume(run_id, rows[-1] if rows else None, provenance, opts.strict_resume, log)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"].cpu())
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        start_epoch = ckpt["epoch"] + 1
        log(f"{run_id}: resuming after epoch {ckpt['epoch']}")

    record = RunRecord(
        run_id=run_id, **cfg.model_dump(exclude={"milestones"}), milestones=",".join(map(str, cfg.milestones)),
        layers=cfg.layers, train_size=len(ds.train), val_size=len(ds.val) if ds.val else 0, test_size=len(ds.test),
        params=param_count(model), status="running", epochs_done=len(rows),
        started_at=previous.run.started_at if previous and previous.run.started_at else now(), updated_at=now(),
        device=device_name(device), precision=precision, threads=threads,
        train_seconds=sum(r.epoch_seconds for r in rows), config=cfg.model_dump_json(), **provenance,
    )
    if rows:
        _set_final(record, rows[-1])
    store.write_shard(results_dir, record, rows, [])

    progress = Progress(run_id, cfg.epochs, len(train_loader), opts.progress)
    progress.resume_at(start_epoch - 1)
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            lr = cfg.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            train_loss, train_error, seconds, images = train_one_epoch(step_model, train_loader, optimizer, device,
                                                                       precision, progress.step)
            test_loss, test_error, _ = evaluate(model, test_loader, device, precision)
            val_loss, val_error = evaluate(model, val_loader, device, precision)[:2] if val_loader else (None, None)
            row = EpochRecord(run_id=run_id, epoch=epoch, lr=lr, train_loss=train_loss, train_error=train_error,
                              test_loss=test_loss, test_error=test_error, val_loss=val_loss, val_error=val_error,
                              epoch_seconds=seconds, images_per_second=images / seconds,
                              source_hash=provenance["source_hash"], data_fingerprint=provenance["data_fingerprint"])
            if lease.lost:
                raise LeaseLost(run_id)
            rows.append(row)
            _save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                "rows": [r.model_dump() for r in rows], "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(), "config": cfg.model_dump(),
            })
            record.epochs_done, record.updated_at = epoch, now()
            record.train_seconds = sum(r.epoch_seconds for r in rows)
            _set_final(record, row)
            store.write_shard(results_dir, record, rows, [])
            progress.epoch(row)
    except LeaseLost:
        raise StudyError(f"{run_id}: another process took this run over; stopped without writing") from None
    except BaseException as e:
        record.status, record.updated_at = "failed", now()
        record.error_message = f"{type(e).__name__}: {e}"[:2000]
        store.write_shard(results_dir, record, rows, [])
        raise
    finally:
        progress.close()

    _, _, test_cm = evaluate(model, test_loader, device, precision)
    confusion = _confusion_rows(run_id, "test", test_cm, ds.classes)
    if val_loader:
        confusion += _confusion_rows(run_id, "val", evaluate(model, val_loader, device, precision)[2], ds.classes)
    record.status, record.finished_at, record.updated_at = "completed", now(), now()
    store.write_shard(results_dir, record, rows, confusion)
    log(f"{run_id}: completed {cfg.epochs} epochs in {record.train_seconds:.1f} s of training; "
        f"test error {record.test_error:.4f}" + (f", val error {record.val_error:.4f}" if val_loader else ""))
    return record


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
