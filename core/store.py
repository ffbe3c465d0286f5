"""The results store: per-run shards (the truth) and `results.duckdb`, a snapshot rebuilt from them.

Layout of a results dir (`--results-dir`, env RESNET_STUDY_RESULTS, default ./results):

    results.duckdb            tables runs, epochs, confusion (+ _shards, the sync bookkeeping); never written in place
    runs/<run_id>/run.json    the run's shard: its `runs` row, its `epochs` rows, its `confusion` rows
    runs/<run_id>/checkpoint.pt

Why this shape (DuckDB admits one read-write process XOR many read-only ones per file, and file locks are
unreliable on NFS):

- A job writes only its own shard, by atomic replace (write a temp file, fsync, rename). Jobs never contend.
- `sync()` brings `results.duckdb` up to date: it copies the current file to a private temp file, upserts the
  shards that changed since (by inode / mtime / size, recorded in `_shards`), and renames the temp file over
  `results.duckdb`. Nobody ever writes to a file that anybody has open, so a DuckDB CLI, the results service or a
  `results query` holding the old file open neither blocks a job nor is blocked: it keeps its consistent snapshot,
  and the next open sees the new one.
- Only one process syncs at a time, decided by an O_EXCL lock file (atomic on local disks and NFS) that nobody waits
  for: a job that finds it taken leaves a `.sync-dirty` mark and goes on training; the holder re-syncs until no
  mark is left, so every shard written reaches the snapshot. A lock left by a killed process is taken over (dead
  pid on this host, or untouched for LOCK_STALE_S).
- Since the shards are the truth, the snapshot can always be rebuilt: delete results.duckdb and run `sync()`.

Errors are fractions in [0, 1]; times are seconds; timestamps UTC.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import duckdb

from . import StudyError
from .lease import pid_alive
from .records import TABLES, ConfusionRecord, EpochRecord, RunRecord, Shard, upgrade_run_row

DB_NAME = "results.duckdb"
RUNS_DIR = "runs"
SHARD_NAME = "run.json"
CHECKPOINT_NAME = "checkpoint.pt"
LOCK_NAME = ".sync.lock"
DIRTY_NAME = ".sync-dirty"
LOCK_STALE_S = 60.0
# Written so that the DuckDB CLI from PyPI (duckdb-cli 1.5.6) can open the file: duckdb 2.x's default format cannot.
DUCKDB_CONFIG = {"storage_compatibility_version": "v1.5.0"}

def default_results_dir() -> Path:
    return Path(os.environ.get("RESNET_STUDY_RESULTS") or "results")


def db_path(results_dir: Path) -> Path:
    return Path(results_dir) / DB_NAME


def run_dir(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / RUNS_DIR / run_id


def ensure_writable(results_dir: Path) -> None:
    """Fail early, before any run exists, when the results dir cannot be written."""
    try:
        (Path(results_dir) / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        probe = Path(results_dir) / f".write-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StudyError(
            f"results dir {results_dir} is not writable ({e.strerror}); pass a writable --results-dir "
            f"(or set RESNET_STUDY_RESULTS)"
        ) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------- job side: shards


def read_shard(results_dir: Path, run_id: str) -> Shard | None:
    path = run_dir(results_dir, run_id) / SHARD_NAME
    try:
        raw = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    raw["run"] = upgrade_run_row(raw["run"])
    return Shard.model_validate(raw)


def write_checkpoint(results_dir: Path, run_id: str, data: bytes) -> None:
    """The run's checkpoint (torch.save's bytes), replaced atomically: a reader sees the old one or the new one."""
    folder = run_dir(results_dir, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / CHECKPOINT_NAME, data)


def read_checkpoint(results_dir: Path, run_id: str) -> bytes | None:
    try:
        return (run_dir(results_dir, run_id) / CHECKPOINT_NAME).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def has_checkpoint(results_dir: Path, run_id: str) -> bool:
    return (run_dir(results_dir, run_id) / CHECKPOINT_NAME).is_file()


def write_shard(results_dir: Path, run: RunRecord, epochs: list[EpochRecord], confusion: list[ConfusionRecord],
                *, sync_now: bool = True) -> None:
    """Replace the run's shard atomically, then bring results.duckdb up to date if nobody else is doing it."""
    folder = run_dir(results_dir, run.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    shard = Shard(run=run, epochs=epochs, confusion=confusion)
    atomic_write_bytes(folder / SHARD_NAME, shard.model_dump_json().encode())
    if sync_now:
        sync(results_dir)


# ---------------------------------------------------------------- sync: shards -> results.duckdb


def _mark_dirty(results_dir: Path) -> None:
    with open(Path(results_dir) / DIRTY_NAME, "a"):
        pass


def _take_dirty(results_dir: Path) -> bool:
    try:
        os.unlink(Path(results_dir) / DIRTY_NAME)
        return True
    except FileNotFoundError:
        return False


def _lock_is_stale(lock: Path) -> bool:
    try:
        info = json.loads(lock.read_text() or "{}")
        age = time.time() - lock.stat().st_mtime
    except (OSError, ValueError):
        return False  # being written or just released: not stale, try again later
    if info.get("host") == socket.gethostname() and info.get("pid") and not pid_alive(int(info["pid"])):
        return True
    return age > LOCK_STALE_S


@contextmanager
def _try_lock(results_dir: Path):
    """Yield True when this process holds the sync lock, False when someone else does. Never waits."""
    lock = Path(results_dir) / LOCK_NAME
    fd = None
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            if not _lock_is_stale(lock):
                break
            try:
                lock.unlink()
            except FileNotFoundError:
                pass
    if fd is None:
        yield False
        return
    try:
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode())
        os.close(fd)
        yield True
    finally:
        try:
            lock.unlink()
        except FileNotFoundError:
            pass


def sync(results_dir: Path) -> bool:
    """Bring results.duckdb up to date with every shard. Returns False if another process holds the sync (it will
    pick up this process's changes: see the module docstring), True once this process has synced."""
    results_dir = Path(results_dir)
    _mark_dirty(results_dir)
    while True:
        with _try_lock(results_dir) as held:
            if not held:
                return False
            while _take_dirty(results_dir):
                _sync_once(results_dir)
                os.utime(results_dir / LOCK_NAME)  # heartbeat: a long sync is not a stale lock
        if not (results_dir / DIRTY_NAME).exists():
            return True


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """The tables of core.records in `con`; a snapshot written by an older version gains the columns added since."""
    for table, cols in TABLES.items():
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{c} {t}' for c, t in cols.items())})")
        for c, t in cols.items():
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {c} {t}")
    con.execute(
        "CREATE TABLE IF NOT EXISTS _shards (run_id VARCHAR PRIMARY KEY, inode UBIGINT, mtime_ns UBIGINT, size UBIGINT)"
    )


def _scan_shards(results_dir: Path) -> dict[str, tuple[int, int, int]]:
    found = {}
    try:
        entries = list(os.scandir(results_dir / RUNS_DIR))
    except FileNotFoundError:
        return found
    for entry in entries:
        try:
            st = os.stat(os.path.join(entry.path, SHARD_NAME))
        except (FileNotFoundError, NotADirectoryError):
            continue
        found[entry.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def _sync_once(results_dir: Path) -> None:
    db = db_path(results_dir)
    tmp = results_dir / f".{DB_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if db.exists():
            shutil.copyfile(db, tmp)
        con = duckdb.connect(str(tmp), config=DUCKDB_CONFIG)
        try:
            changed = _apply_shards(con, results_dir)
            if changed or not db.exists():
                con.execute("CHECKPOINT")
        finally:
            con.close()
        if changed or not db.exists():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, db)
    finally:
        for leftover in (tmp, Path(f"{tmp}.wal")):
            leftover.unlink(missing_ok=True)


def _apply_shards(con: duckdb.DuckDBPyConnection, results_dir: Path) -> bool:
    create_schema(con)
    known = {r[0]: tuple(r[1:]) for r in con.execute("SELECT run_id, inode, mtime_ns, size FROM _shards").fetchall()}
    on_disk = _scan_shards(results_dir)
    changed = [rid for rid, st in on_disk.items() if known.get(rid) != st]
    removed = [rid for rid in known if rid not in on_disk]
    if not changed and not removed:
        return False
    rows: dict[str, list[dict]] = {t: [] for t in TABLES}
    stats = []
    for rid in changed:
        try:
            shard = json.loads((run_dir(results_dir, rid) / SHARD_NAME).read_text())
        except (FileNotFoundError, ValueError):
            continue  # replaced or removed while we looked: the next sync sees the new version
        rows["runs"].append(upgrade_run_row(shard["run"]))
        rows["epochs"] += shard.get("epochs", [])
        rows["confusion"] += shard.get("confusion", [])
        stats.append((rid, *on_disk[rid]))
    ids = [s[0] for s in stats] + removed
    con.execute("BEGIN")
    for table in TABLES:
        con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT unnest($ids))", {"ids": ids})
        _insert_rows(con, table, rows[table])
    con.execute("DELETE FROM _shards WHERE run_id IN (SELECT unnest($ids))", {"ids": ids})
    if stats:
        con.executemany("INSERT INTO _shards VALUES (?, ?, ?, ?)", stats)
    con.execute("COMMIT")
    return True


def _insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict]) -> None:
    """Bulk insert through newline-delimited JSON (DuckDB parses it natively: ~100x faster than executemany)."""
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


def connect_read(results_dir: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the current snapshot. Never blocks a writer: writers never touch an open file.
    If someone opened results.duckdb read-write by hand (a DuckDB CLI without -readonly), read a private copy."""
    results_dir = Path(results_dir)
    db = db_path(results_dir)
    if not db.exists():
        if not results_dir.is_dir():
            raise StudyError(f"no results dir at {results_dir}; run `resnet-study train` first or pass --results-dir")
        if os.access(results_dir, os.W_OK):
            sync(results_dir)
        if not db.exists():
            raise StudyError(f"{db} does not exist yet; run `resnet-study train --results-dir {results_dir}` first")
    try:
        return _attach_read_only(db)
    except duckdb.IOException:
        copy = Path(tempfile.mkdtemp(prefix="resnet-study-")) / DB_NAME
        shutil.copyfile(db, copy)
        con = _attach_read_only(copy)
        copy.unlink()  # stays readable through the open handle; nothing left behind
        return con


def _attach_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """`path` read-only in a private in-memory instance, as the default catalog `store`. Not duckdb.connect(path):
    DuckDB caches one instance per path in a process, so while any connection to an older snapshot is alive,
    connect(path) returns that OLD snapshot even after sync replaced the file. Cursors start in the default
    catalog again: run `USE store` on them (StoreReader.query does)."""
    con = duckdb.connect()
    con.execute(f"ATTACH '{str(path).replace(chr(39), chr(39) * 2)}' AS store (READ_ONLY)")
    con.execute("USE store")
    return con


def data_version(results_dir: Path) -> tuple[int, int]:
    """Changes whenever sync publishes a new snapshot: a cache key for anything derived from the store."""
    try:
        st = db_path(results_dir).stat()
        return st.st_ino, st.st_mtime_ns
    except FileNotFoundError:
        return 0, 0


class StoreReader:
    """A read-only connection that follows the newest snapshot (reopens when sync has replaced the file)."""

    def __init__(self, results_dir: Path):
        self.results_dir = Path(results_dir)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._version = (0, 0)
        self._lock = threading.Lock()

    @property
    def version(self) -> tuple[int, int]:
        return data_version(self.results_dir)

    def connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            version = self.version
            if self._con is None or version != self._version:
                # The old connection is not closed here: another thread may still be reading from it; it is
                # released when the last cursor on it goes away.
                self._con = connect_read(self.results_dir)
                self._version = version
            return self._con

    def query(self, sql: str, params=None) -> tuple[list[str], list[tuple]]:
        cur = self.connection().cursor()
        try:
            cur.execute("USE store")
            cur.execute(sql, params or [])
            cols = [d[0] for d in cur.description] if cur.description else []
            return cols, cur.fetchall()
        finally:
            cur.close()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
