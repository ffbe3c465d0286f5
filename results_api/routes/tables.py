"""GET /tables/comparison, /tables/comparisons and /findings: the study's answers, as JSON (the models of
results_api/models.py) or rendered by results_api/tables.py as CSV, Markdown and HTML."""

from __future__ import annotations

from typing import Literal, Optional

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, PlainTextResponse

from ...core.vocab import Dataset
from .. import queries, tables
from ..cache import CachedRoute
from ..models import CompareRow, ComparisonTable, FindingOut, Metric
from .common import ERRORS, TEMPLATES, StoreDep, content

router = APIRouter(route_class=CachedRoute)
TableFormat = Literal["json", "csv", "markdown", "html"]


@router.get("/tables/comparison", response_model=ComparisonTable,
            responses={200: content("text/csv", "text/markdown", "text/html"), 422: ERRORS[422]},
            summary="the comparison table: depth x epochs across, data set x metric x variant down, "
                    "with the published reference rows")
def comparison(db: StoreDep, dataset: Optional[Dataset] = None, metric: Optional[Metric] = None,
               all_columns: bool = Query(False, alias="all", description="every published column too"),
               fmt: TableFormat = Query("json", alias="format")):
    table = queries.comparison(db, dataset, metric, all_columns)
    if fmt == "csv":
        return PlainTextResponse(tables.as_long_csv(table), media_type="text/csv")
    if fmt == "markdown":
        return PlainTextResponse(tables.as_markdown(table), media_type="text/markdown")
    if fmt == "html":
        return HTMLResponse(TEMPLATES.get_template("comparison.html").render(title="Comparison table",
                                                                             table=tables.html_context(table)))
    return table


@router.get("/tables/comparisons", response_model=list[CompareRow],
            responses={200: content("text/csv", "text/markdown", "text/html"), 422: ERRORS[422]},
            summary="the questions a depth x epochs study asks, each answered with a test: adjacent depths, adjacent "
                    "budgets, plain vs ResNet, option A vs B, measured vs published (Holm-adjusted)")
def comparisons(db: StoreDep, dataset: Optional[Dataset] = None, metric: Metric = "test_error_pct",
                fmt: TableFormat = Query("json", alias="format")):
    rows = queries.comparisons(db, dataset, metric)
    if fmt == "csv":
        return PlainTextResponse(tables.compare_csv(rows), media_type="text/csv")
    if fmt == "markdown":
        return PlainTextResponse(tables.compare_markdown(rows), media_type="text/markdown")
    if fmt == "html":
        return HTMLResponse(TEMPLATES.get_template("comparisons.html").render(
            title="Comparisons", header=tables.COMPARE_HEADER, rows=tables.compare_wide(rows),
            note=tables.COMPARE_NOTE))
    return rows


@router.get("/findings", response_model=list[FindingOut],
            summary="each claim of the original study and of the paper, tested on the store")
def findings(db: StoreDep):
    return [tables.finding_dict(f) for f in queries.findings(db)]
