"""A sweep's state, from the store alone: each run's (completed, running, interrupted, failed, missing) and each
cell's, whichever engine or process trained it."""

from __future__ import annotations

from ..core import store
from ..core.config import RunConfig
from ..core.lease import read_holder
from ..core.records import RunRecord
from ..core.storage import Storage
from .sweep import Cell, Sweep

STATES = ("completed", "running", "interrupted", "failed", "missing")
CELL_STATES = ("completed", "running", "partial", "interrupted", "failed", "missing")


def run_state(results: Storage, cfg: RunConfig) -> tuple[str, RunRecord | None]:
    """(state, the run's `runs` record or None). States: see STATES.

    - completed / failed / interrupted: as the run's shard says (interrupted: stopped on a signal, resumable);
    - running: the shard says running and a live process holds the run's lease (core.lease): same host and its
      pid alive, or a fresh heartbeat; without one it is interrupted (killed, preempted, node lost);
    - missing: never started (or nothing stored yet)."""
    shard = store.read_shard(results, cfg.run_id)
    if shard is None:
        return ("interrupted" if store.checkpoint_exists(results, cfg.run_id) else "missing"), None
    row = shard.run
    if row.status == "running":
        holder = read_holder(store.run_storage(results, cfg.run_id))
        return ("running" if holder is not None and holder.alive() else "interrupted"), row
    return row.status, row


def cell_state(run_states: list[str]) -> str:
    """A cell's state from its runs': completed (all), running (any), failed (any), missing (none started),
    partial (some completed, the rest never started: seeds added), else interrupted (resumable)."""
    kinds = set(run_states)
    if kinds == {"completed"}:
        return "completed"
    for state in ("running", "failed"):
        if state in kinds:
            return state
    if kinds == {"missing"}:
        return "missing"
    return "partial" if kinds == {"completed", "missing"} else "interrupted"


def states(sweep: Sweep, results: Storage) -> list[tuple[Cell, str, list[tuple[RunConfig, str, RunRecord | None]]]]:
    """(cell, its state, [(run, its state, its record)]) for every cell."""
    out = []
    for cell in sweep.cells:
        runs = [(cfg, *run_state(results, cfg)) for cfg in cell.runs]
        out.append((cell, cell_state([r[1] for r in runs]), runs))
    return out
