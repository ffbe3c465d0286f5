"""The results store: per-run shards (the truth) and snapshots of them as DuckDB files, on a disk or in a bucket.

One name, one type: the results store is a core.storage.Storage called `results` in every function here. A command
(or the service's factory) turns `--results-dir` / $RESNET_STUDY_RESULTS into it once, with `results_location`, at
its edge; nothing inward takes a path or a URL.

Layout of a results dir (`--results-dir`, env RESNET_STUDY_RESULTS, default ./results; or `s3://bucket/prefix`,
the same names under the prefix):

    runs/<run_id>/run.json            the run's shard: its `runs` row, its `epochs` rows, its `confusion` rows
    runs/<run_id>/checkpoint.pt       torch.save of the training state (one object)
    runs/<run_id>/lease.json          held while the run trains (core.lease)
    snapshots/results-<g>.duckdb      generation g: tables runs, epochs, confusion (+ _shards); written once, never
                                      changed, removed GRACE_S after a newer one is published
    snapshots/CURRENT                 {"generation": g, "file": "results-<g>.duckdb", "published_at": ...}
    results.duckdb                    (disk only) a copy of the newest generation for the DuckDB CLI
    .sync.lock, .sync-dirty           the sync's lease and its "shards changed" mark

Why this shape (DuckDB admits one read-write process XOR many read-only ones per file; file locks are unreliable on
NFS; an object store has no rename and no locks at all):

- A job writes only its own shard and checkpoint, each atomically (core.storage: temp + fsync + rename on a disk,
  one PUT in a bucket). Jobs never contend.
- `sync()` brings the snapshot up to date: it builds the new database in a local temp dir (never on the shared
  volume or in the bucket) from the current generation plus the shards that changed since (by version: inode /
  mtime / size on a disk, ETag in a bucket, recorded in `_shards`), publishes it as a NEW generation (exclusive
  create: no two syncers can write the same g), then moves CURRENT to it by compare-and-swap. No file or object a
  reader may have open is ever written, replaced or removed while it may still be read: a reader keeps the
  generation it opened until it asks again, and a generation is removed only GRACE_S after it was superseded.
- Only one process syncs at a time, decided by a lease (core.lease: the same exclusive-create / compare-and-swap
  mechanism and staleness rule as a run's lease) that nobody waits for: a job that finds it taken leaves a
  `.sync-dirty` mark and goes on training; the holder re-syncs until no mark is left, so every shard written reaches
  the snapshot.
- Since the shards are the truth, the snapshot can always be rebuilt: delete snapshots/ and results.duckdb and run
  `sync()`.
- A results dir from before generations (0.1.0: results.duckdb, no snapshots/) is read as it is, and its first sync
  builds generation 1 from it.

results.duckdb (on a disk) is replaced by rename at each sync, for `duckdb -readonly results/results.duckdb`: the
tool's own readers never open it. On a network filesystem, a DuckDB CLI left open on it across a sync may get
"stale file handle" (reopen it); `duckdb -readonly results/snapshots/$(jq -r .file results/snapshots/CURRENT)` opens
the newest generation, which stays put. In a bucket there is no results.duckdb (an object replaced under a reader's
range requests would mix two files): readers download the generation CURRENT names into a local cache
(RESNET_STUDY_CACHE, default ~/.cache/resnet-study) once and open it there; a DuckDB CLI with httpfs reads
`s3://bucket/prefix/snapshots/CURRENT` and ATTACHes the file it names.

Requests to a bucket (tests/test_storage.py counts them): a run makes per epoch 14 for its shard and the sync,
uncontended: 5 PUT (the shard, the dirty mark, the sync lease, the new generation, CURRENT), 3 HEAD and 1 DELETE of
the dirty mark, 2 GET (CURRENT, the changed shard), 2 LIST (runs/, snapshots/), 1 DELETE of the sync lease; plus a
GET of the current generation when another process published it (this process keeps what it built), a LIST page
per 1 000 objects under runs/ (three per run), a DELETE per generation past its grace; then 1 PUT for its
checkpoint. A lease heartbeat is 1 PUT (If-Match) every HEARTBEAT_S. Old generations are deleted by whichever
process syncs, GRACE_S after a newer one appeared (by the storage's LastModified / mtime); readers' local copies
are pruned to the newest two.

SQL lives in one module per side: this one holds the write side's (schema, the 0.1 migration, shards into a
snapshot, and what the batch jobs read back: completed_rates for jobs/plan.py); results_api/queries.py the read side's
(the benchmark's synthetic store, jobs/bench/api.py, writes its own rows in this module's schema).

Errors are fractions in [0, 1]; times are seconds; timestamps UTC.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from . import StudyError, settings
from .lease import Lease
from .records import TABLES, ConfusionRecord, EpochRecord, RunRecord, Shard, upgrade_run_row
from .storage import LocalStorage, Storage, Version, atomic_write, local_cache, open_storage

DB_NAME = "results.duckdb"
RUNS_DIR = "runs"
SHARD_NAME = "run.json"
CHECKPOINT_NAME = "checkpoint.pt"
SNAPSHOTS_DIR = "snapshots"
POINTER_NAME = f"{SNAPSHOTS_DIR}/CURRENT"
LOCK_NAME = ".sync.lock"
DIRTY_NAME = ".sync-dirty"
# A superseded generation stays this long: far longer than any query the tool runs, so a reader that asks for the
# newest generation before each query (StoreReader does) never finds its file gone.
GRACE_S = 600.0
# How often a reader of a bucket looks at CURRENT (a GET); on a disk it looks before every query (a read of a file).
REMOTE_CHECK_S = 2.0
GENERATION = re.compile(r"^results-(\d+)\.duckdb$")
# Written so that the DuckDB CLI from PyPI (duckdb-cli 1.5.6) can open the file: duckdb 2.x's default format cannot.
DUCKDB_CONFIG = {"storage_compatibility_version": "v1.5.0"}

def default_results_dir() -> str:
    """--results-dir when it is not given: $RESNET_STUDY_RESULTS (a folder or s3://bucket/prefix), else ./results."""
    return settings.RESULTS.get()


def results_location(where: "Path | str | Storage | None" = None) -> Storage:
    """The results store a command names (--results-dir / $RESNET_STUDY_RESULTS): a folder or s3://bucket/prefix."""
    return open_storage(where if where not in (None, "") else default_results_dir())


def require_results(where: "Path | str | Storage | None") -> Storage:
    """The results store of a command that reads one: a folder that exists, or a bucket prefix (its bucket is
    checked by the first request, with a one-line error)."""
    storage = results_location(where)
    if storage.is_local and not storage.root.is_dir():
        raise StudyError(f"no results dir at {storage}; run `resnet-study train` first or pass --results-dir")
    return storage


def can_sync(storage: Storage) -> bool:
    """Whether this process may publish a snapshot here: a folder it can write, or a bucket (whose credentials say)."""
    return not storage.is_local or os.access(storage.root, os.W_OK)


def db_path(results_dir: Path) -> Path:
    """The DuckDB CLI's copy of the newest snapshot (a results dir on a disk)."""
    return Path(results_dir) / DB_NAME


def run_dir(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / RUNS_DIR / run_id


def run_storage(results: Storage, run_id: str) -> Storage:
    return results / f"{RUNS_DIR}/{run_id}"


def ensure_writable(results: Storage) -> None:
    """Fail early, before any run exists, when the results dir (or bucket) cannot be written: one line, what to fix."""
    results.check_writable()


# ---------------------------------------------------------------- job side: shards and checkpoints


def read_shard(results: Storage, run_id: str) -> Shard | None:
    data = run_storage(results, run_id).read(SHARD_NAME)
    if data is None:
        return None
    raw = json.loads(data)
    raw["run"] = upgrade_run_row(raw["run"])
    return Shard.model_validate(raw)


def write_shard(results: Storage, run: RunRecord, epochs: list[EpochRecord],
                confusion: list[ConfusionRecord], *, sync_now: bool = True) -> None:
    """Replace the run's shard atomically, then bring the snapshot up to date if nobody else is doing it."""
    shard = Shard(run=run, epochs=epochs, confusion=confusion)
    run_storage(results, run.run_id).write(SHARD_NAME, shard.model_dump_json().encode())
    if sync_now:
        sync(results)


# torch is imported inside the two checkpoint functions, not at the top: the service and the `results` commands
# import this module and must not pay for importing torch (seconds), which they never use.

def save_checkpoint(results: Storage, run_id: str, state: dict) -> None:
    """torch.save(state) as the run's checkpoint, atomically (one file replace, one PUT)."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    run_storage(results, run_id).write(CHECKPOINT_NAME, buf.getvalue())


def load_checkpoint(results: Storage, run_id: str, map_location=None) -> dict | None:
    import torch

    data = run_storage(results, run_id).read(CHECKPOINT_NAME)
    if data is None:
        return None
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)


def checkpoint_exists(results: Storage, run_id: str) -> bool:
    return run_storage(results, run_id).version(CHECKPOINT_NAME) is not None


# ---------------------------------------------------------------- generations and the pointer


@dataclass(frozen=True)
class Located:
    """The snapshot a reader would open now: generation g (0: a results.duckdb from before generations)."""
    generation: int
    name: str  # the object's name in the results dir
    key: tuple[int, int]  # data_version: changes whenever a new snapshot is published
    pointer: Version | None = None  # CURRENT's version, for the next compare-and-swap


def generation_name(g: int) -> str:
    return f"results-{g:08d}.duckdb"


def list_generations(storage: Storage) -> dict[int, Version]:
    found = storage.list(SNAPSHOTS_DIR, suffix=".duckdb")
    return {int(m.group(1)): v for name, v in found.items()
            if (m := GENERATION.match(name.rpartition("/")[2])) and name.count("/") == 1}


def locate(storage: Storage) -> Located | None:
    """CURRENT's generation; while CURRENT is absent (an instant during a swap on a disk, or a crash between its
    two steps) the highest published generation; in a results dir from before generations, results.duckdb."""
    found = storage.read_versioned(POINTER_NAME)
    if found is not None:
        info = json.loads(found[0])
        g = int(info["generation"])
        return Located(g, f"{SNAPSHOTS_DIR}/{info['file']}", (g, _ns(float(info["published_at"]))), found[1])
    gens = list_generations(storage)
    if gens:
        g = max(gens)
        return Located(g, f"{SNAPSHOTS_DIR}/{generation_name(g)}", (g, _ns(gens[g].modified)))
    legacy = storage.version(DB_NAME)
    return Located(0, DB_NAME, (0, _ns(legacy.modified))) if legacy else None


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def collect_generations(storage: Storage, current: int, gens: dict[int, Version], grace_s: float = GRACE_S) -> list[int]:
    """Delete every generation but `current` that was superseded more than `grace_s` ago (a generation above the
    current one, left by a syncer that lost its lease, by its own age). Returns the generations deleted."""
    now, numbers, gone = time.time(), sorted(gens), []
    for i, g in enumerate(numbers):
        if g == current:
            continue
        superseded_at = gens[numbers[i + 1]].modified if i + 1 < len(numbers) else gens[g].modified
        if now - superseded_at > grace_s and storage.delete(f"{SNAPSHOTS_DIR}/{generation_name(g)}"):
            gone.append(g)
    return gone


def snapshot_cache(storage: Storage) -> Path:
    """Where readers of a bucket keep the generations they downloaded: one folder per endpoint, bucket and prefix."""
    return local_cache(storage, "s3")


def _cached_name(located: Located) -> str:
    """The generation and when it was published: a results dir deleted and begun again reuses numbers, not times."""
    return f"{located.generation:08d}-{located.key[1]}.duckdb"


# ---------------------------------------------------------------- sync: shards -> a new generation


def sync(results: Storage, grace_s: float = GRACE_S) -> bool:
    """Bring the snapshot up to date with every shard. Returns False if another process holds the sync (it will
    pick up this process's changes: see the module docstring), True once this process has synced."""
    storage = results
    storage.write(DIRTY_NAME, b"")
    while True:
        lease = Lease(storage, "sync", log=lambda message: None, name=LOCK_NAME)
        if not lease.try_acquire():
            return False
        try:
            while storage.delete(DIRTY_NAME):
                if lease.lost or not _sync_once(storage, grace_s):
                    storage.write(DIRTY_NAME, b"")  # the syncer that took over must do this one again
                    return False
        finally:
            lease.release()
        if storage.version(DIRTY_NAME) is None:
            return True


def _sync_once(storage: Storage, grace_s: float) -> bool:
    """Build and publish the next generation if any shard changed; False if another syncer published first."""
    current = locate(storage)
    gens = list_generations(storage)
    with tempfile.TemporaryDirectory(prefix="resnet-study-sync-") as tmp:
        work = Path(tmp) / DB_NAME
        if current is not None:
            _fetch(storage, current, work)
        con = duckdb.connect(str(work), config=DUCKDB_CONFIG)
        try:
            changed = _apply_shards(con, storage)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        if changed or current is None or current.generation == 0:
            published = _publish(storage, work, current, gens)
            if published is None:
                return False
            g, version = published
            gens[g] = version
        else:
            if storage.is_local and storage.version(DB_NAME) is None:
                storage.upload(DB_NAME, work)  # deleted by hand: the DuckDB CLI's copy comes back
            g = current.generation
    collect_generations(storage, g, gens, grace_s)
    return True


def _fetch(storage: Storage, current: Located, dest: Path) -> None:
    """The current snapshot as a private local file: from this machine's cache of a bucket when it has it."""
    if not storage.is_local and current.generation:
        cached = snapshot_cache(storage) / _cached_name(current)
        if cached.is_file():
            shutil.copyfile(cached, dest)
            return
    if not storage.download(current.name, dest):
        raise StudyError(f"snapshot {current.name} vanished from {storage} while syncing; run the sync again")


def _publish(storage: Storage, work: Path, current: Located | None,
             gens: dict[int, Version]) -> tuple[int, Version] | None:
    """`work` as generation g (above every listed one; exclusive), then CURRENT -> g by compare-and-swap; None if
    another syncer got there first."""
    g = max([current.generation if current else 0, *gens]) + 1
    version = storage.upload(f"{SNAPSHOTS_DIR}/{generation_name(g)}", work, exclusive=True)
    if version is None:
        return None
    published_at = time.time()
    pointer = json.dumps({"generation": g, "file": generation_name(g), "published_at": published_at}).encode()
    if current is not None and current.pointer is not None:
        moved = storage.swap(POINTER_NAME, pointer, current.pointer)
    else:
        moved = storage.create(POINTER_NAME, pointer)
    if moved is None:
        return None  # the generation stays unreferenced; collect_generations removes it after the grace period
    if storage.is_local:
        storage.upload(DB_NAME, work)
    else:
        _keep_in_cache(storage, work, Located(g, "", (g, _ns(published_at))))
    return g, version


def publish_snapshot(results: Storage, db: Path) -> int:
    """Publish a DuckDB file built elsewhere (a benchmark's synthetic store) as the next generation; its number."""
    storage = results
    done = _publish(storage, db, locate(storage), list_generations(storage))
    if done is None:
        raise StudyError(f"another process published a snapshot in {storage} at the same moment; run it again")
    return done[0]


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """The tables of core.records in `con`; a snapshot written by an older version is migrated (_migrate) and gains
    the columns added since, and its `_shards` bookkeeping (inode / mtime / size before storage versions) is rebuilt
    from the shards."""
    for table, cols in TABLES.items():
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{c} {t}' for c, t in cols.items())})")
    _migrate(con)
    for table, cols in TABLES.items():
        for c, t in cols.items():
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {c} {t}")
    old = con.execute("SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() AND "
                      "table_name = '_shards' AND column_name = 'inode'").fetchone()[0]
    if old:
        con.execute("DROP TABLE _shards")
    con.execute("CREATE TABLE IF NOT EXISTS _shards (run_id VARCHAR PRIMARY KEY, version VARCHAR)")


def is_0_1(con: duckdb.DuckDBPyConnection, catalog: str | None = None) -> bool:
    """Whether the `runs` table of `con` (its current database, or `catalog`) is as 0.1 wrote it: milestones as text,
    the hardware's name in `device`."""
    cols = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = "
                            "coalesce(?, current_database()) AND table_name = 'runs'", [catalog]).fetchall())
    return cols.get("milestones") == "VARCHAR" or "device" in cols


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    """A `runs` table written by 0.1, rewritten row by row through core.records.upgrade_run_row: the one migration
    path, which shards take too (read_shard, sync). 0.1 stores are small, and this happens once per store."""
    if not is_0_1(con):
        return
    cur = con.execute("SELECT * FROM runs")
    names = [d[0] for d in cur.description]
    rows = [upgrade_run_row(dict(zip(names, r))) for r in cur.fetchall()]
    con.execute("DROP TABLE runs")
    con.execute(f"CREATE TABLE runs ({', '.join(f'{c} {t}' for c, t in TABLES['runs'].items())})")
    _insert_rows(con, "runs", rows)


def _list_shards(storage: Storage) -> dict[str, str]:
    """run_id -> the shard's version token."""
    found = storage.list(RUNS_DIR, suffix=f"/{SHARD_NAME}")
    return {name.split("/")[1]: v.token for name, v in found.items() if name.count("/") == 2}


def _apply_shards(con: duckdb.DuckDBPyConnection, storage: Storage) -> bool:
    create_schema(con)
    known = dict(con.execute("SELECT run_id, version FROM _shards").fetchall())
    on_store = _list_shards(storage)
    changed = [rid for rid, v in on_store.items() if known.get(rid) != v]
    removed = [rid for rid in known if rid not in on_store]
    if not changed and not removed:
        return False
    rows: dict[str, list[dict]] = {t: [] for t in TABLES}
    stats = []
    for rid in changed:
        data = storage.read(f"{RUNS_DIR}/{rid}/{SHARD_NAME}")
        try:
            shard = json.loads(data) if data is not None else None
        except ValueError:
            shard = None
        if shard is None:
            continue  # removed while we looked: the next sync sees it gone
        rows["runs"].append(upgrade_run_row(shard["run"]))
        rows["epochs"] += shard.get("epochs", [])
        rows["confusion"] += shard.get("confusion", [])
        stats.append((rid, on_store[rid]))
    ids = [s[0] for s in stats] + removed
    con.execute("BEGIN")
    for table in TABLES:
        con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT unnest($ids))", {"ids": ids})
        _insert_rows(con, table, rows[table])
    con.execute("DELETE FROM _shards WHERE run_id IN (SELECT unnest($ids))", {"ids": ids})
    if stats:
        con.executemany("INSERT INTO _shards VALUES (?, ?)", stats)
    con.execute("COMMIT")
    return True


def _insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict]) -> None:
    """Bulk insert through newline-delimited JSON (DuckDB parses it natively, in bulk: executemany goes row by row)."""
    if not rows:
        return
    cols = TABLES[table]
    with tempfile.NamedTemporaryFile("w", suffix=".ndjson", delete=False) as f:
        for r in rows:
            f.write(json.dumps({c: r.get(c) for c in cols}, default=str))
            f.write("\n")
    try:
        spec = "{" + ", ".join(f"'{c}': '{t}'" for c, t in cols.items()) + "}"
        con.execute(
            f"INSERT INTO {table} BY NAME SELECT * FROM read_json(?, columns={spec}, format='newline_delimited')",
            [f.name],
        )
    finally:
        os.unlink(f.name)


# ---------------------------------------------------------------- read side


class NoSnapshot(StudyError):
    """The results dir has no snapshot yet (no run has synced)."""


class Snapshot:
    """One generation, open read-only: its answers never change, however many syncs publish after it."""

    def __init__(self, located: Located, con: duckdb.DuckDBPyConnection):
        self.generation, self.key, self.con = located.generation, located.key, con

    def query(self, sql: str, params=None) -> tuple[list[str], list[tuple]]:
        cur = self.con.cursor()
        try:
            cur.execute("USE store")
            cur.execute(sql, params or [])
            cols = [d[0] for d in cur.description] if cur.description else []
            return cols, cur.fetchall()
        finally:
            cur.close()

    def close(self) -> None:
        self.con.close()


def open_snapshot(results: Storage, located: Located | None = None) -> Snapshot:
    """The newest generation (or `located`), read-only. Never writes to the results dir."""
    storage = results
    located = located or locate(storage)
    if located is None:
        raise NoSnapshot(f"{storage} has no snapshot yet; run `resnet-study train --results-dir {storage}` first")
    if storage.is_local:
        return Snapshot(located, _attach_read_only(storage.path(located.name)))
    return Snapshot(located, _attach_read_only(_cached_copy(storage, located)))


def _cached_copy(storage: Storage, located: Located) -> Path:
    """The generation in this machine's cache, downloaded once (generations never change, so a copy stays right)."""
    cache = snapshot_cache(storage)
    path = cache / _cached_name(located)
    if located.generation == 0 or not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        if not storage.download(located.name, path):
            raise StudyError(f"snapshot {located.name} is gone from {storage} (superseded more than {GRACE_S:.0f} s "
                             f"ago); ask again")
        _prune_cache(cache, keep=path.name)
    return path


def _keep_in_cache(storage: Storage, work: Path, located: Located) -> None:
    """A syncer of a bucket keeps what it published, so that its next sync and its readers need not download it."""
    cache = snapshot_cache(storage)
    cache.mkdir(parents=True, exist_ok=True)
    LocalStorage(cache).upload(_cached_name(located), work)
    _prune_cache(cache, keep=_cached_name(located))


def _prune_cache(cache: Path, keep: str) -> None:
    """Keep the two newest generations (an open connection to a removed file on a local disk keeps reading it)."""
    names = sorted((p.name for p in cache.glob("*.duckdb")), reverse=True)
    for name in names[2:]:
        if name != keep:
            (cache / name).unlink(missing_ok=True)


def _attach_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """`path` read-only in a private in-memory instance, as the default catalog `store`. Not duckdb.connect(path):
    DuckDB caches one instance per path in a process. Cursors start in the default catalog again: run `USE store`
    on them (Snapshot.query does). Read from a private copy: a file someone holds open read-write (a DuckDB CLI
    without -readonly on a results.duckdb from before generations), and a results.duckdb written by 0.1 (which this
    process never writes: the copy is migrated as a sync would, by create_schema)."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{_sql_string(path)}' AS store (READ_ONLY)")
        if not is_0_1(con, "store"):
            con.execute("USE store")
            return con
        con.execute("DETACH store")
    except duckdb.IOException:
        pass
    with tempfile.TemporaryDirectory(prefix="resnet-study-") as tmp:  # removed at once: the open handle
        copy = Path(tmp) / path.name                                   # keeps the copy readable
        shutil.copyfile(path, copy)
        migrating = duckdb.connect(str(copy), config=DUCKDB_CONFIG)
        try:
            if is_0_1(migrating):
                create_schema(migrating)
                migrating.execute("CHECKPOINT")
        finally:
            migrating.close()
        con.execute(f"ATTACH '{_sql_string(copy)}' AS store (READ_ONLY)")
    con.execute("USE store")
    return con


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")


def has_snapshot(results: Storage) -> bool:
    return locate(results) is not None


def connect_read(results: Storage) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the newest snapshot. A writable results dir with shards but no snapshot yet is
    synced first. Never blocks a writer: writers never touch a published generation."""
    storage = require_results(results)
    located = locate(storage)
    if located is None and can_sync(storage):
        sync(storage)
        located = locate(storage)
    return open_snapshot(storage, located).con


def completed_rates(results: Storage, device_name: str | None,
                    precision: str) -> list[tuple[int, int, float]]:
    """(layers, runs trained in its process, the device's img/s over them all) of each completed run on
    `device_name` (None: any GPU) in `precision`: what a sweep plan reads back (jobs/plan.py)."""
    con = connect_read(results)
    try:
        return con.execute(
            "SELECT layers, coalesce(cell_runs, 1), train_size * epochs_done / train_seconds * coalesce(cell_runs, 1) "
            "FROM runs WHERE status = 'completed' AND train_seconds > 0 AND precision = ? AND (CASE WHEN ? IS NULL "
            "THEN device_type = 'cuda' ELSE device_name = ? END)", [precision, device_name, device_name]).fetchall()
    finally:
        con.close()


def data_version(results: Storage) -> tuple[int, int]:
    """Changes whenever sync publishes a new snapshot: a cache key for anything derived from the store."""
    located = locate(results)
    return located.key if located else (0, 0)


class StoreReader:
    """Follows the newest snapshot: before each query it asks which generation is current (on a disk every time, in
    a bucket at most every REMOTE_CHECK_S) and opens a new one when it changed; a query already running keeps its
    generation. Never writes to the results dir."""

    def __init__(self, results: Storage):
        self.storage = results
        self._snapshot: Snapshot | None = None
        self._located: Located | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def _current(self) -> Located | None:
        now = time.monotonic()
        if self.storage.is_local or self._located is None or now - self._checked >= REMOTE_CHECK_S:
            self._located, self._checked = locate(self.storage), now
        return self._located

    @property
    def version(self) -> tuple[int, int]:
        with self._lock:
            located = self._current()
        return located.key if located else (0, 0)

    def snapshot(self) -> Snapshot:
        with self._lock:
            located = self._current()
            if located is None:
                raise NoSnapshot(f"{self.storage} has no snapshot yet")
            if self._snapshot is None or self._snapshot.key != located.key:
                # The old snapshot is not closed here: another thread may still be reading from it; it is released
                # when the last cursor on it goes away.
                self._snapshot = open_snapshot(self.storage, located)
            return self._snapshot

    def connection(self) -> duckdb.DuckDBPyConnection:
        return self.snapshot().con

    def query(self, sql: str, params=None) -> tuple[list[str], list[tuple]]:
        return self.snapshot().query(sql, params)

    def close(self) -> None:
        if self._snapshot is not None:
            self._snapshot.close()
            self._snapshot = None
