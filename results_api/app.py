"""The read-only results service: JSON / CSV / Markdown / HTML tables, figures and a dashboard over the store.

    resnet-study serve --results-dir results --host 127.0.0.1 --port 8000
    RESNET_STUDY_RESULTS=results python -m uvicorn --factory resnet_study.results_api.app:create_app_from_env
    curl -s localhost:8000/tables/comparison?format=markdown

Read-only by construction: only GET routes exist (anything else is 405), the store is opened read-only through
core.store.StoreReader and never synced from here, request values reach SQL only as bound parameters, column names
come from the store's schema, figure names from a fixed set (anything else is 404). Bad parameters are 422 with a
message. Figures are cached per (figure, parameters, data version): a repeated request costs a dict lookup, and a
new snapshot from a running job makes a new key.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal, Optional

from fastapi import FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from jinja2 import Environment, PackageLoader
from pydantic import BaseModel, Field, create_model

from ..core import StudyError
from ..core.records import CONFUSION_COLUMNS, EPOCH_COLUMNS, ConfusionRecord, EpochRecord, RunRecord
from ..core.store import default_results_dir
from ..core.vocab import Augment, Dataset, Shortcut, Status
from . import figures, queries, stats, tables

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
FIGURE_CACHE_SIZE = 256
DASHBOARD_RUNS = 50
Metric = Literal[tuple(queries.METRICS)]  # type: ignore[valid-type]

# The response models are core.records' (one name per concept, end to end); the run list leaves out the config JSON.
RunSummary = create_model("RunSummary", **{name: (f.annotation, f) for name, f in RunRecord.model_fields.items()
                                           if name in queries.RUN_LIST_COLUMNS})


class Health(BaseModel):
    status: Literal["ok"]
    runs: int


class Cell(BaseModel):
    """One experiment over its seeds (or one published number): see results_api/stats.py."""

    count: int
    mean: float
    std: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    min: float
    max: float


class Column(BaseModel):
    key: str
    layers: int
    epochs: int
    title: str


class ComparisonRow(BaseModel):
    kind: Literal["measured", "reference"]
    dataset: str
    metric: Metric
    label: str
    shortcut: Optional[str] = None
    augment: Optional[str] = None
    variant: Optional[dict[str, Any]] = None
    source: Optional[str] = None
    cells: dict[str, Cell]


class ComparisonTable(BaseModel):
    metrics: dict[str, str]
    columns: list[Column]
    rows: list[ComparisonRow]
    runs_counted: int


class CompareRow(BaseModel):
    dataset: str
    metric: Metric
    kind: Literal[queries.COMPARISON_KINDS]  # type: ignore[valid-type]
    a: str
    b: str
    n_a: Optional[int] = Field(None, description="None: a published number")
    n_b: int
    mean_a: float
    mean_b: float
    diff: float = Field(description="mean_b - mean_a, in the metric's unit")
    diff_ci_low: Optional[float] = None
    diff_ci_high: Optional[float] = None
    p_value: Optional[float] = None
    p_holm: Optional[float] = None
    verdict: Literal[stats.VERDICTS]  # type: ignore[valid-type]
    seeds_for_80pct_power: Optional[int] = None


class FindingOut(BaseModel):
    id: str
    claim: str
    source: str
    dataset: str
    verdict: str
    summary: str
    spec: str
    missing: list[str]
    comparisons: list[CompareRow]


def _content(*types: str, description: str = "") -> dict:
    return {"description": description, "content": {t: {"schema": {"type": "string"}} for t in types}}


ERRORS = {404: {"description": "unknown run or figure"}, 422: {"description": "invalid parameter"}}
CSV_TOO = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **ERRORS}
RunIdPath = PathParam(..., max_length=200, pattern=RUN_ID_PATTERN, description="a run id, as in GET /runs")
FormatJsonCsv = Query("json", alias="format", description="json or csv")


def _csv(rows: list[dict], columns) -> PlainTextResponse:
    import csv
    import io

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    w.writerows([r.get(c) for c in columns] for r in rows)
    return PlainTextResponse(out.getvalue(), media_type="text/csv")


class FigureCache:
    """LRU of rendered figures keyed by (figure, format, parameters, data version)."""

    def __init__(self, size: int = FIGURE_CACHE_SIZE):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def create_app(results_dir: Path) -> FastAPI:
    db = queries.Store(results_dir)
    cache = FigureCache()
    templates = Environment(loader=PackageLoader("resnet_study.results_api", "templates"), autoescape=True)
    app = FastAPI(title="resnet-study results", version="1", description=__doc__.split("\n\n")[0])

    @app.exception_handler(Exception)
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        # Never a bare 500: whatever went wrong reading the store is reported as a temporary unavailability.
        return JSONResponse({"detail": f"results store unavailable: {type(exc).__name__}"}, status_code=503)

    @app.get("/healthz", response_model=Health, summary="liveness and the number of runs in the store")
    def healthz():
        return {"status": "ok", "runs": queries.count_runs(db)}

    @app.get("/runs", response_model=list[RunSummary], responses=CSV_TOO,
             summary="runs with their config and final metrics (errors as fractions)")
    def runs(dataset: Optional[Dataset] = None, n: Optional[int] = Query(None, ge=1, le=500),
             shortcut: Optional[Shortcut] = None, epochs: Optional[int] = Query(None, ge=1, le=10_000),
             augment: Optional[Augment] = None, status: Optional[Status] = None,
             limit: int = Query(10_000, ge=1, le=100_000), offset: int = Query(0, ge=0, le=10**12),
             fmt: Literal["json", "csv"] = FormatJsonCsv):
        filters = {"dataset": dataset, "n": n, "shortcut": shortcut, "epochs": epochs, "augment": augment,
                   "status": status}
        rows = queries.list_runs(db, filters, limit, offset)
        return _csv(rows, queries.RUN_LIST_COLUMNS) if fmt == "csv" else rows

    def one_run(run_id: str) -> dict:
        found = queries.get_run(db, run_id)
        if not found:
            raise HTTPException(404, f"no run {run_id!r}; GET /runs lists them")
        return found[0]

    @app.get("/runs/{run_id}", response_model=RunRecord, responses=ERRORS, summary="one run, with its full config")
    def run(run_id: str = RunIdPath):
        return one_run(run_id)

    @app.get("/runs/{run_id}/epochs", response_model=list[EpochRecord], responses=CSV_TOO,
             summary="one run's per-epoch rows")
    def epochs_of(run_id: str = RunIdPath, fmt: Literal["json", "csv"] = FormatJsonCsv):
        one_run(run_id)
        rows = queries.run_epochs(db, run_id)
        return _csv(rows, EPOCH_COLUMNS) if fmt == "csv" else rows

    @app.get("/runs/{run_id}/confusion", response_model=list[ConfusionRecord], responses=CSV_TOO,
             summary="one run's confusion matrix rows (test, and val when held out); empty until completed")
    def confusion_of(run_id: str = RunIdPath, fmt: Literal["json", "csv"] = FormatJsonCsv):
        one_run(run_id)
        rows = queries.run_confusion(db, run_id)
        return _csv(rows, CONFUSION_COLUMNS) if fmt == "csv" else rows

    @app.get("/tables/comparison", response_model=ComparisonTable,
             responses={200: _content("text/csv", "text/markdown", "text/html"), 422: ERRORS[422]},
             summary="the comparison table: depth x epochs across, data set x metric x variant down, "
                     "with the published reference rows")
    def comparison(dataset: Optional[Dataset] = None, metric: Optional[Metric] = None,
                   all_columns: bool = Query(False, alias="all", description="every published column too"),
                   fmt: Literal["json", "csv", "markdown", "html"] = Query("json", alias="format")):
        table = queries.comparison(db, dataset, metric, all_columns)
        if fmt == "csv":
            return PlainTextResponse(tables.as_long_csv(table), media_type="text/csv")
        if fmt == "markdown":
            return PlainTextResponse(tables.as_markdown(table), media_type="text/markdown")
        if fmt == "html":
            page = templates.get_template("comparison.html").render(title="Comparison table",
                                                                    table=tables.html_context(table))
            return HTMLResponse(page)
        return tables.as_dict(table)

    @app.get("/tables/comparisons", response_model=list[CompareRow],
             responses={200: _content("text/csv", "text/markdown", "text/html"), 422: ERRORS[422]},
             summary="the questions a depth x epochs study asks, each answered with a test: adjacent depths, adjacent "
                     "budgets, plain vs ResNet, option A vs B, measured vs published (Holm-adjusted)")
    def comparisons(dataset: Optional[Dataset] = None, metric: Metric = "test_error_pct",
                    fmt: Literal["json", "csv", "markdown", "html"] = Query("json", alias="format")):
        rows = queries.comparisons(db, dataset, metric)
        if fmt == "csv":
            return PlainTextResponse(tables.compare_csv(rows), media_type="text/csv")
        if fmt == "markdown":
            return PlainTextResponse(tables.compare_markdown(rows), media_type="text/markdown")
        if fmt == "html":
            return HTMLResponse(templates.get_template("comparisons.html").render(
                title="Comparisons", header=tables.COMPARE_HEADER, rows=tables.compare_wide(rows),
                note=tables.COMPARE_NOTE))
        return tables.compare_dicts(rows)

    @app.get("/findings", response_model=list[FindingOut],
             summary="each claim of the original study and of the paper, tested on the store")
    def findings():
        return [tables.finding_dict(f) for f in queries.findings(db)]

    def figure(name: str, fmt: str, dataset, epochs, run_id) -> Response:
        if name not in figures.FIGURES:
            raise HTTPException(404, f"no figure {name[:80]!r}; figures: {', '.join(figures.FIGURES)}")
        params = {"dataset": dataset, "epochs": epochs, "run_id": run_id}
        key = (name, fmt, tuple(sorted(params.items())), db.version)
        body = cache.get(key)
        if body is None:
            try:
                body = figures.render(name, fmt, db, **params)
            except figures.FigureUnavailable as e:
                raise HTTPException(404, str(e)) from None
            cache.put(key, body)
        return Response(body, media_type=figures.FORMATS[fmt])

    figure_doc = ("figure name: " + ", ".join(figures.FIGURES) + ". `dataset` and `epochs` (budget) select runs; "
                  "`run_id` picks the run of `confusion` (default: the latest completed).")
    def figure_route(fmt: str):
        def route(name: str = PathParam(..., max_length=200, json_schema_extra={"enum": list(figures.FIGURES)}),
                  dataset: Optional[Dataset] = None, epochs: Optional[int] = Query(None, ge=1, le=10_000),
                  run_id: Optional[str] = Query(None, max_length=200, pattern=RUN_ID_PATTERN)):
            return figure(name, fmt, dataset, epochs, run_id)
        return route

    for fmt in figures.FORMATS:
        app.get(f"/figures/{{name}}.{fmt}", response_class=Response, summary=f"a figure as {fmt.upper()}",
                description=figure_doc, responses={200: _content(figures.FORMATS[fmt]), **ERRORS},
                name=f"figure_{fmt}")(figure_route(fmt))

    @app.get("/", response_class=HTMLResponse, summary="the dashboard: table, figures, runs")
    def dashboard():
        plain = queries.has_plain_runs(db)
        figs = [name for name in figures.FIGURES if name != "plain-vs-resnet" or plain]
        page = templates.get_template("dashboard.html").render(
            title="resnet-study results", results_dir=str(db.results_dir), total_runs=queries.count_runs(db),
            status_counts=queries.status_counts(db), table=tables.html_context(queries.comparison(db)),
            findings=queries.findings(db),
            runs=queries.recent_runs(db, DASHBOARD_RUNS),
            figures=[{"name": n, "alt": figures.FIGURES[n]} for n in figs])
        return HTMLResponse(page)

    return app


def create_app_from_env() -> FastAPI:
    """The app over $RESNET_STUDY_RESULTS (default ./results): for `uvicorn --factory`."""
    return create_app(default_results_dir())


def _check_port_free(host: str, port: int) -> None:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise StudyError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port or --host") from None


def serve(results_dir: Path, host: str, port: int) -> None:
    """Check the dir and the port (one-line errors), then serve until interrupted."""
    import uvicorn

    if not Path(results_dir).is_dir():
        raise StudyError(f"no results dir at {results_dir}; run `resnet-study train --results-dir {results_dir}` "
                         f"first or pass --results-dir")
    if not 0 < port < 65536:
        raise StudyError(f"--port: use 1-65535 (got {port})")
    _check_port_free(host, port)
    print(f"serving {results_dir} read-only at http://{host}:{port}/ (API docs at /docs)", file=sys.stderr)
    uvicorn.run(create_app(results_dir), host=host, port=port, log_level="warning", access_log=False)
