"""CLI commands of the results service, registered into `resnet-study` by jobs/cli.py:

    resnet-study serve --results-dir results --host 127.0.0.1 --port 8000
    resnet-study results table [--dataset fashion-mnist] [--metric test_error] [--format table|csv|markdown]
    resnet-study report --out report/
    resnet-study bench api [--runs 10000] [--epochs 100] [--requests 50]
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Optional

import typer

from core import StudyError

DATASETS = ("cifar10", "fashion-mnist")
METRICS = ("test_error", "train_seconds")


def _results_dir(results_dir: Optional[Path]) -> Path:
    from jobs.cli import results_dir_or_default

    return results_dir_or_default(results_dir)


def _check_choice(option: str, value: Optional[str], choices) -> None:
    if value is not None and value not in choices:
        raise StudyError(f"{option}: use {' or '.join(choices)} (got {value!r})")


def _check_port_free(host: str, port: int) -> None:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise StudyError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port or --host") from None


def serve(results_dir: Path, host: str, port: int) -> None:
    import uvicorn

    from results_api.app import create_app

    if not results_dir.is_dir():
        raise StudyError(f"no results dir at {results_dir}; run `resnet-study train --results-dir {results_dir}` "
                         f"first or pass --results-dir")
    if not 0 < port < 65536:
        raise StudyError(f"--port: use 1-65535 (got {port})")
    _check_port_free(host, port)
    print(f"serving {results_dir} read-only at http://{host}:{port}/ (API docs at /docs)", file=sys.stderr)
    uvicorn.run(create_app(results_dir), host=host, port=port, log_level="warning", access_log=False)


def print_wide(header: list[str], rows: list[list[str]], title: str) -> None:
    """A rich table whose labels never wrap: on a terminal, cells fold to fit; piped, lines are as long as needed."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, no_wrap=i < 3, justify="left" if i < 3 else "right")
    for r in rows:
        table.add_row(*r)
    Console(width=None if sys.stdout.isatty() else 100_000).print(table)


def register(app: typer.Typer, results_app: typer.Typer, sweep_app: typer.Typer, bench_app: typer.Typer) -> None:
    from jobs.cli import ResultsDir

    @app.command("serve")
    def serve_cmd(
        results_dir: Optional[Path] = ResultsDir,
        host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 inside a container)."),
        port: int = typer.Option(8000, help="TCP port."),
    ):
        """Serve the results read-only over HTTP: JSON/CSV tables, figures, a dashboard at /, OpenAPI at /docs."""
        serve(_results_dir(results_dir), host, port)

    @results_app.command("table")
    def table_cmd(
        dataset: Optional[str] = typer.Option(None, help="cifar10 or fashion-mnist [default: both]."),
        metric: Optional[str] = typer.Option(None, help="test_error or train_seconds [default: both]."),
        fmt: str = typer.Option("table", "--format", help="table, csv (one line per cell) or markdown."),
        results_dir: Optional[Path] = ResultsDir,
    ):
        """Print the comparison table: mean ± std (runs) per depth x epochs, beside the published numbers."""
        from core import store
        from results_api import queries, tables

        _check_choice("--dataset", dataset, DATASETS)
        _check_choice("--metric", metric, METRICS)
        _check_choice("--format", fmt, ("table", "csv", "markdown"))
        rdir = _results_dir(results_dir)
        if not rdir.is_dir():
            raise StudyError(f"no results dir at {rdir}; run `resnet-study train` first or pass --results-dir")
        if os.access(rdir, os.W_OK):
            store.sync(rdir)  # like `results query`: include shards written since the last snapshot
        table = queries.comparison(queries.Store(rdir), dataset, metric)
        if fmt == "csv":
            sys.stdout.write(tables.as_long_csv(table))
        elif fmt == "markdown":
            sys.stdout.write(tables.as_markdown(table))
        else:
            print_wide(*tables.wide(table, compact=True), title=f"Comparison table ({table.runs_counted} completed runs)")

    @app.command("report")
    def report_cmd(
        out: Path = typer.Option(..., "--out", help="Directory for index.html, README.md, figures/, CSV files."),
        results_dir: Optional[Path] = ResultsDir,
        max_confusion: int = typer.Option(24, help="Confusion matrices for at most this many (latest) runs."),
    ):
        """Write the whole study as a static report: table, curves, confusion matrices, the paper, every config."""
        from results_api.report import write_report

        if max_confusion < 0:
            raise StudyError(f"--max-confusion: use 0 or more (got {max_confusion})")
        written = write_report(_results_dir(results_dir), out, max_confusion=max_confusion)
        print(f"report written: {written / 'index.html'} and {written / 'README.md'}")

    @bench_app.command("api")
    def bench_api_cmd(
        runs: int = typer.Option(10_000, help="Synthetic runs in the store."),
        epochs: int = typer.Option(100, help="Epochs per synthetic run."),
        requests: int = typer.Option(50, help="Timed requests per route (after one untimed-cache cold request)."),
        keep: Optional[Path] = typer.Option(None, help="Build the synthetic store here and keep it."),
    ):
        """Build a SYNTHETIC store (runs x epochs rows, not trained), serve it, print p50/p95 latency per route."""
        from results_api.bench import bench_api

        if not (1 <= runs <= 1_000_000 and 1 <= epochs <= 10_000 and 1 <= requests <= 10_000):
            raise StudyError("--runs 1..1000000, --epochs 1..10000, --requests 1..10000")
        bench_api(runs=runs, epochs=epochs, requests=requests, keep=keep)
