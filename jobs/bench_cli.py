"""`resnet-study bench train`: training throughput of the model alone, this project's loop and the classic peer.

    resnet-study bench train --device cpu --n 3 --dataset fashion-mnist
    resnet-study bench train --device cpu --n 3 --dataset fashion-mnist --augment paper,report --json > bench.json
    resnet-study bench train --device cpu --n 18 --no-classic --steps 5 --rounds 1   # ResNet-110 memory check

What is measured, and how, is in core/bench.py; measured figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def register(app, results_app, sweep_app, bench_app) -> None:
    from jobs.cli import DataDir

    @bench_app.command("train")
    def bench_train(
        device: str = typer.Option("auto", help="auto, cpu or cuda."),
        n: int = typer.Option(3, help="Blocks per stack: ResNet-(6n+2)."),
        shortcut: str = typer.Option("A", help="A, B or none."),
        dataset: str = typer.Option("fashion-mnist", help="fashion-mnist or cifar10 (generated CIFAR-10-shaped "
                                                          "images where CIFAR-10 is absent)."),
        augment: str = typer.Option("paper", help="Preset(s) for (b) and (c), comma-separated: paper, report, none."),
        batch_size: int = typer.Option(128, help="Training batch size, the same for every pipeline."),
        steps: int = typer.Option(12, help="Timed steps per pipeline per round."),
        warmup: int = typer.Option(4, help="Untimed steps per pipeline before each round's timed steps."),
        rounds: int = typer.Option(5, help="Rounds; pipelines interleave within a round; the median is reported."),
        workers: int = typer.Option(2, help="DataLoader worker processes of the classic pipeline (c)."),
        eval_images: int = typer.Option(5000, help="Test images for the evaluation throughput."),
        threads: Optional[int] = typer.Option(None, help="torch.set_num_threads [default: torch's, one per core]."),
        compile: bool = typer.Option(False, "--compile", help="torch.compile the model of (a) and (b)."),
        precision: str = typer.Option("auto", help="Of (a) and (b): auto (as `train`), fp32 or bf16. (c) is fp32."),
        classic: bool = typer.Option(True, "--classic/--no-classic", help="Run the classic pipeline (c)."),
        seed: int = typer.Option(0, help="Initial weights and data order."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
        save: Optional[Path] = typer.Option(None, help="Also write the results as JSON to this file."),
        data_dir: Optional[Path] = DataDir,
    ):
        """Measure training img/s side by side: (a) model-only, (b) this project's loop, (c) the classic peer."""
        from core import StudyError
        from core.bench import BenchOptions, format_report, run_bench

        if shortcut not in ("A", "B", "none"):
            raise StudyError(f"--shortcut: use A, B or none (got {shortcut!r})")
        if n < 1 or batch_size < 1 or eval_images < 1 or workers < 0:
            raise StudyError("--n, --batch-size and --eval-images must be >= 1, --workers >= 0")
        presets = [p.strip() for p in augment.split(",") if p.strip()]
        if not presets:
            raise StudyError("--augment: name at least one preset (paper, report, none)")
        opts = BenchOptions(device=device, n=n, shortcut=shortcut, dataset=dataset, augment=presets,
                            batch_size=batch_size, steps=steps, warmup=warmup, rounds=rounds, workers=workers,
                            eval_images=eval_images, threads=threads, compile=compile, precision=precision,
                            classic=classic, seed=seed, data_dir=data_dir)
        res = run_bench(opts, log=lambda msg: print(msg, file=sys.stderr, flush=True))
        res["command"] = " ".join(["resnet-study", *sys.argv[1:]])
        if save:
            save.parent.mkdir(parents=True, exist_ok=True)
            save.write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps(res, indent=1) if as_json else format_report(res))
