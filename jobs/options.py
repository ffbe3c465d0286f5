"""The Typer options and output helpers that several commands share (a leaf: imports only core's vocabulary)."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from ..core.store import default_results_dir
from ..core.vocab import DEVICES, PRECISIONS, check_choice

ResultsDir = typer.Option(None, "--results-dir", envvar="RESNET_STUDY_RESULTS", show_default="./results",
                          help="Results store directory (shards + results.duckdb).")
DataDir = typer.Option(None, "--data-dir", envvar="RESNET_STUDY_DATA", show_default="./data",
                       help="Data sets in torchvision's layouts: cifar-10-batches-py/, FashionMNIST/raw/.")
Device = typer.Option("auto", help=f"{', '.join(DEVICES)}.")
Precision = typer.Option("auto", help=f"{', '.join(PRECISIONS)}: auto is bf16 autocast on CUDA and on CPUs with "
                                      "Intel AMX, else fp32. Like --device, not part of the run id.")
Compile = typer.Option(False, "--compile", help="torch.compile the model (pays on long GPU runs).")
Download = typer.Option(False, "--download", help="Allow a torchvision download into --data-dir.")
Progress = typer.Option("auto", help="auto (bar on a terminal, JSON lines otherwise), bar or json.")
Format = typer.Option("table", "--format", help="table, csv or json.")
Threads = typer.Option(None, min=1, show_default="the CPUs this process may use",
                       help="Intra-op CPU threads [default: OMP_NUM_THREADS, else the smallest of the affinity mask, "
                            "the cgroup CPU quota and the Kubernetes CPU request]. Recorded per run.")
IfRunning = typer.Option("wait", help="When another process already trains this run: wait for it (then resume or "
                                      "report it completed), or exit (code 3).")
StrictResume = typer.Option(False, "--strict-resume", help="Refuse (exit 2) to resume a checkpoint made by other "
                                                           "code or on other data; without it the change is logged "
                                                           "and recorded per epoch.")
TokenFile = typer.Option(None, "--token-file", envvar="RESNET_STUDY_API_TOKEN_FILE", show_default=False,
                         help="File holding the service's bearer token (a mounted Kubernetes Secret) [default: "
                              "$RESNET_STUDY_API_TOKEN_FILE, else the token in $RESNET_STUDY_API_TOKEN].")
ApiUrl = typer.Option(None, "--url", show_default=False,
                      help="Ask a running `resnet-study serve` at this address (e.g. http://localhost:8000) instead "
                           "of opening a store; its token: $RESNET_STUDY_API_TOKEN or --token-file.")
PROGRESS_MODES = ("auto", "bar", "json")
IF_RUNNING = ("wait", "exit")
FORMATS = ("table", "csv", "json")


def results_dir_or_default(results_dir: Optional[Path]) -> Path:
    return Path(results_dir) if results_dir else default_results_dir()


def check_option(option: str, value: Optional[str], choices: tuple[str, ...]) -> None:
    """core.vocab.check_choice for an option that may be left out (None): one wording for every choice error."""
    if value is not None:
        check_choice(option, option.removeprefix("--").replace("-", " "), value, choices)


def print_rows(columns: list[str], rows: list[tuple], fmt: str, title: str | None = None) -> None:
    check_option("--format", fmt, FORMATS)
    if fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        w.writerows(rows)
    elif fmt == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns, title=title)
        for r in rows:
            table.add_row(*("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in r))
        Console(width=max(120, os.get_terminal_size(0).columns if sys.stdout.isatty() else 200)).print(table)
