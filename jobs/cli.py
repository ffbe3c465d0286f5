"""`resnet-study`: one configured experiment per job, plus sweeps, the results store, the service and benchmarks.

    resnet-study train --n 7 --dataset cifar10            # one run; the same command again resumes it
    resnet-study model --n 18 --json                      # layers and parameters
    resnet-study results query "SELECT * FROM runs"       # read-only SQL over the store
    resnet-study sweep local jobs/demo.yaml --parallel 2  # a whole study as local processes
    resnet-study serve --port 8000                        # the read-only results service

Every problem the user can fix is reported as one line on stderr with exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from ..core import StudyError, runtime
from ..core.config import ExperimentConfig
from ..core.lease import RunBusy
from ..core.vocab import layers
from . import bench_cli, results_cli, sweep_cli
from .options import IF_RUNNING, PROGRESS_MODES, Compile, DataDir, Device, Download, IfRunning, Precision, \
    Progress, ResultsDir, StrictResume, Threads, check_option, results_dir_or_default

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on plain click
    from click import exceptions as click_exc

app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})


def config_error_line(e: ValidationError) -> str:
    """The first pydantic error as `--option: message`, the way the user typed it."""
    err = e.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a rule across fields: the message names them
        return msg
    return f"--{str(err['loc'][0]).replace('_', '-')}: {msg} (got {err['input']!r})"


def parse_int_list(text: Optional[str], option: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise StudyError(f"{option} takes comma-separated epoch numbers, e.g. {option} 82,123 (got {text!r})") from None


# ---------------------------------------------------------------- train


@app.command()
def train(
    n: int = typer.Option(3, help="Blocks per stack: ResNet-(6n+2). n=3,5,7,9,18 give ResNet-20/32/44/56/110."),
    shortcut: str = typer.Option("A", help="A (zero-pad identity), B (1x1 projection) or none (plain net)."),
    dataset: str = typer.Option("cifar10", help="cifar10 or fashion-mnist."),
    epochs: int = typer.Option(20, help="Epoch budget; the lr schedule scales with it."),
    augment: str = typer.Option("paper", help="paper (pad+crop+flip), report (the original study's), none."),
    seed: int = typer.Option(0, help="Seeds init, data order, augmentation and the validation split."),
    batch_size: int = typer.Option(128, help="Training batch size."),
    lr: float = typer.Option(0.1, help="Initial learning rate."),
    milestones: Optional[str] = typer.Option(None, help="Epochs after which lr /= 10, e.g. 82,123 (default: 50 % and 75 % of --epochs)."),
    warmup_epochs: int = typer.Option(0, help="Train the first K epochs at lr/10 (the paper's n=18 warm-up)."),
    val_split: int = typer.Option(0, help="Hold out K training images, stratified (paper: 5000)."),
    train_limit: Optional[int] = typer.Option(None, help="Use only the first K training images."),
    test_limit: Optional[int] = typer.Option(None, help="Use only the first K test images."),
    run_name: Optional[str] = typer.Option(None, help="Label for the run id (letters, digits, . _ -)."),
    device: str = Device,
    compile: bool = Compile,
    precision: str = Precision,
    threads: Optional[int] = Threads,
    if_running: str = IfRunning,
    strict_resume: bool = StrictResume,
    download: bool = Download,
    progress: str = Progress,
    data_dir: Optional[Path] = DataDir,
    results_dir: Optional[Path] = ResultsDir,
):
    """Train one experiment (or resume it, or report that it is finished) and store its results."""
    try:
        cfg = ExperimentConfig(
            n=n, shortcut=shortcut, dataset=dataset, epochs=epochs, augment=augment, seed=seed, batch_size=batch_size,
            lr=lr, milestones=parse_int_list(milestones, "--milestones"), warmup_epochs=warmup_epochs,
            val_split=val_split, train_limit=train_limit, test_limit=test_limit, run_name=run_name,
        )
    except ValidationError as e:
        raise StudyError(config_error_line(e)) from None
    check_option("--progress", progress, PROGRESS_MODES)
    check_option("--if-running", if_running, IF_RUNNING)
    from ..core.train import RunOptions, run  # torch: imported only by the commands that train

    opts = RunOptions(results_dir=results_dir_or_default(results_dir), data_dir=data_dir, device=device,
                      download=download, progress=progress, compile=compile, precision=precision, threads=threads,
                      if_running=if_running, strict_resume=strict_resume)
    run(cfg, opts, log=lambda msg: print(msg, file=sys.stderr))


# ---------------------------------------------------------------- model


@app.command()
def model(
    n: int = typer.Option(3, help="Blocks per stack."),
    shortcut: str = typer.Option("A", help="A, B or none."),
    as_json: bool = typer.Option(False, "--json", help='Print {"layers": ..., "params": ...}.'),
):
    """Print the layer count (6n+2) and parameter count of ResNet-(6n+2)."""
    from ..core.model import param_count, resnet

    try:
        net = resnet(n, shortcut)
    except ValueError as e:
        raise StudyError(f"{e}; see resnet-study model --help") from None
    info = {"layers": layers(n), "params": param_count(net)}
    if as_json:
        print(json.dumps(info))
    else:
        print(f"ResNet-{info['layers']} (n={n}, shortcut {shortcut}): {info['layers']} layers, "
              f"{info['params']:,} parameters ({info['params'] / 1e6:.2f} M)")


# ---------------------------------------------------------------- the sub-apps, composed here

app.add_typer(results_cli.results_app, name="results")
app.command("serve")(results_cli.serve)
app.command("report")(results_cli.report)
app.add_typer(sweep_cli.app, name="sweep")
app.add_typer(bench_cli.app, name="bench")


def main() -> None:
    """Console entry point: user errors as one line on stderr, exit code 2 (3: the run is busy with --if-running
    exit); no tracebacks for them."""
    runtime.passive_waits()  # before anything imports torch
    try:
        code = app(standalone_mode=False)
    except RunBusy as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except click_exc.NoArgsIsHelpError:  # the help was printed already
        sys.exit(2)
    except click_exc.UsageError as e:
        hint = f"; see '{e.ctx.command_path} --help'" if e.ctx else ""
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
