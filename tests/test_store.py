"""The results store under concurrency: many jobs, readers all along, a DuckDB CLI holding the file."""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import pytest

from resnet_study.core import store
from resnet_study.core.records import RunRecord
from tests.helpers import CLI, cli_env, query, run_cli, tiny_train_args

DUCKDB_CLI = shutil.which("duckdb", path=str(Path(CLI[0]).parent)) or "duckdb"


@pytest.mark.slow
def test_eight_concurrent_jobs_with_a_reader_polling(tmp_path, fashion_mnist_available):
    results = tmp_path / "results"
    procs = [subprocess.Popen([*CLI, *tiny_train_args(results, "--seed", str(seed))], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=cli_env()) for seed in range(8)]
    reads_while_writing, failures, seen_epochs = 0, [], []
    stop = threading.Event()

    def reader():
        nonlocal reads_while_writing
        while not stop.is_set():
            try:
                if store.db_path(results).exists():
                    writing = any(p.poll() is None for p in procs)
                    con = store.connect_read(store.results_location(results))
                    seen_epochs.append(con.execute("SELECT count(*) FROM epochs").fetchone()[0])
                    con.close()
                    reads_while_writing += writing
            except Exception as e:  # any failed read fails the test
                failures.append(repr(e))
            time.sleep(0.05)

    t = threading.Thread(target=reader)
    t.start()
    try:
        errors = [p.communicate(timeout=600)[1] for p in procs]
    finally:
        stop.set()
        t.join()
    assert [p.returncode for p in procs] == [0] * 8, errors
    assert not failures, failures[:3]
    assert reads_while_writing >= 1  # it read snapshots while jobs were still writing them
    assert seen_epochs == sorted(seen_epochs)  # snapshots only ever grow

    runs = query(results, "SELECT seed, status, epochs_done FROM runs ORDER BY seed")
    assert runs == [{"seed": s, "status": "completed", "epochs_done": 2} for s in range(8)]
    per_epoch = query(results, "SELECT run_id, epoch, count(*) AS copies FROM epochs GROUP BY ALL")
    assert len(per_epoch) == 16 and all(r["copies"] == 1 for r in per_epoch)
    assert query(results, "SELECT count(*) AS n FROM confusion") == [{"n": 8 * 100}]
    assert not list(results.glob(".*tmp*")) and not (results / store.LOCK_NAME).exists()


@pytest.mark.slow
def test_a_reader_sees_each_finished_epoch_within_seconds(tmp_path, fashion_mnist_available):
    results = tmp_path / "results"
    args = tiny_train_args(results, "--epochs", "3", "--train-limit", "1000")
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=cli_env())
    lags = []
    for line in proc.stdout:  # each line is printed once the epoch is stored
        epoch = json.loads(line)["epoch"]
        t0 = time.monotonic()
        while True:
            con = store.connect_read(store.results_location(results))
            n = con.execute("SELECT count(*) FROM epochs").fetchone()[0]
            con.close()
            if n >= epoch:
                break
            assert time.monotonic() - t0 < 5, f"epoch {epoch} not readable after 5 s"
            time.sleep(0.05)
        lags.append(time.monotonic() - t0)
    assert proc.wait() == 0 and len(lags) == 3


def _duckdb_cli(db: Path, *flags: str) -> subprocess.Popen:
    """An interactive DuckDB CLI session left open on the file, as a user would."""
    return subprocess.Popen([DUCKDB_CLI, *flags, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_open_readers_and_the_duckdb_cli_never_block_a_run(tmp_path, fashion_mnist_available):
    results = tmp_path / "results"
    run_cli(*tiny_train_args(results, "--seed", "1"))
    db = store.db_path(results)
    held = duckdb.connect(str(db), read_only=True)  # a user's notebook, left open
    cli = _duckdb_cli(db, "-readonly")
    try:
        run_cli(*tiny_train_args(results, "--seed", "2"), timeout=300)
        assert held.execute("SELECT count(*) FROM runs").fetchone()[0] == 1  # its snapshot stays consistent
        assert cli.poll() is None
        assert {r["seed"] for r in query(results, "SELECT seed FROM runs")} == {1, 2}
    finally:
        held.close()
        cli.communicate(".quit\n", timeout=30)

    # Even a DuckDB CLI opened read-write (without -readonly) on the snapshot blocks neither jobs nor readers.
    cli = _duckdb_cli(db)
    try:
        time.sleep(1)
        assert cli.poll() is None, cli.stderr.read()
        run_cli(*tiny_train_args(results, "--seed", "3"), timeout=300)
        assert {r["seed"] for r in query(results, "SELECT seed FROM runs")} == {1, 2, 3}
    finally:
        cli.communicate(".quit\n", timeout=30)


def test_a_file_held_read_write_is_read_from_a_private_copy_that_leaves_nothing_behind(old_store, tmp_path,
                                                                                        monkeypatch):
    """A 0.1.0 store's results.duckdb held open read-write by a DuckDB CLI (DuckDB then locks it for every other
    process) still answers, from a private copy in the temp dir, and the copy's folder is gone once it is open."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    cli = _duckdb_cli(store.db_path(old_store))
    try:
        time.sleep(1)
        assert cli.poll() is None, cli.stderr.read()
        with pytest.raises(duckdb.IOException):  # the lock this test is about
            duckdb.connect(str(store.db_path(old_store)), read_only=True)
        snapshot = store.open_snapshot(store.results_location(old_store))
        assert snapshot.generation == 0 and len(snapshot.query("SELECT run_id FROM runs")[1]) == 9
    finally:
        cli.communicate(".quit\n", timeout=30)
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
def test_duckdb_cli_reads_the_store_from_any_directory(tmp_path, fashion_mnist_available):
    results = tmp_path / "results"
    run_cli(*tiny_train_args(results))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([DUCKDB_CLI, "-readonly", "-csv", str(store.db_path(results)), "-c",
                          "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM epochs), "
                          "(SELECT count(*) FROM confusion)"],
                         capture_output=True, text=True, cwd=elsewhere, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1,2,100"


@pytest.mark.slow
def test_snapshot_rebuilds_from_shards(tmp_path, fashion_mnist_available):
    """The shards are the truth: delete results.duckdb and sync rebuilds it with the same rows."""
    results = tmp_path / "results"
    run_cli(*tiny_train_args(results))
    before = query(results, "SELECT * FROM epochs ORDER BY epoch")
    store.db_path(results).unlink()
    assert run_cli("results", "sync", "--results-dir", results).returncode == 0
    assert query(results, "SELECT * FROM epochs ORDER BY epoch") == before


def test_stale_lock_of_a_killed_syncer_is_taken_over(tmp_path):
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (results / store.LOCK_NAME).write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid}))
    store.write_shard(store.results_location(results), RunRecord(run_id="r1", status="running"), [], [])
    assert not (results / store.LOCK_NAME).exists()
    con = store.connect_read(store.results_location(results))
    assert con.execute("SELECT run_id, status FROM runs").fetchall() == [("r1", "running")]


@pytest.mark.slow
def test_results_query_formats_and_errors(tmp_path, fashion_mnist_available):
    results = tmp_path / "results"
    run_cli(*tiny_train_args(results))
    csv_out = run_cli("results", "query", "SELECT epoch, lr FROM epochs ORDER BY epoch", "--format", "csv",
                      "--results-dir", results).stdout
    assert csv_out.splitlines() == ["epoch,lr", "1,0.1", "2,0.01"]  # 2 epochs: milestone 1
    table = run_cli("results", "query", "SELECT layers, status FROM runs", "--results-dir", results).stdout
    assert "completed" in table and "layers" in table
    for bad in ("SELEC nonsense", "DELETE FROM runs", "CREATE TABLE x (a INT)"):
        proc = run_cli("results", "query", bad, "--results-dir", results, check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert query(results, "SELECT count(*) AS n FROM runs") == [{"n": 1}]


def test_a_snapshot_from_an_older_version_gains_the_new_columns(tmp_path):
    """A results.duckdb written before a column existed (here: runs.precision), by a version from before snapshot
    generations, is upgraded by the next sync, not rejected: the new run's value lands in the new column and the old
    run keeps NULL."""
    results = tmp_path / "results"
    store.write_shard(store.results_location(results), RunRecord(run_id="old", status="completed"), [], [])
    shutil.rmtree(results / store.SNAPSHOTS_DIR)  # what an older version left: results.duckdb alone
    con = duckdb.connect(str(store.db_path(results)), config=store.DUCKDB_CONFIG)
    con.execute("ALTER TABLE runs DROP COLUMN precision")
    con.close()
    assert store.open_snapshot(store.results_location(results)).query("SELECT * FROM runs")[0].count("precision") == 0
    store.write_shard(store.results_location(results), RunRecord(run_id="new", status="running", precision="bf16"), [], [])
    rows = store.connect_read(store.results_location(results)).execute("SELECT run_id, precision FROM runs ORDER BY run_id").fetchall()
    assert rows == [("new", "bf16"), ("old", None)]
    assert store.open_snapshot(store.results_location(results)).generation == 1  # the old file plus the new run: the first generation
