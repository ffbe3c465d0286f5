"""`resnet-study bench train|api`: benchmarks that print figures (measured figures: docs/benchmarks.md).

    resnet-study bench train --device cpu --n 3 --dataset fashion-mnist
    resnet-study bench train --device cpu --n 3 --dataset fashion-mnist --augment paper,report --json > bench.json
    resnet-study bench train --device cpu --n 18 --no-classic --steps 5 --rounds 1   # ResNet-110 memory check
    resnet-study bench processes --device cuda --processes 1,2,4,8        # whole train processes sharing a machine
    resnet-study bench processes --device cpu --processes 1,2,4,8 --cells # P processes against one cell of P runs
    resnet-study bench stop --device cpu --n 18 --seeds 3             # SIGTERM to exit: the grace period a pod needs
    resnet-study bench api [--runs 10000] [--epochs 100] [--requests 50]
    resnet-study bench data ./my-images                              # decode rate, cached load of the second run

What each measures, and how: jobs/bench/ (train.py, runs.py, api.py, data.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..core import StudyError, store
from ..core.config import RunConfig, bounds
from ..core.vocab import AUGMENTS, PRECISIONS, SHORTCUTS, check_choice
from .options import DataDir, Device, check_option

RECIPE = RunConfig()  # the defaults of `bench train`'s model and batch: the paper's recipe, as `train`

AsJson = typer.Option(False, "--json", help="Print the results as one JSON object.")
Save = typer.Option(None, help="Also write the results as JSON to this file.")

app = typer.Typer(help="Benchmarks that print figures (training throughput, API latency).", no_args_is_help=True)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def _emit(res: dict, report, as_json: bool, save: Optional[Path]) -> None:
    """The results, with the command that produced them: as a table or JSON, and saved as JSON with --save."""
    res["command"] = " ".join(["resnet-study", *sys.argv[1:]])
    if save:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1) if as_json else report(res))


@app.command("train")
def bench_train(
    device: str = Device,
    n: int = typer.Option(RECIPE.n, help=RunConfig.model_fields["n"].description),
    shortcut: str = typer.Option(RECIPE.shortcut, help=RunConfig.model_fields["shortcut"].description),
    dataset: str = typer.Option("fashion-mnist", help="fashion-mnist or cifar10 (generated CIFAR-10-shaped "
                                                      "images where CIFAR-10 is absent)."),
    augment: str = typer.Option(RECIPE.augment, help=f"Preset(s) for (b) and (c), comma-separated: "
                                                     f"{', '.join(AUGMENTS)}."),
    batch_size: int = typer.Option(RECIPE.batch_size, help="Training batch size, the same for every pipeline."),
    steps: int = typer.Option(12, help="Timed steps per pipeline per round."),
    warmup: int = typer.Option(4, help="Untimed steps per pipeline before each round's timed steps."),
    rounds: int = typer.Option(5, help="Rounds; pipelines interleave within a round; the median is reported."),
    workers: int = typer.Option(2, help="DataLoader worker processes of the classic pipeline (c)."),
    eval_images: int = typer.Option(5000, help="Test images for the evaluation throughput."),
    threads: Optional[int] = typer.Option(None, help="torch.set_num_threads (default: torch's, one per core)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model of (a) and (b)."),
    compile_mode: str = typer.Option("default", help="torch.compile mode with --compile: default, reduce-overhead "
                                                     "(CUDA graphs) or max-autotune."),
    precision: str = typer.Option("auto", help=f"Precision(s) of (a) and (b), comma-separated: "
                                               f"{', '.join(PRECISIONS)}; fp32,bf16 times both in the same rounds. "
                                               f"auto: what `train` picks here (bf16 on CUDA and on CPUs with bf16 "
                                               f"units, else fp32)."),
    classic: bool = typer.Option(True, "--classic/--no-classic", help="Run the classic pipeline (c)."),
    seed: int = typer.Option(RECIPE.seed, help="Initial weights and data order."),
    as_json: bool = AsJson,
    save: Optional[Path] = Save,
    data_dir: Optional[str] = DataDir,
):
    """Measure training img/s side by side: (a) model-only, (b) this project's loop, (c) the classic peer."""
    check_option("--shortcut", shortcut, SHORTCUTS)
    check_option("--compile-mode", compile_mode, COMPILE_MODES)
    if n < 1 or batch_size < 1 or eval_images < 1 or workers < 0:
        raise StudyError("--n, --batch-size and --eval-images must be >= 1, --workers >= 0")
    presets = [p.strip() for p in augment.split(",") if p.strip()]
    if not presets:
        raise StudyError(f"--augment: name at least one preset ({', '.join(AUGMENTS)})")
    precisions = [p.strip() for p in precision.split(",") if p.strip()]
    for p in precisions or [""]:
        check_choice("--precision", "precision", p, PRECISIONS)
    from .bench.train import BenchOptions, format_report, run_bench  # torch: imported only by the commands that train

    opts = BenchOptions(device=device, n=n, shortcut=shortcut, dataset=dataset, augment=presets,
                        batch_size=batch_size, steps=steps, warmup=warmup, rounds=rounds, workers=workers,
                        eval_images=eval_images, threads=threads, compile=compile, compile_mode=compile_mode,
                        precision=precisions,
                        classic=classic, seed=seed, data_dir=data_dir)
    res = run_bench(opts, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    _emit(res, format_report, as_json, save)


@app.command("processes")
def bench_runs(
    processes: str = typer.Option("1,2,4", help="How many train processes at once, comma-separated levels."),
    sequential: bool = typer.Option(False, "--sequential", help="Also run each level's trainings one after another."),
    cells: bool = typer.Option(False, "--cells", help="Against each level's P processes, one cell of the same P runs "
                                                      "in one process (`train --seeds 0..P-1`): img/s, wall time and "
                                                      "peak memory of both."),
    share_cores: bool = typer.Option(True, "--share-cores/--no-share-cores",
                                     help="Give each process cores / P threads, as `sweep local` does; without, "
                                          "each takes its own default, as commands started by hand do."),
    device: str = Device,
    n: int = typer.Option(3, help="Blocks per stack of every run."),
    dataset: str = typer.Option("fashion-mnist", help="cifar10 or fashion-mnist."),
    epochs: int = typer.Option(3, help="Epochs per run (the first is left out of the throughput)."),
    train_limit: Optional[int] = typer.Option(None, help="Training images per run (default: all)."),
    test_limit: Optional[int] = typer.Option(None, help="Test images per run (default: all)."),
    as_json: bool = AsJson,
    save: Optional[Path] = Save,
    data_dir: Optional[str] = DataDir,
):
    """Time P whole `train` processes at once (and, with --sequential, one after another; with --cells, against one
    cell of P runs): aggregate img/s and wall time per P. How many runs to pack on a GPU; whether concurrent runs
    share CPU cores gracefully; what a cell saves over separate processes."""
    from .bench import runs as br

    levels = _levels(processes, "--processes")
    args = _train_args(device, n, dataset, epochs, train_limit, test_limit, data_dir)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if cells:
        if sequential or not share_cores:
            raise StudyError("--cells compares P processes sharing the cores with one cell: drop --sequential and "
                             "--no-share-cores")
        _emit(br.bench_cells(args, levels, log=log), br.format_cells_report, as_json, save)
    else:
        _emit(br.bench_runs(args, levels, sequential, share_cores, log=log), br.format_report, as_json, save)


@app.command("stop")
def bench_stop(
    device: str = Device,
    n: int = typer.Option(18, help="Blocks per stack (the default, ResNet-110, has the slowest step)."),
    dataset: str = typer.Option("fashion-mnist", help="cifar10 or fashion-mnist."),
    seeds: int = typer.Option(3, min=1, help="Runs in the cell (seeds 0..K-1): each is checkpointed on the signal."),
    train_limit: Optional[int] = typer.Option(2560, help="Training images per run (epoch 1 must finish first)."),
    repeats: int = typer.Option(3, min=1, help="Times to start, signal and time the cell."),
    as_json: bool = AsJson,
    save: Optional[Path] = Save,
    data_dir: Optional[str] = DataDir,
):
    """Time a cell from SIGTERM to its exit, mid-epoch: the step it finishes plus every run's checkpoint and shard.
    The Kubernetes grace period (terminationGracePeriodSeconds) must cover it."""
    from .bench.runs import bench_stop as run_stop, format_stop_report

    args = _train_args(device, n, dataset, 100, train_limit, 1000, data_dir)
    res = run_stop(args, list(range(seeds)), repeats, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    _emit(res, format_stop_report, as_json, save)


def _levels(text: str, option: str) -> list[int]:
    try:
        levels = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise StudyError(f"{option} takes comma-separated counts, e.g. 1,2,4 (got {text!r})") from None
    if not levels or min(levels) < 1:
        raise StudyError(f"{option} takes counts >= 1, e.g. 1,2,4 (got {text!r})")
    return levels


def _train_args(device, n, dataset, epochs, train_limit, test_limit, data_dir) -> list[str]:
    args = ["--device", device, "--n", str(n), "--dataset", dataset, "--epochs", str(epochs)]
    args += ["--train-limit", str(train_limit)] if train_limit else []
    args += ["--test-limit", str(test_limit)] if test_limit else []
    args += ["--data-dir", str(data_dir)] if data_dir else []
    return args


@app.command("api")
def bench_api(
    runs: int = typer.Option(10_000, help="Synthetic runs in the store."),
    epochs: int = typer.Option(100, help="Epochs per synthetic run."),
    requests: int = typer.Option(50, help="Timed requests per route after one cold request, then as many "
                                          "revalidations (If-None-Match: 304)."),
    keep: Optional[Path] = typer.Option(None, help="Build the synthetic store here and keep it."),
    results_dir: Optional[str] = typer.Option(None, "--results-dir", help="s3://bucket/prefix: publish the store "
                                              "there and serve it from the bucket (default: a local folder)."),
):
    """Build a SYNTHETIC store (runs x epochs rows, not trained), serve it, print p50/p95 latency per route."""
    epochs_bound = bounds("epochs")  # a synthetic run's epochs: what a real run's may be
    if not (1 <= runs <= 1_000_000 and epochs_bound["ge"] <= epochs <= epochs_bound["le"] and 1 <= requests <= 10_000):
        raise StudyError(f"--runs 1..1000000, --epochs {epochs_bound['ge']}..{epochs_bound['le']}, --requests 1..10000")
    if results_dir is not None and store.results_location(results_dir).is_local:
        raise StudyError(f"--results-dir: give s3://bucket/prefix (got {results_dir!r}); a local store is --keep")
    from .bench.api import bench_api as run_bench_api  # FastAPI and the app: only this command

    run_bench_api(runs=runs, epochs=epochs, requests=requests, keep=keep, bucket=results_dir)


@app.command("data")
def bench_data(path: Path = typer.Argument(..., help="Your data set: a folder PATH/train/<class>/*, "
                                                     "PATH/test/<class>/* (or an .npz)."),
               as_json: bool = AsJson, save: Optional[Path] = Save):
    """Decode PATH as a first run would (in a fresh cache) and load it as the second run does: the decode rate
    (images/s) and the second run's cached load time."""
    from .bench.data import bench_data as run_bench_data, report

    _emit(run_bench_data(path), report, as_json, save)
