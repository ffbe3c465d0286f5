"""Every SQL statement the service runs. User input only ever arrives as bound parameters; column names come from
core.store's schema, never from a request.

The comparison table is the seed report's Table 1 generalised: columns = depth (layers) x epoch budget, rows =
data set x metric x shortcut variant (ResNet option A / option B / plain) x augmentation. A cell is over the
COMPLETED runs of that group (the seeds): mean, sample std when there is more than one run, and the count.
Errors are stored as fractions and shown here in percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from core import store

RUN_LIST_COLUMNS = tuple(c for c in store.RUN_COLUMNS if c != "config")  # the full config JSON: /runs/{run_id}
RUN_FILTERS = ("dataset", "n", "shortcut", "epochs", "augment", "status")
METRICS = {"test_error": "test error (%)", "train_seconds": "training time (s)"}
SHORTCUT_ORDER = {"A": 0, "B": 1, "none": 2}


class NoStore(Exception):
    """The results dir has no results.duckdb yet (no run has written): every table is empty."""


class Store:
    """The read side for the service: a core.store.StoreReader that never creates or syncs anything."""

    def __init__(self, results_dir: Path):
        self.results_dir = Path(results_dir)
        self.reader = store.StoreReader(self.results_dir)

    @property
    def version(self) -> tuple[int, int]:
        return self.reader.version

    def query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
        # connect_read would sync a writable dir that has no snapshot yet: the service must not write, so an absent
        # snapshot means "no runs yet". sync only ever replaces the file, never removes it.
        if not store.db_path(self.results_dir).exists():
            raise NoStore()
        try:
            return self.reader.query(sql, params)
        except duckdb.IOException:
            # A snapshot swapped between stat and open: follow the new one once with a fresh reader.
            self.reader = store.StoreReader(self.results_dir)
            return self.reader.query(sql, params)

    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        cols, rows = self.query(sql, params)
        return [{c: _jsonable(v) for c, v in zip(cols, r)} for r in rows]


def _jsonable(v):
    """NaN / inf (a diverged run's loss) -> None; the store's naive UTC timestamps -> aware (RFC 3339 with offset)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=timezone.utc)
    return v


def _empty_if_no_store(fn):
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NoStore:
            return [] if fn.__name__ != "count_runs" else 0
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


# ---------------------------------------------------------------- runs


@_empty_if_no_store
def count_runs(db: Store) -> int:
    return db.query("SELECT count(*) FROM runs")[1][0][0]


@_empty_if_no_store
def list_runs(db: Store, filters: dict, limit: int = 10_000, offset: int = 0) -> list[dict]:
    """Runs matching `filters` (keys from RUN_FILTERS, equality), oldest first."""
    where, params = [], []
    for name in RUN_FILTERS:
        if filters.get(name) is not None:
            where.append(f"{name} = ?")
            params.append(filters[name])
    sql = (f"SELECT {', '.join(RUN_LIST_COLUMNS)} FROM runs"
           f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY started_at, run_id LIMIT ? OFFSET ?")
    return db.rows(sql, [*params, limit, offset])


@_empty_if_no_store
def recent_runs(db: Store, limit: int) -> list[dict]:
    return db.rows(f"SELECT {', '.join(RUN_LIST_COLUMNS)} FROM runs ORDER BY updated_at DESC, run_id LIMIT ?", [limit])


@_empty_if_no_store
def status_counts(db: Store) -> list[dict]:
    return db.rows("SELECT status, count(*) AS runs FROM runs GROUP BY status ORDER BY status")


@_empty_if_no_store
def get_run(db: Store, run_id: str) -> list[dict]:
    return db.rows(f"SELECT {', '.join(store.RUN_COLUMNS)} FROM runs WHERE run_id = ?", [run_id])


@_empty_if_no_store
def run_epochs(db: Store, run_id: str) -> list[dict]:
    return db.rows(f"SELECT {', '.join(store.EPOCH_COLUMNS)} FROM epochs WHERE run_id = ? ORDER BY epoch", [run_id])


@_empty_if_no_store
def run_confusion(db: Store, run_id: str, split: str | None = None) -> list[dict]:
    return db.rows(f"SELECT {', '.join(store.CONFUSION_COLUMNS)} FROM confusion WHERE run_id = ? "
                   "AND (? IS NULL OR split = ?) ORDER BY split, true_label, predicted_label", [run_id, split, split])


@_empty_if_no_store
def latest_with_confusion(db: Store) -> list[dict]:
    return db.rows("SELECT r.run_id FROM runs r WHERE r.status = 'completed' AND EXISTS "
                   "(SELECT 1 FROM confusion c WHERE c.run_id = r.run_id) ORDER BY r.finished_at DESC, r.run_id LIMIT 1")


# ---------------------------------------------------------------- the comparison table


@dataclass
class Row:
    kind: str  # measured | reference
    dataset: str
    metric: str
    label: str
    shortcut: str | None = None
    augment: str | None = None
    source: str | None = None
    cells: dict[tuple[int, int], dict] = field(default_factory=dict)  # (layers, epochs) -> {mean, std, count}


@dataclass
class Comparison:
    columns: list[tuple[int, int]]
    rows: list[Row]
    runs_counted: int


def variant_label(shortcut: str, augment: str) -> str:
    net = "plain net (no shortcuts)" if shortcut == "none" else f"ResNet, option {shortcut}"
    return f"measured: {net}, augment {augment}"


@_empty_if_no_store
def measured_groups(db: Store, dataset: str | None) -> list[dict]:
    """Mean / sample std / count of the final test error (%) and training time (s) of completed runs, per
    (dataset, shortcut, augment, layers, epochs)."""
    return db.rows(
        "SELECT dataset, shortcut, augment, layers, epochs, count(*) AS count, "
        "avg(test_error) * 100 AS test_error_mean, stddev_samp(test_error) * 100 AS test_error_std, "
        "avg(train_seconds) AS train_seconds_mean, stddev_samp(train_seconds) AS train_seconds_std "
        "FROM runs WHERE status = 'completed' AND (? IS NULL OR dataset = ?) "
        "GROUP BY dataset, shortcut, augment, layers, epochs", [dataset, dataset])


def comparison(db: Store, dataset: str | None = None, metric: str | None = None) -> Comparison:
    from results_api.reference import reference_rows

    metrics = [metric] if metric else list(METRICS)
    groups = measured_groups(db, dataset)
    rows: dict[tuple, Row] = {}
    for g in groups:
        for m in metrics:
            key = (g["dataset"], m, 0, SHORTCUT_ORDER.get(g["shortcut"], 9), g["shortcut"], g["augment"])
            row = rows.setdefault(key, Row("measured", g["dataset"], m, variant_label(g["shortcut"], g["augment"]),
                                           shortcut=g["shortcut"], augment=g["augment"]))
            row.cells[(g["layers"], g["epochs"])] = {
                "mean": g[f"{m}_mean"], "std": g[f"{m}_std"] if g["count"] > 1 else None, "count": g["count"]}
    for i, ref in enumerate(reference_rows()):
        if ref.metric in metrics and (dataset is None or ref.dataset == dataset):
            rows[(ref.dataset, ref.metric, 1, i, "", "")] = Row(
                "reference", ref.dataset, ref.metric, ref.label, source=ref.source,
                cells={k: {"mean": v, "std": None, "count": 1} for k, v in ref.cells.items()})
    ordered = [rows[k] for k in sorted(rows)]
    columns = sorted({c for r in ordered for c in r.cells})
    return Comparison(columns, ordered, sum(g["count"] for g in groups))


# ---------------------------------------------------------------- figure data


@_empty_if_no_store
def curves(db: Store, dataset: str | None, epochs: int | None) -> list[dict]:
    """Per (dataset, plain?, layers, epoch): mean train/test error (%) over the runs (running or completed) of one
    epoch budget: `epochs` when given, else the longest budget of each (dataset, depth, plain-or-residual) group
    (different budgets have different lr schedules: their curves do not average)."""
    return db.rows(
        "WITH sel AS (SELECT run_id, dataset, layers, shortcut = 'none' AS plain, epochs FROM runs "
        "WHERE status IN ('completed', 'running') AND (? IS NULL OR dataset = ?) AND (? IS NULL OR epochs = ?) "
        "QUALIFY epochs = max(epochs) OVER (PARTITION BY dataset, layers, shortcut = 'none')) "
        "SELECT s.dataset, s.plain, s.layers, any_value(s.epochs) AS budget, e.epoch, count(*) AS runs, "
        "avg(e.train_error) * 100 AS train_error, avg(e.test_error) * 100 AS test_error "
        "FROM sel s JOIN epochs e USING (run_id) GROUP BY s.dataset, s.plain, s.layers, e.epoch "
        "ORDER BY s.dataset, s.plain, s.layers, e.epoch", [dataset, dataset, epochs, epochs])


@_empty_if_no_store
def final_by_depth(db: Store, dataset: str | None) -> list[dict]:
    """Completed runs: final test accuracy (%) per (dataset, plain?, epochs, layers), mean and sample std."""
    return db.rows(
        "SELECT dataset, shortcut = 'none' AS plain, epochs, layers, count(*) AS runs, "
        "avg(1 - test_error) * 100 AS accuracy, stddev_samp(1 - test_error) * 100 AS accuracy_std "
        "FROM runs WHERE status = 'completed' AND (? IS NULL OR dataset = ?) "
        "GROUP BY ALL ORDER BY dataset, plain, epochs, layers", [dataset, dataset])


@_empty_if_no_store
def time_and_accuracy(db: Store, dataset: str | None) -> list[dict]:
    return db.rows(
        "SELECT dataset, layers, shortcut, epochs, train_seconds, (1 - test_error) * 100 AS accuracy FROM runs "
        "WHERE status = 'completed' AND (? IS NULL OR dataset = ?) ORDER BY dataset, layers", [dataset, dataset])


@_empty_if_no_store
def has_plain_runs(db: Store, dataset: str | None = None) -> bool:
    return db.query("SELECT count(*) > 0 FROM runs WHERE shortcut = 'none' AND status IN ('completed', 'running') "
                    "AND (? IS NULL OR dataset = ?)", [dataset, dataset])[1][0][0]
