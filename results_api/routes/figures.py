"""GET /figures/{name}.png|svg. A figure is drawn once per (generation, name, parameters): results_api/cache.py
keeps every answer of these routes, and a new snapshot from a running job makes a new key."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, HTTPException, Path as PathParam, Query
from fastapi.responses import Response

from ...core.config import bounds
from ...core.vocab import Dataset
from .. import figures, queries
from ..cache import CachedRoute
from .common import ERRORS, RunIdQuery, StoreDep, content

FIGURE_DOC = ("figure name: " + ", ".join(figures.FIGURES) + ". `dataset` and `epochs` (budget) select runs; "
              "`run_id` picks the run of `confusion` (default: the latest completed).")

router = APIRouter(route_class=CachedRoute)


def figure(db: queries.Store, name: str, fmt: str, dataset, epochs, run_id) -> Response:
    if name not in figures.FIGURES:
        raise HTTPException(404, f"no figure {name[:80]!r}; figures: {', '.join(figures.FIGURES)}")
    try:
        body = figures.render(name, fmt, db, dataset=dataset, epochs=epochs, run_id=run_id)
    except figures.FigureUnavailable as e:
        raise HTTPException(404, str(e)) from None
    return Response(body, media_type=figures.FORMATS[fmt])


def figure_route(fmt: str):
    def route(db: StoreDep,
              name: str = PathParam(..., max_length=200, json_schema_extra={"enum": list(figures.FIGURES)}),
              dataset: Optional[Dataset] = None, epochs: Optional[int] = Query(None, **bounds("epochs")),
              run_id: Optional[str] = RunIdQuery):
        return figure(db, name, fmt, dataset, epochs, run_id)
    return route


for _fmt in figures.FORMATS:
    router.get(f"/figures/{{name}}.{_fmt}", response_class=Response, summary=f"a figure as {_fmt.upper()}",
               description=FIGURE_DOC, responses={200: content(figures.FORMATS[_fmt]), **ERRORS},
               name=f"figure_{_fmt}")(figure_route(_fmt))
