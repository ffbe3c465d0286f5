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

from ..core import EXIT_SIGINT, EXIT_USER_ERROR, StudyError, Stopped, runtime
from ..core.vocab import SHORTCUTS, check_choice, layers
from . import bench_cli, data_cli, packing, results_cli, sweep_cli
from .options import experiment_parameters, experiments_from, run_option_parameters, run_options_from, \
    with_parameters

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on plain click
    from click import exceptions as click_exc

# Plain click help (rich_markup_mode=None): Rich's option table cuts long option names at 80 columns
# (`--backoff-limit-per-in…`) and keeps a docstring's line breaks; click's never cuts a name and reflows sentences.
app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})


# ---------------------------------------------------------------- train


def train(**values):
    """Train one experiment (or resume it, or report that it is finished) and store its results; with --seeds,
    all those seeds of it (a cell), each its own run: on a CPU in this process, from one copy of the data set; on
    CUDA a process per run, sharing the GPU (--cell-layout)."""
    cfgs = experiments_from(values)
    opts = run_options_from(values)
    packing.train_cell(cfgs, opts, log=lambda msg: print(msg, file=sys.stderr, flush=True))


app.command("train")(with_parameters(train, experiment_parameters() + run_option_parameters()))


# ---------------------------------------------------------------- model


@app.command()
def model(
    n: int = typer.Option(3, help="Blocks per stack."),
    shortcut: str = typer.Option("A", help="A, B or none."),
    as_json: bool = typer.Option(False, "--json", help='Print {"layers": ..., "params": ...}.'),
):
    """Print the layer count (6n+2) and parameter count of ResNet-(6n+2)."""
    from ..core.model import param_count, resnet

    check_choice("--shortcut", "shortcut", shortcut, SHORTCUTS)
    if n < 1:
        raise StudyError(f"--n: use a block count >= 1 (got {n}); see resnet-study model --help")
    net = resnet(n, shortcut)
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
app.add_typer(data_cli.app, name="data")


def main() -> None:
    """Console entry point: an error the user can act on is one line on stderr (no traceback) and its exit code
    (core.EXIT_CODES, the one table)."""
    runtime.passive_waits()  # before anything imports torch
    try:
        code = app(standalone_mode=False)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Stopped as e:
        print(f"{e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click_exc.NoArgsIsHelpError:  # the help was printed already
        sys.exit(EXIT_USER_ERROR)
    except click_exc.UsageError as e:
        hint = f"; see '{e.ctx.command_path} --help'" if e.ctx else ""
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except typer.Abort:
        print("error: interrupted", file=sys.stderr)
        sys.exit(EXIT_SIGINT)
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(EXIT_SIGINT)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
