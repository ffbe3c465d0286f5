"""GET /healthz: liveness and the number of runs; never behind the token (probes carry none)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from .. import queries
from .common import StoreDep

router = APIRouter()


class Health(BaseModel):
    status: Literal["ok"]
    runs: int


@router.get("/healthz", response_model=Health, summary="liveness and the number of runs in the store")
def healthz(db: StoreDep):
    return {"status": "ok", "runs": queries.count_runs(db)}
