"""Every SQL statement the service runs, and the study's answers built on them: cells, the comparison table, the
comparisons between cells and the published numbers, the claims. User input only ever arrives as bound parameters;
column names come from core.records, never from a request.

A **cell** is one experiment over seeds: the completed runs that agree on every identity field of RunConfig
except the seed and the run name (`RunConfig.cell_fields()`). Runs on 5 000 images, with another lr or with a
45k/5k split are other experiments, never averaged with the paper recipe. The comparison table puts depth (layers) x
epoch budget across and data set x metric x **variant** down, where a variant is everything else a cell fixes
(shortcut, augmentation, optimizer settings, schedule, training set), labelled by what differs from the paper's
recipe. Errors are stored as fractions (`test_error`) and shown in percent (`test_error_pct`).
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import duckdb

from ..core import StudyError, store
from ..core.config import RunConfig, default_milestones
from ..core.records import CONFUSION_COLUMNS, EPOCH_COLUMNS, RUN_COLUMNS
from ..core.storage import Storage
from ..core.datasets import BUILTINS
from . import stats
from .models import METRICS, Column, CompareRow, ComparisonRow, ComparisonTable, column_key
from .reference import Claim, Published, claims, published_numbers, reference_rows

RUN_LIST_COLUMNS = tuple(c for c in RUN_COLUMNS if c != "config")  # the full config JSON: /runs/{run_id}
RUN_FILTERS = ("dataset", "n", "shortcut", "epochs", "augment", "status")
METRIC_SQL = {"test_error_pct": "100 * test_error", "train_seconds": "train_seconds"}
# A row of the table: the cell fields without the data set (a row dimension of its own) and the columns (n, epochs).
VARIANT_FIELDS = tuple(f for f in RunConfig.cell_fields() if f not in ("dataset", "n", "epochs"))
PAPER_RECIPE = "paper recipe"


class StoreUnavailable(Exception):
    """The store cannot be read (gone, unreadable, not a DuckDB file): the service answers 503, not 500."""


class _NoSnapshotYet:
    """What a request pinned before any snapshot existed reads: no generation, every table empty."""

    key = (0, 0)

    def query(self, sql: str, params=None):
        raise store.NoSnapshot("no snapshot yet")


class Store:
    """The read side for the service: a core.store.StoreReader that never creates or syncs anything. A store follows
    the newest generation query by query; `pinned()` is one request's view, whose queries all read one generation."""

    def __init__(self, results: Storage):
        self.results = results
        self.reader = store.StoreReader(results)
        self._snapshot: store.Snapshot | _NoSnapshotYet | None = None  # pinned: the generation every query reads
        self._columns: dict[tuple, dict] = {}  # version -> {(table, column): type}, shared with the pinned views

    def pinned(self) -> "Store":
        view = copy.copy(self)
        try:
            view._snapshot = self._reading(self.reader.snapshot)
        except store.NoSnapshot:
            view._snapshot = _NoSnapshotYet()
        return view

    @property
    def version(self) -> tuple[int, int]:
        return self._snapshot.key if self._snapshot is not None else self.reader.version

    def query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
        # The service never syncs: a results dir without a snapshot means "no runs yet" (store.NoSnapshot, which
        # the queries below answer as empty). A snapshot it opened stays readable however many syncs follow
        # (core.store: immutable generations), so nothing here retries.
        return self._reading((self._snapshot or self.reader).query, sql, params)

    @staticmethod
    def _reading(fn, *args):
        try:
            return fn(*args)
        except store.NoSnapshot:
            raise
        except (StudyError, duckdb.IOException, OSError) as e:  # the file, not the SQL: any other error is a bug
            raise StoreUnavailable(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        cols, rows = self.query(sql, params)
        return [{c: _jsonable(v) for c, v in zip(cols, r)} for r in rows]

    def select(self, table: str, columns) -> str:
        """`columns` as a select list. A snapshot written by an older version (the service never syncs it) may lack
        columns added since: those read as NULL."""
        version = self.version
        found = self._columns.get(version)
        if found is None:
            _, rows = self.query("SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE "
                                 "database_name = 'store'")
            found = {(t, c): d for t, c, d in rows}
            self._columns.clear()
            self._columns[version] = found
        return ", ".join(c if (table, c) in found else f"NULL AS {c}" for c in columns)


def _jsonable(v):
    """NaN / inf (a diverged run's loss) -> None; the store's naive UTC timestamps -> aware (RFC 3339 with offset)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=timezone.utc)
    return v


def _empty_if_no_store(empty):
    def decorate(fn):
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except store.NoSnapshot:
                return empty
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper
    return decorate


# ---------------------------------------------------------------- runs


@_empty_if_no_store(0)
def count_runs(db: Store) -> int:
    return db.query("SELECT count(*) FROM runs")[1][0][0]


@_empty_if_no_store([])
def list_runs(db: Store, filters: dict, limit: int = 10_000, offset: int = 0) -> list[dict]:
    """Runs matching `filters` (keys from RUN_FILTERS, equality), oldest first."""
    where, params = [], []
    for name in RUN_FILTERS:
        if filters.get(name) is not None:
            where.append(f"{name} = ?")
            params.append(filters[name])
    sql = (f"SELECT {db.select('runs', RUN_LIST_COLUMNS)} FROM runs"
           f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY started_at, run_id LIMIT ? OFFSET ?")
    return db.rows(sql, [*params, limit, offset])


@_empty_if_no_store([])
def recent_runs(db: Store, limit: int) -> list[dict]:
    return db.rows(f"SELECT {db.select('runs', RUN_LIST_COLUMNS)} FROM runs ORDER BY updated_at DESC, run_id LIMIT ?",
                   [limit])


@_empty_if_no_store([])
def status_counts(db: Store) -> list[dict]:
    return db.rows("SELECT status, count(*) AS runs FROM runs GROUP BY status ORDER BY status")


@_empty_if_no_store([])
def get_run(db: Store, run_id: str) -> list[dict]:
    return db.rows(f"SELECT {db.select('runs', RUN_COLUMNS)} FROM runs WHERE run_id = ?", [run_id])


@_empty_if_no_store([])
def all_runs(db: Store) -> list[dict]:
    """Every run, every column (the report's runs.csv and its last table)."""
    return db.rows(f"SELECT {db.select('runs', RUN_COLUMNS)} FROM runs ORDER BY dataset, layers, shortcut, epochs, "
                   "seed")


@_empty_if_no_store([])
def run_epochs(db: Store, run_id: str) -> list[dict]:
    return db.rows(f"SELECT {db.select('epochs', EPOCH_COLUMNS)} FROM epochs WHERE run_id = ? ORDER BY epoch", [run_id])


@_empty_if_no_store([])
def run_confusion(db: Store, run_id: str, split: str | None = None) -> list[dict]:
    return db.rows(f"SELECT {db.select('confusion', CONFUSION_COLUMNS)} FROM confusion WHERE run_id = ? "
                   "AND (? IS NULL OR split = ?) ORDER BY split, true_label, predicted_label", [run_id, split, split])


@_empty_if_no_store([])
def latest_with_confusion(db: Store) -> list[dict]:
    return db.rows("SELECT r.run_id FROM runs r WHERE r.status = 'completed' AND EXISTS "
                   "(SELECT 1 FROM confusion c WHERE c.run_id = r.run_id) ORDER BY r.finished_at DESC, r.run_id LIMIT 1")


PROVENANCE_COLUMNS = ("runs", "package_version", "code", "source_hash", "python_version", "torch_version",
                      "cuda_version", "cudnn_version", "device_name", "gpu_driver", "data_fingerprint")


@_empty_if_no_store(([], []))
def provenance(db: Store) -> tuple[list[dict], list[dict]]:
    """(what produced the runs: one line per distinct combination with its run count, the runs whose epochs were
    trained by more than one version of the code or on more than one version of the data)."""
    rows = db.rows(
        f"SELECT count(*) AS runs, {db.select('runs', PROVENANCE_COLUMNS[1:2])}, "
        "CASE WHEN code_commit IS NULL THEN '' ELSE left(code_commit, 10) || CASE WHEN code_dirty THEN ' + local "
        f"changes' ELSE '' END END AS code, {db.select('runs', PROVENANCE_COLUMNS[3:])} FROM "
        f"(SELECT {db.select('runs', ('code_commit', 'code_dirty', *PROVENANCE_COLUMNS[1:2], *PROVENANCE_COLUMNS[3:]))}"
        " FROM runs) GROUP BY ALL ORDER BY runs DESC")
    mixed = db.rows(
        f"SELECT run_id, count(DISTINCT source_hash) AS code_versions, count(DISTINCT data_fingerprint) AS "
        f"data_versions FROM (SELECT run_id, {db.select('epochs', ('source_hash', 'data_fingerprint'))} FROM epochs) "
        "GROUP BY run_id HAVING code_versions > 1 OR data_versions > 1 ORDER BY run_id")
    return rows, mixed


@_empty_if_no_store(False)
def has_plain_runs(db: Store, dataset: str | None = None) -> bool:
    return db.query("SELECT count(*) > 0 FROM runs WHERE shortcut = 'none' AND status IN ('completed', 'running') "
                    "AND (? IS NULL OR dataset = ?)", [dataset, dataset])[1][0][0]


# ---------------------------------------------------------------- variants: what a row of the table is


@dataclass(frozen=True)
class Variant:
    """Everything a cell fixes except its data set, depth and epoch budget; milestones 'default' when they are the
    budget's default (50 % and 75 %), so that the paper recipe at 20 and at 100 epochs is one row."""

    dataset: str
    fields: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, run: dict) -> "Variant":
        values = dict((f, run[f]) for f in VARIANT_FIELDS)
        milestones = values["milestones"]
        values["milestones"] = ("default" if milestones in (None, default_milestones(run["epochs"]))
                                else tuple(milestones))
        return cls(run["dataset"], tuple(values.items()))

    def get(self, name: str):
        return dict(self.fields)[name]

    def replace(self, **changes) -> "Variant":
        return Variant(self.dataset, tuple((f, changes.get(f, v)) for f, v in self.fields))

    @property
    def is_paper_recipe(self) -> bool:
        return not self.differences()

    def differences(self) -> list[str]:
        """What differs from the paper's recipe (RunConfig's defaults, the full training set), in words."""
        defaults = RunConfig.model_fields
        values = dict(self.fields)
        return [_describe(name, value, self.dataset, values) for name, value in self.fields
                if value != ("default" if name == "milestones" else defaults[name].default)]

    @property
    def label(self) -> str:
        return ", ".join(self.differences()) or PAPER_RECIPE


def _count(k: int) -> str:
    return f"{k // 1000}k" if k % 1000 == 0 else f"{k:,}".replace(",", " ")


def _describe(name: str, value, dataset: str, variant: dict) -> str:
    spec = BUILTINS.get(dataset)
    full = spec.train_images if spec else 0
    if name == "shortcut":
        return "plain net" if value == "none" else f"option {value}"
    if name == "train_limit":
        return f"train {_count(value)} of {_count(full)} images"
    if name == "test_limit":
        return f"test {_count(value)} of {_count(spec.test_images if spec else 0)} images"
    if name == "val_split":  # of the training images in use: 45k/5k for the paper's split of CIFAR-10
        pool = min(variant.get("train_limit") or full, full)
        return f"{_count(pool - value)}/{_count(value)} split"
    if name == "warmup_epochs":
        return f"warm-up {value} epoch{'s' if value != 1 else ''}"
    if name == "augment":
        return f"augment {value}"
    if name == "batch_size":
        return f"batch {value}"
    if name == "milestones":
        return f"lr /10 after epochs {','.join(map(str, value))}"
    return f"{name.replace('_', ' ')} {value:g}" if isinstance(value, float) else f"{name.replace('_', ' ')} {value}"


def net_name(variant: Variant, layers: int) -> str:
    return f"{'plain' if variant.get('shortcut') == 'none' else 'ResNet'}-{layers}"


def describe_cell(variant: Variant, layers: int, epochs: int) -> str:
    return f"{net_name(variant, layers)}, {epochs} ep, {variant.label}"


# ---------------------------------------------------------------- cells


CellKey = tuple  # (Variant, layers, epochs)


@_empty_if_no_store({})
def cell_values(db: Store, dataset: str | None = None, metric: str = "test_error_pct",
                ) -> dict[CellKey, list[float]]:
    """(variant, layers, epochs) -> the metric's values over the cell's completed runs (its seeds), in run-id order.
    Grouped in SQL, so the Python side handles one row per cell, not per run."""
    fields = db.select("runs", dict.fromkeys(("dataset", "layers", "epochs", *VARIANT_FIELDS)))
    rows = db.rows(f"SELECT {fields}, list({METRIC_SQL[metric]} ORDER BY run_id) AS values FROM runs "
                   f"WHERE status = 'completed' AND {METRIC_SQL[metric]} IS NOT NULL AND (? IS NULL OR dataset = ?) "
                   "GROUP BY ALL", [dataset, dataset])
    out: dict[CellKey, list[float]] = defaultdict(list)
    for r in rows:
        out[(Variant.of(r), r["layers"], r["epochs"])].extend(r["values"])
    return dict(out)


@_empty_if_no_store(0)
def count_completed(db: Store, dataset: str | None = None) -> int:
    return db.query("SELECT count(*) FROM runs WHERE status = 'completed' AND (? IS NULL OR dataset = ?)",
                    [dataset, dataset])[1][0][0]


def variant_order(v: Variant) -> tuple:
    return (not v.is_paper_recipe, v.label)


def _measured_row(variant: Variant, metric: str, cells: dict[tuple[int, int], stats.Summary]) -> ComparisonRow:
    return ComparisonRow(kind="measured", dataset=variant.dataset, metric=metric, label=variant.label,
                         shortcut=variant.get("shortcut"), augment=variant.get("augment"), variant=dict(variant.fields),
                         cells={column_key(*c): s for c, s in cells.items()})


def comparison(db: Store, dataset: str | None = None, metric: str | None = None, all_columns: bool = False,
               ) -> ComparisonTable:
    """The comparison table. Columns: the (layers, epochs) that hold measured runs (every published one too with
    `all_columns`, or when nothing is measured)."""
    metrics = [metric] if metric else list(METRICS)
    rows: list[ComparisonRow] = []
    for m in metrics:
        by_variant: dict[Variant, dict[tuple[int, int], stats.Summary]] = {}
        for (variant, layers, epochs), values in cell_values(db, dataset, m).items():
            by_variant.setdefault(variant, {})[(layers, epochs)] = stats.summarize(values)
        rows += [_measured_row(v, m, by_variant[v]) for v in sorted(by_variant, key=_cell_sort)]
        for ref in reference_rows():
            if ref.metric == m and (dataset is None or ref.dataset == dataset):
                rows.append(ComparisonRow(kind="reference", dataset=ref.dataset, metric=m, label=ref.label,
                                          source=ref.source,
                                          cells={column_key(*k): stats.summarize([v]) for k, v in ref.cells.items()}))
    order = {m: i for i, m in enumerate(metrics)}
    rows.sort(key=lambda r: (r.dataset, order[r.metric], r.kind == "reference"))  # stable: variants keep their order
    measured = {c for r in rows if r.kind == "measured" for c in r.by_column()}
    columns = sorted({c for r in rows for c in r.by_column()} if all_columns or not measured else measured)
    shown = {column_key(*c) for c in columns}
    for r in rows:
        if r.kind == "reference":
            r.cells = {k: s for k, s in r.cells.items() if k in shown}
    return ComparisonTable(metrics=METRICS, columns=[Column.of(*c) for c in columns],
                           rows=[r for r in rows if r.cells], runs_counted=count_completed(db, dataset))


# ---------------------------------------------------------------- comparisons: the questions a study asks


def _pair(dataset, metric, kind, a_name, b_name, a_values, b_values) -> dict:
    """A comparison's fields before the Holm adjustment (`_adjusted` completes it)."""
    t = stats.welch(a_values, b_values)
    return dict(dataset=dataset, metric=metric, kind=kind, a=a_name, b=b_name, n_a=len(a_values), n_b=len(b_values),
                mean_a=sum(a_values) / len(a_values), mean_b=sum(b_values) / len(b_values), diff=t.diff,
                diff_ci_low=t.ci_low, diff_ci_high=t.ci_high, p_value=t.p_value,
                seeds_for_80pct_power=t.seeds_for_power)


def _against(dataset, metric, pub: Published, b_name, b_values) -> dict:
    t = stats.against(pub.value, b_values)
    return dict(dataset=dataset, metric=metric, kind="published", a=pub.describe(), b=b_name, n_a=None,
                n_b=len(b_values), mean_a=pub.value, mean_b=sum(b_values) / len(b_values), diff=t.diff,
                diff_ci_low=t.ci_low, diff_ci_high=t.ci_high, p_value=t.p_value,
                seeds_for_80pct_power=t.seeds_for_power)


def _adjusted(pending: list[dict]) -> list[CompareRow]:
    """The comparisons, their p-values Holm-adjusted together and each verdict read from its adjusted p-value."""
    return [CompareRow(**row, p_holm=p, verdict=stats.verdict(stats.Test(row["diff"], None, None, row["p_value"], None),
                                                              p, row["n_a"], row["n_b"]))
            for row, p in zip(pending, stats.holm([r["p_value"] for r in pending]))]


def matches_published(pub: Published, variant: Variant, layers: int, epochs: int) -> bool:
    """A published number is set beside measured runs of the same data set, depth, epoch budget and training set
    as the published experiment, with its shortcut; any other pairing is "not measured"."""
    return (variant.dataset == pub.dataset and layers == pub.layers and epochs == pub.epochs
            and variant.get("shortcut") == pub.shortcut and variant.get("train_limit") is None
            and variant.get("val_split") == pub.val_split)


def build_comparisons(cells: dict[CellKey, list[float]], metric: str, published: list[Published]) -> list[CompareRow]:
    """Adjacent depths at the same budget and variant, adjacent budgets at the same depth and variant, plain vs
    ResNet (option A) and option A vs B at the same depth, budget and otherwise the same variant, and each measured
    cell against each published number of the same experiment; Holm-adjusted together."""
    out: list[dict] = []
    by_budget, by_depth = defaultdict(list), defaultdict(list)
    for (variant, layers, epochs) in cells:
        by_budget[(variant, epochs)].append(layers)
        by_depth[(variant, layers)].append(epochs)
    for (variant, epochs), depths in sorted(by_budget.items(), key=lambda kv: (_cell_sort(kv[0][0]), kv[0][1])):
        depths.sort()
        for a, b in zip(depths, depths[1:]):
            out.append(_pair(variant.dataset, metric, "depth", describe_cell(variant, a, epochs),
                             describe_cell(variant, b, epochs), cells[(variant, a, epochs)], cells[(variant, b, epochs)]))
    for (variant, layers), budgets in sorted(by_depth.items(), key=lambda kv: (_cell_sort(kv[0][0]), kv[0][1])):
        budgets.sort()
        for a, b in zip(budgets, budgets[1:]):
            out.append(_pair(variant.dataset, metric, "epochs", describe_cell(variant, layers, a),
                             describe_cell(variant, layers, b), cells[(variant, layers, a)], cells[(variant, layers, b)]))
    for (variant, layers, epochs), values in sorted(cells.items(), key=lambda kv: (_cell_sort(kv[0][0]), kv[0][1:])):
        for kind, a_shortcut, b_shortcut in (("plain vs ResNet", "none", "A"), ("option A vs B", "A", "B")):
            if variant.get("shortcut") != a_shortcut:
                continue
            other = (variant.replace(shortcut=b_shortcut), layers, epochs)
            if other in cells:
                out.append(_pair(variant.dataset, metric, kind, describe_cell(variant, layers, epochs),
                                 describe_cell(other[0], layers, epochs), values, cells[other]))
        for pub in published:
            if matches_published(pub, variant, layers, epochs):
                out.append(_against(variant.dataset, metric, pub, describe_cell(variant, layers, epochs), values))
    return _adjusted(out)


def _cell_sort(variant: Variant) -> tuple:
    return (variant.dataset, variant_order(variant))


def comparisons(db: Store, dataset: str | None = None, metric: str = "test_error_pct") -> list[CompareRow]:
    published = [p for p in published_numbers() if p.metric == metric and (dataset is None or p.dataset == dataset)]
    return build_comparisons(cell_values(db, dataset, metric), metric, published)


# ---------------------------------------------------------------- the claims, tested


@dataclass
class Finding:
    claim: Claim
    verdict: str  # supported | contradicted | not shown | cannot tell | not measured yet
    summary: str  # the one-line verdict, with the command to run when cells are missing
    rows: list[CompareRow]
    missing: list[str]


def claim_variant(claim: Claim) -> Variant:
    """The paper's recipe on the claim's data set, with its shortcut and training set."""
    values = {f: RunConfig.model_fields[f].default for f in VARIANT_FIELDS}
    values.update(milestones="default", shortcut=claim.shortcut, val_split=claim.val_split)
    return Variant(claim.dataset, tuple((f, values[f]) for f in VARIANT_FIELDS))


def evaluate_claim(claim: Claim, cells: dict[CellKey, list[float]]) -> Finding:
    base, overrides = claim_variant(claim), dict(claim.overrides)

    def cell(layers: int, epochs: int) -> CellKey:
        return base.replace(**dict(overrides.get(layers, ()))), layers, epochs

    keys = []
    for at in claim.at:
        for a, b in claim.pairs:
            keys.append((cell(a, at), cell(b, at)) if claim.kind == "depth" else (cell(at, a), cell(at, b)))
    missing = sorted({describe_cell(*k) for pair in keys for k in pair if k not in cells})
    if missing:
        return Finding(claim, "not measured yet", f"not measured yet: run `resnet-study sweep local {claim.spec}` "
                       f"({len(missing)} cell{'s' if len(missing) > 1 else ''} missing)", [], missing)
    rows = _adjusted([_pair(claim.dataset, "test_error_pct", claim.kind, describe_cell(*ka), describe_cell(*kb),
                            cells[ka], cells[kb]) for ka, kb in keys])
    verdicts = [r.verdict for r in rows]
    opposite = "b lower" if claim.expect == "b higher" else "b higher"
    if any(v.startswith("cannot tell") for v in verdicts):
        return Finding(claim, "cannot tell", "cannot tell: some cells have fewer than 2 seeds; run more seeds",
                       rows, [])
    if all(v == claim.expect for v in verdicts):
        return Finding(claim, "supported", f"supported: all {len(rows)} comparisons show it (Holm-adjusted p < "
                       f"{stats.ALPHA})", rows, [])
    against = sum(v == opposite for v in verdicts)
    if against:
        return Finding(claim, "contradicted", f"contradicted: {against} of {len(rows)} comparisons show the "
                       f"opposite", rows, [])
    shown = sum(v == claim.expect for v in verdicts)
    return Finding(claim, "not shown", f"not shown: {len(rows) - shown} of {len(rows)} comparisons find no "
                   f"detectable difference", rows, [])


def findings(db: Store) -> list[Finding]:
    """Every claim of claims.yaml, evaluated on the completed runs (Holm-adjusted within each claim)."""
    measured = cell_values(db)
    return [evaluate_claim(c, measured) for c in claims()]


# ---------------------------------------------------------------- figure data


@_empty_if_no_store([])
def curves(db: Store, dataset: str | None, epochs: int | None, every_budget: bool = False) -> list[dict]:
    """Per (cell, epoch) over the cell's runs (running or completed): mean, min and max train and test error (%) and
    the mean cumulative training seconds. Unless `every_budget`, one epoch budget per (variant, depth): `epochs`
    when given, else the longest (curves of different budgets, with their own lr schedules, would crowd a panel)."""
    fields = db.select("runs", dict.fromkeys(("dataset", "layers", "epochs", *VARIANT_FIELDS)))
    rows = db.rows(
        f"WITH sel AS (SELECT run_id, {fields} FROM runs WHERE status IN ('completed', 'running') "
        "AND (? IS NULL OR dataset = ?) AND (? IS NULL OR epochs = ?)), "
        "e AS (SELECT run_id, epoch, 100 * train_error AS train_error_pct, 100 * test_error AS test_error_pct, "
        "sum(epoch_seconds) OVER (PARTITION BY run_id ORDER BY epoch) AS seconds FROM epochs) "
        f"SELECT {', '.join('s.' + f for f in dict.fromkeys(('dataset', 'layers', 'epochs', *VARIANT_FIELDS)))}, "
        "e.epoch, count(*) AS runs, avg(e.train_error_pct) AS train_error_pct, "
        "min(e.train_error_pct) AS train_error_pct_min, max(e.train_error_pct) AS train_error_pct_max, "
        "avg(e.test_error_pct) AS test_error_pct, min(e.test_error_pct) AS test_error_pct_min, "
        "max(e.test_error_pct) AS test_error_pct_max, avg(e.seconds) AS seconds "
        f"FROM sel s JOIN e USING (run_id) GROUP BY ALL ORDER BY ALL", [dataset, dataset, epochs, epochs])
    for r in rows:
        r["variant"] = Variant.of(r)
    if every_budget:
        return rows
    longest: dict[tuple, int] = {}
    for r in rows:
        key = (r["variant"], r["layers"])
        longest[key] = max(longest.get(key, 0), r["epochs"])
    return [r for r in rows if r["epochs"] == longest[(r["variant"], r["layers"])]]


@_empty_if_no_store([])
def time_and_accuracy(db: Store, dataset: str | None) -> list[dict]:
    return db.rows(
        "SELECT dataset, layers, shortcut, epochs, train_seconds, 100 * (1 - test_error) AS accuracy_pct FROM runs "
        "WHERE status = 'completed' AND (? IS NULL OR dataset = ?) ORDER BY dataset, layers", [dataset, dataset])
