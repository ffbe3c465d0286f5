"""GET /figures/{name}.png|svg. Figures are cached per (figure, format, parameters, data version): a repeated
request costs a dict lookup, and a new snapshot from a running job makes a new key."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, HTTPException, Path as PathParam, Query, Request
from fastapi.responses import Response

from ...core.vocab import Dataset
from .. import figures, queries
from .common import ERRORS, RUN_ID_PATTERN, StoreDep, content

FIGURE_CACHE_SIZE = 256
FIGURE_DOC = ("figure name: " + ", ".join(figures.FIGURES) + ". `dataset` and `epochs` (budget) select runs; "
              "`run_id` picks the run of `confusion` (default: the latest completed).")

router = APIRouter()


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


def get_cache(request: Request) -> FigureCache:
    return request.app.state.figure_cache


CacheDep = Annotated[FigureCache, Depends(get_cache)]


def figure(db: queries.Store, cache: FigureCache, name: str, fmt: str, dataset, epochs, run_id) -> Response:
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


def figure_route(fmt: str):
    def route(db: StoreDep, cache: CacheDep,
              name: str = PathParam(..., max_length=200, json_schema_extra={"enum": list(figures.FIGURES)}),
              dataset: Optional[Dataset] = None, epochs: Optional[int] = Query(None, ge=1, le=10_000),
              run_id: Optional[str] = Query(None, max_length=200, pattern=RUN_ID_PATTERN)):
        return figure(db, cache, name, fmt, dataset, epochs, run_id)
    return route


for _fmt in figures.FORMATS:
    router.get(f"/figures/{{name}}.{_fmt}", response_class=Response, summary=f"a figure as {_fmt.upper()}",
               description=FIGURE_DOC, responses={200: content(figures.FORMATS[_fmt]), **ERRORS},
               name=f"figure_{_fmt}")(figure_route(_fmt))
