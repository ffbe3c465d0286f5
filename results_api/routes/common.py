"""What the routers share: the store (one per app, as a dependency, pinned to one generation per request), the
templates, the run id parameter, the documented error responses and the CSV writer of row lists."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Literal, get_args

from fastapi import Depends, Path as PathParam, Query, Request
from fastapi.responses import PlainTextResponse
from jinja2 import Environment, PackageLoader

from .. import queries

RUN_ID_MAX = 200
RUN_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{RUN_ID_MAX - 1}}}$"
TEMPLATES = Environment(loader=PackageLoader("resnet_study.results_api", "templates"), autoescape=True)
ERRORS = {404: {"description": "unknown run or figure"}, 422: {"description": "invalid parameter"}}
CSV_TOO = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **ERRORS}
RunIdPath = PathParam(..., max_length=RUN_ID_MAX, pattern=RUN_ID_PATTERN, description="a run id, as in GET /runs")
RunIdQuery = Query(None, max_length=RUN_ID_MAX, pattern=RUN_ID_PATTERN)
JsonCsv = Literal["json", "csv"]
FormatJsonCsv = Query("json", alias="format", description=" or ".join(get_args(JsonCsv)))


def get_store(request: Request) -> queries.Store:
    """The app's store as this request reads it: one generation for all its queries (results_api/cache.py keeps the
    answer under it)."""
    return request.app.state.store.pinned()


StoreDep = Annotated[queries.Store, Depends(get_store)]


def content(*types: str, description: str = "") -> dict:
    return {"description": description, "content": {t: {"schema": {"type": "string"}} for t in types}}


def csv_response(rows: list[dict], columns) -> PlainTextResponse:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    w.writerows([r.get(c) for c in columns] for r in rows)
    return PlainTextResponse(out.getvalue(), media_type="text/csv")
