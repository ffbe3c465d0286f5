"""GET /healthz: liveness and the number of runs; never behind the token (probes carry none). Kept per generation
like every answer: a probe still opens each new generation (the store dependency), so an unreadable one is 503."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from .. import queries
from ..cache import CachedRoute
from .common import StoreDep

router = APIRouter(route_class=CachedRoute)


class Health(BaseModel):
    status: Literal["ok"]
    runs: int


@router.get("/healthz", response_model=Health, summary="liveness and the number of runs in the store")
def healthz(db: StoreDep):
    return {"status": "ok", "runs": queries.count_runs(db)}
