"""`resnet-study results query|sync|table|compare`, `resnet-study serve` and `resnet-study report`: the results store,
the comparison table and its comparisons, the read-only service and the static report, from the command line.

    resnet-study results query "SELECT run_id, test_error FROM runs"
    resnet-study results table [--dataset fashion-mnist] [--metric test_error_pct] [--all] [--format table|csv|markdown]
    resnet-study results compare [--dataset cifar10] [--metric test_error_pct] [--format table|csv|json|markdown]
    resnet-study results table --url http://localhost:8000          # the same table, from a running service
    resnet-study serve --results-dir results --host 127.0.0.1 --port 8000
    resnet-study report --out report/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ..core import StudyError, datasets, store
from ..core.storage import Storage
from ..results_api import queries, tables
from ..results_api.models import METRICS, CompareRow, ComparisonTable
from .options import FORMATS, ApiUrl, Format, ResultsDir, TokenFile, check_option, print_rows

if TYPE_CHECKING:  # imported where used: httpx and FastAPI's classes cost every other command half a second
    from ..results_api.client import Remote

results_app = typer.Typer(help="Read the results store (DuckDB): SQL queries and the comparison table.",
                          no_args_is_help=True)


def _existing_results_dir(results_dir: Optional[str]) -> Storage:
    """The results store (a folder or a bucket), synced with the shards written since the last snapshot when this
    process may write there."""
    results = store.require_results(results_dir)
    if store.can_sync(results):
        store.sync(results)
    return results


def _source(ctx: typer.Context, url: Optional[str], token_file: Optional[Path],
            results_dir: Optional[str]) -> Remote | queries.Store:
    """The running service at --url, else the local store."""
    if url is None:
        return queries.Store(_existing_results_dir(results_dir))
    if ctx.get_parameter_source("results_dir").name == "COMMANDLINE":
        raise StudyError("--url and --results-dir: give one (a service reads its own store)")
    from ..results_api import auth  # FastAPI's security classes: only a command that reads a service needs them
    from ..results_api.client import Remote

    return Remote(url, auth.load_token(token_file))


def _comparison(source: Remote | queries.Store, dataset, metric, all_columns: bool) -> ComparisonTable:
    if isinstance(source, queries.Store):
        return queries.comparison(source, dataset, metric, all_columns)
    return source.comparison(dataset, metric, all_columns)


def _comparisons(source: Remote | queries.Store, dataset, metric: str) -> list[CompareRow]:
    if isinstance(source, queries.Store):
        return queries.comparisons(source, dataset, metric)
    return source.comparisons(dataset, metric)


@results_app.command("query")
def results_query(
    sql: str = typer.Argument(..., help="SQL over the tables runs, epochs, confusion."),
    fmt: str = Format,
    results_dir: Optional[str] = ResultsDir,
):
    """Run read-only SQL over the results store, e.g. "SELECT run_id, test_error FROM runs"."""
    import duckdb

    check_option("--format", fmt, FORMATS)
    con = store.connect_read(_existing_results_dir(results_dir))
    try:
        cur = con.execute(sql)
    except duckdb.Error as e:
        raise StudyError(f"query failed: {str(e).splitlines()[0]}") from None
    columns = [d[0] for d in cur.description] if cur.description else []
    print_rows(columns, cur.fetchall(), fmt)


@results_app.command("sync")
def results_sync(results_dir: Optional[str] = ResultsDir):
    """Rebuild results.duckdb from the run shards (jobs do this themselves; useful after copying shards in)."""
    results = store.results_location(results_dir)
    store.ensure_writable(results)
    done = store.sync(results)
    print(f"{results}: " + ("up to date" if done else "another process is syncing; it will include all shards"))


def print_wide(header: list[str], rows: list[list[str]], title: str, label_columns: int = 3) -> None:
    """A rich table whose labels never wrap: on a terminal, cells fold to fit; piped, lines are as long as needed."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, no_wrap=i < label_columns, justify="left" if i < label_columns else "right")
    for r in rows:
        table.add_row(*r)
    Console(width=None if sys.stdout.isatty() else 100_000).print(table)


@results_app.command("table")
def results_table(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, help="A data set: a built-in, a user data set's stored name "
                                                           "(e.g. my-images@3fa2c1d0) or its path (default: all)."),
    metric: Optional[str] = typer.Option(None, help=f"{' or '.join(METRICS)} (default: both)."),
    all_columns: bool = typer.Option(False, "--all", help="Every published column too, not only measured ones."),
    fmt: str = typer.Option("table", "--format", help="table, csv (one line per cell) or markdown."),
    results_dir: Optional[str] = ResultsDir,
    url: Optional[str] = ApiUrl,
    token_file: Optional[Path] = TokenFile,
):
    """Print the comparison table: each experiment's mean ± 95 % half-width (seeds) per depth x epochs, beside the
    published numbers. A cell holds only runs that differ in nothing but the seed."""
    dataset = datasets.check_name(dataset) if dataset is not None else None
    check_option("--metric", metric, tuple(METRICS))
    check_option("--format", fmt, ("table", "csv", "markdown"))
    table = _comparison(_source(ctx, url, token_file, results_dir), dataset, metric, all_columns)
    if fmt == "csv":
        sys.stdout.write(tables.as_long_csv(table))
    elif fmt == "markdown":
        sys.stdout.write(tables.as_markdown(table))
    else:
        print_wide(*tables.wide(table, compact=True), title=f"Comparison table ({table.runs_counted} completed runs)")


@results_app.command("compare")
def results_compare(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, help="A data set: a built-in, a user data set's stored name "
                                                           "(e.g. my-images@3fa2c1d0) or its path (default: all)."),
    metric: str = typer.Option("test_error_pct", help=f"{' or '.join(METRICS)}."),
    fmt: str = typer.Option("table", "--format", help="table, csv, json or markdown."),
    results_dir: Optional[str] = ResultsDir,
    url: Optional[str] = ApiUrl,
    token_file: Optional[Path] = TokenFile,
):
    """Answer the study's questions with tests: adjacent depths, adjacent epoch budgets, plain vs ResNet, option A
    vs B, measured vs published. Welch's t-test, Holm-adjusted; a cell with one run is never compared."""
    dataset = datasets.check_name(dataset) if dataset is not None else None
    check_option("--metric", metric, tuple(METRICS))
    check_option("--format", fmt, ("table", "csv", "json", "markdown"))
    rows = _comparisons(_source(ctx, url, token_file, results_dir), dataset, metric)
    if fmt == "csv":
        sys.stdout.write(tables.compare_csv(rows))
    elif fmt == "json":
        print(json.dumps(tables.compare_dicts(rows), indent=1))
    elif fmt == "markdown":
        sys.stdout.write(tables.compare_markdown(rows))
    else:
        print_wide(tables.COMPARE_HEADER, tables.compare_wide(rows),
                   title=f"Comparisons of {METRICS[metric]} ({len(rows)})", label_columns=4)
        print(tables.COMPARE_NOTE)


def serve(
    results_dir: Optional[str] = ResultsDir,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 inside a container; any address "
                                               "other machines reach needs a token or --insecure-no-auth)."),
    port: int = typer.Option(8000, help="TCP port."),
    token_file: Optional[Path] = TokenFile,
    insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth",
                                          help="Serve without a token on an address other machines can reach: "
                                               "anyone who reaches it reads every run."),
):
    """Serve the results read-only over HTTP: JSON/CSV tables, figures, a dashboard at /, OpenAPI at /docs. With
    a token ($RESNET_STUDY_API_TOKEN or --token-file), every route but /healthz needs `Authorization: Bearer TOKEN`;
    a browser opens /?token=TOKEN once (a cookie keeps it)."""
    from ..results_api.app import serve as serve_app

    serve_app(store.require_results(results_dir), host, port, token_file, insecure_no_auth)


def report(
    out: Path = typer.Option(..., "--out", help="Directory for index.html, README.md, figures/, CSV files."),
    results_dir: Optional[str] = ResultsDir,
    max_confusion: int = typer.Option(24, help="Confusion matrices for at most this many (latest) runs."),
):
    """Write the whole study as a static report: table, curves, confusion matrices, the paper, every config."""
    from ..results_api.report import write_report  # matplotlib: imported only by the commands that draw

    if max_confusion < 0:
        raise StudyError(f"--max-confusion: use 0 or more (got {max_confusion})")
    written = write_report(store.results_location(results_dir), out, max_confusion=max_confusion)
    print(f"report written: {written / 'index.html'} and {written / 'README.md'}")
