"""The storage layer, the leases and the snapshots on both backends: a local disk and a bucket on a real S3 protocol
server (moto's, in a subprocess on 127.0.0.1: tests/s3_server.py), with real processes racing where it matters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from resnet_study.core import StudyError, store
from resnet_study.core.lease import Lease, read_holder
from resnet_study.core.records import EpochRecord, RunRecord
from resnet_study.core.storage import open_storage, s3_client
from tests.helpers import ROOT, run_cli


@pytest.fixture(params=["disk", "bucket"])
def where(request, tmp_path) -> str:
    """A results location on each backend."""
    return str(tmp_path / "results") if request.param == "disk" else request.getfixturevalue("s3")


def child_env(**extra) -> dict:
    """This process's environment (the test server's AWS variables included) for a child Python."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def python(code: str, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=child_env(), text=True, **popen)


# ---------------------------------------------------------------- the layer itself


def test_each_operation_means_the_same_on_both_backends(where):
    s = open_storage(where)
    first = s.create("a/x.json", b"1")
    assert first is not None and s.create("a/x.json", b"2") is None  # exclusive
    assert s.read("a/x.json") == b"1"
    second = s.swap("a/x.json", b"2", first)
    assert second is not None and s.swap("a/x.json", b"3", first) is None  # compare-and-swap by version
    assert s.read_versioned("a/x.json") == (b"2", s.version("a/x.json")) and s.version("a/x.json") == second
    renewed = s.renew("a/x.json", b"2'", second)
    assert renewed is not None and renewed != second and s.renew("a/x.json", b"2''", second) is None
    assert s.delete("a/x.json", second) is False and s.read("a/x.json") is not None  # stale version: kept
    s.write("a/y.txt", b"y")
    s.write("b/z.json", b"z")
    assert set(s.list("a")) == {"a/x.json", "a/y.txt"} and set(s.list("", suffix=".json")) == {"a/x.json", "b/z.json"}
    assert s.delete("a/x.json", s.version("a/x.json")) is True and s.read("a/x.json") is None
    assert s.delete("a/y.txt") is True and s.delete("a/y.txt") is False
    assert s.read("nothing/here") is None and s.version("nothing/here") is None


def test_shard_and_checkpoint_round_trip(where):
    run = RunRecord(run_id="r1", status="running", epochs_done=1)
    epochs = [EpochRecord(run_id="r1", epoch=1, lr=0.1, test_error=0.5)]
    store.write_shard(store.results_location(where), run, epochs, [])
    assert store.read_shard(store.results_location(where), "r1").run == run and store.read_shard(store.results_location(where), "r1").epochs == epochs
    assert store.read_shard(store.results_location(where), "r2") is None
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 1, "rng": torch.get_rng_state()}
    assert not store.checkpoint_exists(store.results_location(where), "r1") and store.load_checkpoint(store.results_location(where), "r1") is None
    store.save_checkpoint(store.results_location(where), "r1", state)
    loaded = store.load_checkpoint(store.results_location(where), "r1", map_location="cpu")
    assert store.checkpoint_exists(store.results_location(where), "r1") and loaded["epoch"] == 1
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and torch.equal(loaded["rng"], state["rng"])
    con = store.connect_read(store.results_location(where))
    assert con.execute("SELECT run_id, epochs_done FROM runs").fetchall() == [("r1", 1)]


# ---------------------------------------------------------------- leases

RACE = """
import json, sys, time
from resnet_study.core.lease import Lease
where, go, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
time.sleep(max(0.0, go - time.time()))
won = [Lease(f"{where}/runs/r{i}", f"r{i}", log=lambda m: None, heartbeat_s=600).try_acquire() for i in range(rounds)]
print(json.dumps(won), flush=True)
sys.stdin.read()  # alive, holding what it won, until both have raced
"""


@pytest.mark.slow  # real processes racing or many syncs: seconds each, bucket and disk
def test_two_processes_racing_for_a_lease_exactly_one_wins(where):
    rounds = 20
    go = time.time() + 2.5  # both have imported and wait for the same instant
    procs = [python(RACE, where, str(go), str(rounds), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for _ in range(2)]
    won = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.communicate("", timeout=60)
    assert [p.returncode for p in procs] == [0, 0]
    assert [a + b for a, b in zip(*won)] == [1] * rounds, won  # each of the 20 leases: one winner, never two, never none


HOLD = """
import sys, time
from resnet_study.core.lease import Lease
lease = Lease(sys.argv[1], "r1", log=lambda m: None, heartbeat_s=0.2).acquire(wait=False)
print("held", flush=True)
time.sleep(600)
"""


def test_the_lease_of_a_killed_holder_is_taken_over(where):
    folder = f"{where}/runs/r1"
    holder = python(HOLD, folder, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not Lease(folder, "r1", log=lambda m: None).try_acquire()  # alive: not taken
        assert read_holder(folder).pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    logs = []
    taker = Lease(folder, "r1", log=logs.append)
    assert taker.try_acquire() and "taking over the lease of host" in logs[0]  # same host, pid gone
    taker.release()
    assert read_holder(folder) is None


PAUSABLE = """
import sys, time
from resnet_study.core.lease import Lease
lease = Lease(sys.argv[1], "r1", log=print, heartbeat_s=0.2).acquire(wait=False)
print("held", flush=True)
while not lease.lost:
    time.sleep(0.05)
sys.stdout.flush()
"""


@pytest.mark.slow  # real processes racing or many syncs: seconds each, bucket and disk
def test_a_paused_holder_is_taken_over_and_knows_it_lost(where):
    """A holder that stops heartbeating (a paused node: SIGSTOP) is taken over once its heartbeat is older than
    stale_s; when it resumes, its heartbeat (a compare-and-swap against its own version) fails, so it stops."""
    folder = f"{where}/runs/r1"
    holder = python(PAUSABLE, folder, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        # stale_s well above a bucket's clock resolution: LastModified counts whole seconds
        assert not Lease(folder, "r1", log=lambda m: None, stale_s=2).try_acquire()  # it heartbeats
        holder.send_signal(signal.SIGSTOP)
        time.sleep(3)
        taker = Lease(folder, "r1", log=lambda m: None, stale_s=2)
        assert taker.try_acquire()
        holder.send_signal(signal.SIGCONT)
        out = holder.communicate(timeout=30)[0]
        assert "r1: lost the lease to host" in out and holder.returncode == 0
        assert read_holder(folder).token == taker.token  # the old holder never overwrote the new lease
        taker.release()
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- snapshots


def _runs(snapshot) -> list:
    return snapshot.query("SELECT run_id, epochs_done FROM runs ORDER BY run_id")[1]


@pytest.mark.slow  # real processes racing or many syncs: seconds each, bucket and disk
def test_a_reader_keeps_its_generation_while_20_syncs_publish(where):
    store.write_shard(store.results_location(where), RunRecord(run_id="r00", status="running", epochs_done=0), [], [])
    held = store.open_snapshot(store.results_location(where))
    before, g = _runs(held), held.generation
    s = open_storage(where)
    first_seen = dict(store.list_generations(s))
    follower = store.StoreReader(store.results_location(where))
    assert follower.query("SELECT count(*) FROM runs")[1] == [(1,)]
    for i in range(1, 21):
        store.write_shard(store.results_location(where), RunRecord(run_id=f"r{i:02d}", status="running", epochs_done=i), [], [])
        assert _runs(held) == before  # same answers, no error
        for gen, version in store.list_generations(s).items():
            assert first_seen.setdefault(gen, version) == version  # a published generation is never rewritten
    newest = store.open_snapshot(store.results_location(where))
    assert newest.generation == g + 20 and len(_runs(newest)) == 21
    if not s.is_local:
        time.sleep(store.REMOTE_CHECK_S)  # a reader of a bucket looks at CURRENT that often
    assert follower.query("SELECT count(*) FROM runs")[1] == [(21,)]  # a StoreReader follows the newest
    assert set(store.list_generations(s)) == set(range(g, g + 21))  # all within the grace period
    assert store.data_version(store.results_location(where))[0] == g + 20
    store.sync(store.results_location(where), grace_s=0.0)
    assert set(store.list_generations(s)) == {g + 20}  # collected after the grace period
    assert _runs(held) == before  # still answering: its file is open (a local disk or this machine's cache)


WRITER = """
import sys
from resnet_study.core import store
from resnet_study.core.records import EpochRecord, RunRecord
where, w = sys.argv[1], sys.argv[2]
rows = []
for e in range(1, 3):
    rows.append(EpochRecord(run_id=w, epoch=e, lr=0.1, test_error=1 / e))
    store.write_shard(store.results_location(where), RunRecord(run_id=w, status="completed" if e == 2 else "running", epochs_done=e), rows, [])
"""


@pytest.mark.slow  # real processes racing or many syncs: seconds each, bucket and disk
def test_eight_writers_and_a_polling_reader(where):
    writers = [python(WRITER, where, f"w{i}", stderr=subprocess.PIPE) for i in range(8)]
    s = open_storage(where)
    reads, failures, counts, first_seen = 0, [], [], {}
    stop = threading.Event()

    def poll():
        nonlocal reads
        while not stop.is_set():
            try:
                if store.has_snapshot(store.results_location(where)):
                    writing = any(p.poll() is None for p in writers)
                    snap = store.open_snapshot(store.results_location(where))
                    counts.append(snap.query("SELECT count(*) FROM epochs")[1][0][0])
                    snap.close()
                    reads += writing
                for gen, version in store.list_generations(s).items():
                    if first_seen.setdefault(gen, version) != version:
                        failures.append(f"generation {gen} was rewritten")
            except Exception as e:  # any failed read fails the test
                failures.append(repr(e))
            time.sleep(0.05)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        errors = [p.communicate(timeout=120)[1] for p in writers]
    finally:
        stop.set()
        reader.join()
    assert [p.returncode for p in writers] == [0] * 8, errors
    assert not failures, failures[:3]
    assert reads >= 1 and counts == sorted(counts)  # it read while they wrote; snapshots only grow
    final = store.open_snapshot(store.results_location(where))
    assert final.query("SELECT run_id, status, epochs_done FROM runs ORDER BY run_id")[1] == [
        (f"w{i}", "completed", 2) for i in range(8)]
    assert final.query("SELECT count(*) FROM epochs")[1] == [(16,)]
    assert s.version(store.LOCK_NAME) is None and s.version(store.DIRTY_NAME) is None


def test_an_old_results_dir_is_read_then_synced_into_generations(old_store):
    """A 0.1.0 results dir (results.duckdb, no snapshots/) answers as it is; its first sync publishes generation 1
    with the same rows, and results.duckdb becomes the DuckDB CLI's copy of it."""
    sql = "SELECT run_id, status, epochs_done, test_error FROM runs ORDER BY run_id"
    legacy = store.open_snapshot(store.results_location(old_store))
    assert legacy.generation == 0 and store.data_version(store.results_location(old_store))[0] == 0
    rows, epochs = legacy.query(sql)[1], legacy.query("SELECT count(*) FROM epochs")[1]
    assert len(rows) == 9
    assert store.sync(store.results_location(old_store))
    synced = store.open_snapshot(store.results_location(old_store))
    assert synced.generation == 1 and (old_store / "snapshots" / "CURRENT").is_file()
    assert synced.query(sql)[1] == rows and synced.query("SELECT count(*) FROM epochs")[1] == epochs
    assert store.data_version(store.results_location(old_store))[0] == 1
    assert store._attach_read_only(store.db_path(old_store)).execute(sql).fetchall() == rows


# ---------------------------------------------------------------- what requests a run makes


def test_requests_per_epoch_and_per_heartbeat_on_a_bucket(s3):
    """The counts core/store.py's docstring gives: one epoch's shard + sync, its checkpoint, one heartbeat."""
    store.write_shard(store.results_location(s3), RunRecord(run_id="r1", status="running"), [], [])
    calls = []
    client = s3_client()
    client.meta.events.register("before-call.s3", lambda model, **kw: calls.append(model.name), unique_id="count")
    try:
        store.write_shard(store.results_location(s3), RunRecord(run_id="r1", status="running", epochs_done=1), [], [])
        epoch = len(calls)
        calls.clear()
        store.save_checkpoint(store.results_location(s3), "r1", {"epoch": 1})
        checkpoint = list(calls)
        calls.clear()
        lease = Lease(f"{s3}/runs/r1", "r1", log=lambda m: None, heartbeat_s=0.2).acquire(wait=False)
        calls.clear()
        time.sleep(0.3)
        heartbeat = list(calls)
        lease.release()
    finally:
        client.meta.events.unregister("before-call.s3", unique_id="count")
    assert epoch == 14 and checkpoint == ["PutObject"] and heartbeat == ["PutObject"]


# ---------------------------------------------------------------- bad locations


@pytest.mark.parametrize("url, says", [
    ("gs://bucket/x", "unsupported storage 'gs://bucket/x'"),
    ("http://host/x", "unsupported storage 'http://host/x'"),
    ("s3://", "malformed S3 URL"),
    ("s3:/bucket/x", "malformed S3 URL"),
    ("s3://Bad_Bucket/x", "malformed S3 URL"),
    ("s3://bucket//x", "malformed S3 URL"),
])
def test_a_bad_url_is_one_line(url, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StudyError) as e:
        store.ensure_writable(store.results_location(url))
    assert says in str(e.value) and "\n" not in str(e.value) and "s3://bucket/prefix" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # nothing written, no local folder named after the URL


def test_a_missing_bucket_wrong_credentials_and_no_endpoint_are_one_line(s3, s3_server, monkeypatch):
    bucket = s3.split("/")[2]
    cases = {
        f"bucket study-missing-{bucket[-6:]} does not exist": ({}, f"s3://study-missing-{bucket[-6:]}/x"),
        "rejected the credentials": ({"AWS_SECRET_ACCESS_KEY": "wrong"}, s3),
        "rejected the credentials ": ({"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0"}, s3),
        "cannot reach the S3 endpoint": ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}, s3),
    }
    for says, (env, url) in cases.items():
        with monkeypatch.context() as m:
            for name, value in env.items():
                m.setenv(name, value)
            with pytest.raises(StudyError) as e:
                store.write_shard(store.results_location(url), RunRecord(run_id="r1", status="running"), [], [])
        assert says.strip() in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # nothing half-written


def test_no_credentials_at_all_is_one_line(s3, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StudyError, match=r"^no AWS credentials for s3://.*AWS_ACCESS_KEY_ID"):
        store.ensure_writable(store.results_location(s3))


def test_the_cli_exits_2_with_one_line(s3):
    proc = run_cli("results", "sync", "--results-dir", f"s3://study-missing-{s3.split('/')[2][-6:]}/x", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr, proc.stderr


def test_a_path_keeps_working_and_names_its_backend(tmp_path):
    assert open_storage(tmp_path / "results").is_local and open_storage(str(tmp_path)).is_local
    assert open_storage(Path("s3://bucket/study/x")).url == "s3://bucket/study/x"  # a Path collapsed the '//'
    assert open_storage("s3://bucket/").url == "s3://bucket" and open_storage("s3://bucket/a/b/").url == "s3://bucket/a/b"
    assert (open_storage("s3://bucket/a") / "runs/r1").url == "s3://bucket/a/runs/r1"
