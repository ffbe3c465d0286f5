"""GET /runs and one run's record, epochs and confusion rows; the response models are core.records' (one name per
concept, end to end)."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, HTTPException, Query
from pydantic import create_model

from ...core.config import bounds
from ...core.records import CONFUSION_COLUMNS, EPOCH_COLUMNS, ConfusionRecord, EpochRecord, RunRecord
from ...core.vocab import Augment, Dataset, Shortcut, Status
from .. import queries
from ..cache import CachedRoute
from .common import CSV_TOO, ERRORS, FormatJsonCsv, JsonCsv, RunIdPath, StoreDep, csv_response

router = APIRouter(route_class=CachedRoute)

# The run list leaves out the config JSON (GET /runs/{run_id} has it).
RunSummary = create_model("RunSummary", **{name: (f.annotation, f) for name, f in RunRecord.model_fields.items()
                                           if name in queries.RUN_LIST_COLUMNS})


@router.get("/runs", response_model=list[RunSummary], responses=CSV_TOO,
            summary="runs with their config and final metrics (errors as fractions)")
def runs(db: StoreDep, dataset: Optional[Dataset] = None, n: Optional[int] = Query(None, **bounds("n")),
         shortcut: Optional[Shortcut] = None, epochs: Optional[int] = Query(None, **bounds("epochs")),
         augment: Optional[Augment] = None, status: Optional[Status] = None,
         limit: int = Query(10_000, ge=1, le=100_000), offset: int = Query(0, ge=0, le=10**12),
         fmt: JsonCsv = FormatJsonCsv):
    filters = {"dataset": dataset, "n": n, "shortcut": shortcut, "epochs": epochs, "augment": augment,
               "status": status}
    rows = queries.list_runs(db, filters, limit, offset)
    return csv_response(rows, queries.RUN_LIST_COLUMNS) if fmt == "csv" else rows


def one_run(db: queries.Store, run_id: str) -> dict:
    found = queries.get_run(db, run_id)
    if not found:
        raise HTTPException(404, f"no run {run_id!r}; GET /runs lists them")
    return found[0]


@router.get("/runs/{run_id}", response_model=RunRecord, responses=ERRORS, summary="one run, with its full config")
def run(db: StoreDep, run_id: str = RunIdPath):
    return one_run(db, run_id)


@router.get("/runs/{run_id}/epochs", response_model=list[EpochRecord], responses=CSV_TOO,
            summary="one run's per-epoch rows")
def epochs_of(db: StoreDep, run_id: str = RunIdPath, fmt: JsonCsv = FormatJsonCsv):
    one_run(db, run_id)
    rows = queries.run_epochs(db, run_id)
    return csv_response(rows, EPOCH_COLUMNS) if fmt == "csv" else rows


@router.get("/runs/{run_id}/confusion", response_model=list[ConfusionRecord], responses=CSV_TOO,
            summary="one run's confusion matrix rows (test, and val when held out); empty until completed")
def confusion_of(db: StoreDep, run_id: str = RunIdPath, fmt: JsonCsv = FormatJsonCsv):
    one_run(db, run_id)
    rows = queries.run_confusion(db, run_id)
    return csv_response(rows, CONFUSION_COLUMNS) if fmt == "csv" else rows
