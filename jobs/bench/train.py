"""`resnet-study bench train`: training throughput side by side, the model alone, this project's loop and the
classic peer. The harness only: the loop is core.train's, the classic peer core.classic's.

    resnet-study bench train --device cpu --n 3 --dataset fashion-mnist
    resnet-study bench train --device cpu --n 3 --dataset fashion-mnist --augment paper,report --json
    resnet-study bench train --device cpu --precision fp32,bf16 --no-classic  # fp32 against bf16, interleaved
    resnet-study bench train --device cuda --n 3 --dataset cifar10          # bench/gpu.sh runs the GPU set

Same model (ResNet-(6n+2), same initial weights), recipe (RunConfig's defaults), batch size and number of
timed steps for every pipeline; warm-up steps are never timed. The pipelines run interleaved, in rounds (each
round: W untimed steps, then S timed steps, for each pipeline in turn), so a change in machine load hits all of
them alike; the figure per pipeline is the median over rounds.

(a) model-only: one synthetic batch, already normalised, in channels_last, on the device, fed to
    core.train.train_one_epoch S times: the ceiling for any data pipeline with this model and this step code.
    (a) and (b) run in each `--precision` given (default auto: what `train` picks here, core.train.resolve_precision;
    `fp32,bf16` times both, interleaved in the same rounds, and reports bf16/fp32).
(b) this project's loop: core.train.train_one_epoch over core.data.DeviceLoader on real data (Fashion-MNIST from
    Debian's package or --data-dir; CIFAR-10 from --data-dir, or CIFAR-10-shaped generated images where it is
    absent) with the chosen augmentation preset, batched on the device.
(c) the classic peer, core.classic: a torchvision data set of PIL images, per-sample torchvision transforms,
    DataLoader worker processes, default memory format, fp32, the optimizer's default implementation,
    `loss.item()` every step.

Also measured: evaluation throughput of core.train.evaluate (batches of EVAL_BATCH, no augmentation), the peak
resident memory of this process during each pipeline's rounds (Linux: VmHWM, reset per round through
/proc/self/clear_refs; DataLoader worker processes are not included) and, on CUDA, the peak GPU memory allocated.
"""

from __future__ import annotations

import itertools
import os
import platform
import resource
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ...core import StudyError, classic, data, runtime
from ...core.config import RunConfig
from ...core.model import param_count, resnet
from ...core.train import (EVAL_BATCH, device_name, evaluate, make_optimizer, now, resolve_device, resolve_precision,
                          synchronize, train_one_epoch)
from ...core.vocab import AUGMENTS, layers

EPOCH_IMAGES = 50_000  # "epoch time" is quoted for a CIFAR-10-sized epoch on every data set


RECIPE = RunConfig()  # the paper's recipe: the model, batch size and optimizer settings of (a) and (b)


@dataclass
class BenchOptions:
    device: str = "auto"
    n: int = RECIPE.n
    shortcut: str = RECIPE.shortcut
    dataset: str = "fashion-mnist"  # not the recipe's cifar10: Fashion-MNIST is on every machine of this project
    augment: list[str] = field(default_factory=lambda: [RECIPE.augment])
    batch_size: int = RECIPE.batch_size
    steps: int = 12  # timed steps per pipeline per round
    warmup: int = 4  # untimed steps per pipeline per round (>= the classic loader's prefetch: 2 per worker)
    rounds: int = 5
    workers: int = 2  # classic DataLoader worker processes
    eval_images: int = 5000
    threads: int | None = None  # torch.set_num_threads; None keeps the process's default
    compile: bool = False  # torch.compile the model of (a) and (b)
    compile_mode: str = "default"  # torch.compile's mode: default | reduce-overhead (CUDA graphs) | max-autotune
    precision: list[str] = field(default_factory=lambda: ["auto"])  # of (a) and (b), each timed; (c) is fp32
    seed: int = RECIPE.seed
    classic: bool = True
    data_dir: Path | None = None


# ---------------------------------------------------------------- memory


def _clear_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------- data


@dataclass
class BenchData:
    dataset: str
    source: str
    train: data.Split
    test: data.Split
    mean: torch.Tensor
    std: torch.Tensor


def generated_cifar10_shaped(seed: int, train: int = 50_000, test: int = 10_000) -> tuple[data.Split, data.Split]:
    """Random uint8 images in CIFAR-10's shape: enough for throughput (nothing here is learnt from them)."""
    g = torch.Generator().manual_seed(seed)

    def make(k: int) -> data.Split:
        return data.Split(torch.randint(0, 256, (k, 3, 32, 32), dtype=torch.uint8, generator=g),
                          torch.randint(0, 10, (k,), generator=g))

    return make(train), make(test)


def load_bench_data(dataset: str, data_dir: Path | None, seed: int = 0) -> BenchData:
    try:
        train, test, _ = data.load(dataset, data_dir)
        source = "real"
    except StudyError:
        if dataset != "cifar10":
            raise
        train, test = generated_cifar10_shaped(seed)
        source = "generated (CIFAR-10 not found; CIFAR-10-shaped random images)"
    mean, std = data.channel_stats(train.images)
    return BenchData(dataset, source, train, test, mean, std)


# ---------------------------------------------------------------- the three pipelines


def _forever(loader):
    while True:
        yield from loader


class Pipeline:
    name: str
    label: str

    def run(self, steps: int) -> float:
        """`steps` training steps; returns their wall-clock seconds (device work finished)."""
        raise NotImplementedError


class ModelOnly(Pipeline):
    def __init__(self, model, device, precision: str, batch_size: int, compile: str | None, suffix: str = ""):
        self.name, self.label = f"a{suffix}", f"model-only (synthetic batch on device, {precision})"
        self.model = torch.compile(model, mode=compile) if compile else model
        self.device, self.precision = device, precision
        self.optimizer = make_optimizer(model, RECIPE, torch.tensor(RECIPE.lr, device=device))
        g = torch.Generator(device=device).manual_seed(1)
        self.x = torch.randn(batch_size, 3, 32, 32, device=device, generator=g).contiguous(
            memory_format=torch.channels_last)
        self.y = torch.randint(0, 10, (batch_size,), device=device, generator=g)

    def run(self, steps: int) -> float:
        return train_one_epoch(self.model, itertools.repeat((self.x, self.y), steps), self.optimizer, self.device,
                               self.precision)[2]


class ThisLoop(Pipeline):
    def __init__(self, model, device, precision: str, bd: BenchData, batch_size: int, augment: str,
                 compile: str | None, seed: int, suffix: str = ""):
        self.name, self.label = f"b:{augment}{suffix}", f"this loop (DeviceLoader, augment {augment}, {precision})"
        self.raw_model = model  # evaluation runs the eager model, as core.train.Run does
        self.model = torch.compile(model, mode=compile) if compile else model
        self.device, self.precision = device, precision
        self.optimizer = make_optimizer(model, RECIPE, torch.tensor(RECIPE.lr, device=device))
        g = torch.Generator(device=device).manual_seed(seed)
        self.loader = data.DeviceLoader(bd.train, batch_size, bd.mean, bd.std, device=device, augment=augment,
                                        shuffle=True, generator=g)
        self.batches = _forever(self.loader)

    def run(self, steps: int) -> float:
        return train_one_epoch(self.model, itertools.islice(self.batches, steps), self.optimizer, self.device,
                               self.precision)[2]

    def loader_seconds_per_batch(self, batches: int) -> float:
        """The data pipeline alone: gather + augmentation + normalisation, no model."""
        synchronize(self.device)
        start = time.perf_counter()
        for _ in itertools.islice(self.batches, batches):
            pass
        synchronize(self.device)
        return (time.perf_counter() - start) / batches


class Classic(Pipeline):
    def __init__(self, model, device, bd: BenchData, root: Path, batch_size: int, augment: str, workers: int,
                 seed: int):
        self.name, self.label = f"c:{augment}", f"classic (PIL transforms, {workers} workers, augment {augment}, fp32)"
        self.model, self.device = model, device
        self.optimizer = classic.classic_optimizer(model, RECIPE)
        dataset = classic.classic_dataset(bd.dataset, root, bd.train, True,
                                          classic.classic_transform(bd.dataset, augment, bd.mean, bd.std))
        self.loader = classic.classic_loader(dataset, batch_size, workers, device, shuffle=True, seed=seed)
        self.batches = _forever(self.loader)

    def run(self, steps: int) -> float:
        return classic.classic_train_steps(self.model, itertools.islice(self.batches, steps), self.optimizer,
                                           self.device)[2]


def _model(opts: BenchOptions, device: torch.device, channels_last: bool):
    torch.manual_seed(opts.seed)  # the same initial weights for every pipeline
    model = resnet(opts.n, opts.shortcut).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


# ---------------------------------------------------------------- the benchmark


def run_bench(opts: BenchOptions, log=lambda msg: None) -> dict:
    """Measure (a), (b) per preset and (c) per preset; returns everything as a JSON-ready dict."""
    for preset in opts.augment:
        if preset not in AUGMENTS:
            raise StudyError(f"unknown augmentation {preset!r}; use {', '.join(AUGMENTS)} (comma-separated)")
    if opts.steps < 1 or opts.rounds < 1 or opts.warmup < 0:
        raise StudyError("--steps and --rounds must be >= 1 and --warmup >= 0")
    device = resolve_device(opts.device)
    precisions = list(dict.fromkeys(resolve_precision(p, device).precision for p in opts.precision))
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    load_start = os.getloadavg()
    started = now()
    t0 = time.perf_counter()
    bd = load_bench_data(opts.dataset, opts.data_dir, opts.seed)
    setup_seconds = time.perf_counter() - t0
    log(f"data: {opts.dataset} ({bd.source}), {len(bd.train)} training images, setup {setup_seconds:.1f} s")

    with classic.torchvision_root(opts.dataset, opts.data_dir) if opts.classic else nullcontext() as root:
        pipelines = _pipelines(opts, device, precisions, bd, root)
        timed = _rounds(pipelines, opts, device, log)
        loader_ms = {p.name: 1000 * p.loader_seconds_per_batch(max(opts.steps, 5))
                     for p in pipelines if isinstance(p, ThisLoop)}
        fast = next(p for p in pipelines if isinstance(p, ThisLoop))
        evaluation = _evaluation_rate(fast.raw_model, bd, opts.eval_images, device, precisions[0])

    results = _summaries(pipelines, timed, loader_ms, opts)
    opts_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    return {
        "bench": "train", "started_at": started.isoformat(), "finished_at": now().isoformat(), "options": opts_dict,
        "model": f"ResNet-{layers(opts.n)}", "params": param_count(fast.raw_model),
        "device": device_name(device), "device_type": device.type, "precision": ",".join(precisions),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{runtime.cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "torch_version": torch.__version__, "data_source": bd.source, "setup_seconds": setup_seconds,
        "load_avg_start": list(load_start), "load_avg_end": list(os.getloadavg()),
        "load_avg_1min_rounds": timed["loads"],
        "pipelines": results, "ratios": _ratios(results, opts, precisions),
        "evaluation": evaluation, "peak_rss_mb_process": _max_rss_mb(),
    }


def _suffix(precision: str, precisions: list[str]) -> str:
    """A pipeline's name is (a), (b:preset), ... with one precision; with several, (a@bf16), (b:paper@fp32), ..."""
    return f"@{precision}" if len(precisions) > 1 else ""


def _pipelines(opts: BenchOptions, device, precisions: list[str], bd: BenchData, root) -> list[Pipeline]:
    """(a) per precision, then per preset (b) per precision and, with the classic peer, (c); each with the same
    initial weights."""
    compile_mode = opts.compile_mode if opts.compile else None
    pipelines: list[Pipeline] = [ModelOnly(_model(opts, device, True), device, p, opts.batch_size, compile_mode,
                                           _suffix(p, precisions)) for p in precisions]
    for preset in opts.augment:
        pipelines += [ThisLoop(_model(opts, device, True), device, p, bd, opts.batch_size, preset, compile_mode,
                               opts.seed, _suffix(p, precisions)) for p in precisions]
        if opts.classic:
            pipelines.append(Classic(_model(opts, device, False), device, bd, root, opts.batch_size, preset,
                                     opts.workers, opts.seed))
    return pipelines


def _rounds(pipelines: list[Pipeline], opts: BenchOptions, device, log) -> dict:
    """The pipelines interleaved, round by round (W untimed steps, then S timed ones each): img/s per round, the
    peak RSS and peak GPU memory per pipeline, the load average at each round's start."""
    rates: dict[str, list[float]] = {p.name: [] for p in pipelines}
    peak_rss: dict[str, float | None] = {p.name: None for p in pipelines}
    peak_gpu: dict[str, float | None] = {p.name: None for p in pipelines}
    loads = []
    for r in range(opts.rounds):
        loads.append(os.getloadavg()[0])
        for p in pipelines:
            if opts.warmup:
                p.run(opts.warmup)
            cleared = _clear_peak_rss()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = p.run(opts.steps)
            rates[p.name].append(opts.steps * opts.batch_size / seconds)
            rss = _peak_rss_mb() if cleared else None
            if rss is not None:
                peak_rss[p.name] = max(rss, peak_rss[p.name] or 0)
            if device.type == "cuda":
                peak_gpu[p.name] = max(torch.cuda.max_memory_allocated(device) / 2**20, peak_gpu[p.name] or 0)
            log(f"round {r + 1}/{opts.rounds} {p.name}: {rates[p.name][-1]:.1f} img/s")
    return {"rates": rates, "peak_rss": peak_rss, "peak_gpu": peak_gpu, "loads": loads}


def _evaluation_rate(model, bd: BenchData, images: int, device, precision: str) -> dict:
    """core.train.evaluate's img/s over the first `images` test images (after one warm-up batch)."""
    test = bd.test.head(images)
    loader = data.DeviceLoader(test, EVAL_BATCH, bd.mean, bd.std, device=device)
    evaluate(model, data.DeviceLoader(test.head(EVAL_BATCH), EVAL_BATCH, bd.mean, bd.std, device=device),
             device, precision)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    evaluate(model, loader, device, precision)
    synchronize(device)
    return {"images_per_second": len(test) / (time.perf_counter() - start), "images": len(test),
            "batch_size": EVAL_BATCH}


def _summaries(pipelines: list[Pipeline], timed: dict, loader_ms: dict, opts: BenchOptions) -> dict:
    results = {}
    for p in pipelines:
        rate = statistics.median(timed["rates"][p.name])
        results[p.name] = {
            "label": p.label, "images_per_second": rate, "rounds": timed["rates"][p.name],
            "seconds_per_step": opts.batch_size / rate, "epoch_seconds_50k": EPOCH_IMAGES / rate,
            "peak_rss_mb": timed["peak_rss"][p.name], "peak_gpu_mb": timed["peak_gpu"][p.name],
        }
        if p.name in loader_ms:
            results[p.name]["loader_ms_per_batch"] = loader_ms[p.name]
    return results


def _ratios(results: dict, opts: BenchOptions, precisions: list[str]) -> dict:
    def rate_of(name: str) -> float:
        return results[name]["images_per_second"]

    ratios = {}
    for p in precisions:
        x = _suffix(p, precisions)
        for preset in opts.augment:
            ratios[f"b:{preset}{x}/a{x}"] = rate_of(f"b:{preset}{x}") / rate_of(f"a{x}")
            if opts.classic:
                ratios[f"b:{preset}{x}/c:{preset}"] = rate_of(f"b:{preset}{x}") / rate_of(f"c:{preset}")
        if "paper" in opts.augment and "report" in opts.augment:
            ratios[f"report_cost_over_paper{x}"] = rate_of(f"b:paper{x}") / rate_of(f"b:report{x}") - 1
    if set(precisions) == {"fp32", "bf16"}:  # what bf16 autocast buys on this device
        ratios["a@bf16/a@fp32"] = rate_of("a@bf16") / rate_of("a@fp32")
        for preset in opts.augment:
            ratios[f"b:{preset}@bf16/b:{preset}@fp32"] = rate_of(f"b:{preset}@bf16") / rate_of(f"b:{preset}@fp32")
    return ratios


def format_report(res: dict) -> str:
    o = res["options"]
    width = max(len(f"({name}) {p['label']}") for name, p in res["pipelines"].items())
    lines = [
        f"{res['model']} (n={o['n']}, shortcut {o['shortcut']}, {res['params']:,} params), {o['dataset']} "
        f"[{res['data_source']}], batch {o['batch_size']}, {res['device']}, (a) and (b) in {res['precision']}",
        f"{o['rounds']} rounds x {o['steps']} timed steps per pipeline (after {o['warmup']} untimed each round); "
        f"median over rounds; torch {res['torch_version']}, {res['torch_threads']} threads",
        f"load average {' '.join(f'{x:.2f}' for x in res['load_avg_start'])} at start, "
        f"{' '.join(f'{x:.2f}' for x in res['load_avg_end'])} at end; 1-min load at each round's start: "
        f"{' '.join(f'{x:.2f}' for x in res['load_avg_1min_rounds'])}",
        "",
        f"{'pipeline':<{width}} {'img/s':>8} {'s/step':>7} {'epoch 50k':>10} {'peak RSS':>9}"
        + (f" {'peak GPU':>9}" if res["device_type"] == "cuda" else ""),
    ]
    for name, p in res["pipelines"].items():
        rss = f"{p['peak_rss_mb']:.0f} MB" if p["peak_rss_mb"] is not None else "n/a"
        line = (f"{f'({name}) ' + p['label']:<{width}} {p['images_per_second']:8.1f} {p['seconds_per_step']:7.3f} "
                f"{p['epoch_seconds_50k']:9.1f}s {rss:>9}")
        if res["device_type"] == "cuda":
            line += f" {p['peak_gpu_mb']:6.0f} MB"
        lines.append(line)
    lines.append("")
    lines.append("ratios: " + ", ".join(
        f"{k} {v:+.1%}" if k.startswith("report_cost_over_paper") else f"{k} {v:.2f}"
        for k, v in res["ratios"].items()))
    for name, p in res["pipelines"].items():
        if "loader_ms_per_batch" in p:
            lines.append(f"data pipeline alone ({name}): {p['loader_ms_per_batch']:.1f} ms per batch")
    ev = res["evaluation"]
    lines.append(f"evaluation: {ev['images_per_second']:.0f} img/s ({ev['images']} images, batch {ev['batch_size']})")
    lines.append(f"peak RSS of this process over the whole benchmark: {res['peak_rss_mb_process']:.0f} MB")
    lines.append(f"machine: {res['machine']}; {res['started_at']} UTC")
    return "\n".join(lines)
