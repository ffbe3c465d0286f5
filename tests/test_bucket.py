"""Results and data in a bucket, through the CLI a user runs, against a real S3 protocol server on 127.0.0.1
(tests/s3_server.py). The storage layer's own guarantees on a bucket (racing lease creates, a killed or paused
holder taken over, 8 writers and a polling reader, generations never overwritten, requests per epoch) are in
tests/test_storage.py, run on both backends; this file checks the commands on top of them."""

from __future__ import annotations

import json
import subprocess

import pytest

from resnet_study.core import EXIT_RETRY, EXIT_USER_ERROR, store
from resnet_study.core.store import CHECKPOINT_NAME, POINTER_NAME, RUNS_DIR, SHARD_NAME, SNAPSHOTS_DIR
from tests.helpers import CLI, ROOT, Server, cli_env, run_cli, run_cli_many, tiny_train_args

pytestmark = pytest.mark.slow

RUNS_SQL = "SELECT run_id, status, epochs_done, test_error, data_fingerprint FROM runs ORDER BY run_id"
SAME_KEYS = ("run_id", "status", "epochs_done", "test_error", "train_loss", "data_fingerprint", "params", "device_type")
EPOCHS_SQL = "SELECT run_id, epoch, test_error, train_loss FROM epochs ORDER BY run_id, epoch"


def _keys(s3_server, url: str) -> list[str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"].removeprefix(prefix + "/") for page in pages for o in page.get("Contents", []))


def _answers(*where) -> list[dict]:
    """What a user reads: the runs and epochs (SQL), the comparison table and the comparisons (training times,
    which no two trainings share, left out)."""
    out = run_cli_many([argv for w in where for argv in (
        ["results", "query", RUNS_SQL, "--format", "json", "--results-dir", w],
        ["results", "query", EPOCHS_SQL, "--format", "json", "--results-dir", w],
        ["results", "table", "--format", "csv", "--results-dir", w],
        ["results", "compare", "--format", "json", "--results-dir", w])])
    assert all(p.returncode == 0 for p in out), [p.stderr for p in out]
    return [{"runs": json.loads(q.stdout), "epochs": json.loads(e.stdout),
             "table": [line for line in t.stdout.splitlines() if "seconds" not in line],
             "compare": json.loads(c.stdout)} for q, e, t, c in zip(*[iter(out)] * 4)]


def test_a_run_and_a_cell_in_a_bucket_answer_as_on_a_disk(s3, s3_server, tmp_path, fashion_mnist_available):
    """The same two cells (seeds 0,1 of ResNet-8 and of ResNet-14) on a disk and in a bucket, the bucket's data set pushed there
    first: shards, checkpoints and snapshots land in the bucket, and the CLI and the service answer the same."""
    data = s3.rsplit("/", 1)[0] + "/datasets"
    pushed = run_cli("data", "push", "fashion-mnist", data)
    assert "4 files in" in pushed.stdout and _keys(s3_server, data) == sorted(
        [f"FashionMNIST/raw/{p.name}" for p in store_files()] + ["fashion-mnist.manifest.json"])
    disk = tmp_path / "disk"
    trains = run_cli_many([tiny_train_args(where, *seeds, *data_dir)
                           for where, data_dir in ((disk, ()), (s3, ("--data-dir", data)))
                           for seeds in (("--seeds", "0,1"), ("--seeds", "0,1", "--n", "2"))])
    assert [p.returncode for p in trains] == [0, 0, 0, 0], [p.stderr[-500:] for p in trains]
    on_disk, in_bucket = _answers(disk, s3)
    assert len(on_disk["runs"]) == 4 and {r["status"] for r in on_disk["runs"]} == {"completed"}
    assert len(on_disk["compare"]) >= 1 and len(on_disk["table"]) >= 3
    assert in_bucket == on_disk  # the same numbers, the same data fingerprint, read from the bucket's snapshot
    keys = _keys(s3_server, s3)
    for run in in_bucket["runs"]:
        assert f"{RUNS_DIR}/{run['run_id']}/{SHARD_NAME}" in keys and f"{RUNS_DIR}/{run['run_id']}/{CHECKPOINT_NAME}" in keys
    assert POINTER_NAME in keys
    assert any(k.startswith(f"{SNAPSHOTS_DIR}/") and k.endswith(".duckdb") for k in keys)
    assert not (ROOT / "s3:").exists()  # nothing under a local folder named after the URL
    servers = [Server(disk), Server(s3)]
    try:
        for url in ("/tables/comparison?dataset=fashion-mnist", "/tables/comparisons", "/runs"):
            bodies = [s.get(url).json() for s in servers]
            if url == "/runs":
                bodies = [[{k: r.get(k) for k in SAME_KEYS} for r in b] for b in bodies]
            else:
                bodies = [_without_times(b) for b in bodies]
            assert bodies[0] == bodies[1], (url, json.dumps(bodies[0])[:3000], json.dumps(bodies[1])[:3000])
    finally:
        for s in servers:
            s.stop()


def store_files():
    from resnet_study.core import data

    return data.data_files("fashion-mnist")


def _without_times(body):
    """A table's rows without the training-time metric (or any field that names seconds)."""
    if isinstance(body, dict):
        return {k: _without_times(v) for k, v in body.items() if "seconds" not in k and k != "generated_at"}
    if isinstance(body, list):
        return [_without_times(v) for v in body if not (isinstance(v, dict) and "seconds" in str(v.get("metric", "")))]
    return body


def test_kill_9_in_a_bucket_resumes_from_its_checkpoint_and_two_trainers_make_one_run(s3, s3_server,
                                                                                        fashion_mnist_available):
    """SIGKILL right after epoch 1 is stored: the same command resumes from the bucket's checkpoint and stores one
    row per epoch. Then two identical commands at once on a new run: one trains it, the other waits on its lease
    and reports it completed."""
    args = tiny_train_args(s3, "--epochs", "3")
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=cli_env())
    assert json.loads(proc.stdout.readline())["epoch"] == 1  # printed once epoch 1 is in the bucket
    proc.kill()
    proc.wait()
    [run_id] = [k.split("/")[1] for k in _keys(s3_server, s3) if k.endswith(CHECKPOINT_NAME)]
    resumed = run_cli(*args)
    assert "resuming after epoch" in resumed.stderr, resumed.stderr
    rows = json.loads(run_cli("results", "query", "SELECT epoch, count(*) AS copies FROM epochs GROUP BY epoch "
                              "ORDER BY epoch", "--format", "json", "--results-dir", s3).stdout)
    assert rows == [{"epoch": e, "copies": 1} for e in (1, 2, 3)]

    twin = tiny_train_args(s3, "--seed", "1")
    procs = [subprocess.Popen([*CLI, *twin], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env()) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    trained = [e for _, e in outs if "steps in this process" in e and "(0 steps" not in e]
    assert len(trained) == 1, [e for _, e in outs]  # one trainer; the other saw the lease, then the completed run
    rows = json.loads(run_cli("results", "query", "SELECT run_id, count(*) AS n FROM epochs GROUP BY run_id "
                              "ORDER BY run_id", "--format", "json", "--results-dir", s3).stdout)
    assert {r["run_id"]: r["n"] for r in rows}[run_id] == 3 and sorted(r["n"] for r in rows) == [2, 3]


def test_bad_bucket_input_is_one_line_exit_2_and_writes_nothing(s3, s3_server, tmp_path, fashion_mnist_available):
    bucket = s3.split("/")[2]
    missing = f"s3://study-missing-{bucket[-6:]}/x"
    train = tiny_train_args("RESULTS", "--epochs", "1")
    at = train.index("RESULTS")
    cases = [  # (argv, env, what the line must say)
        (train[:at] + ["gs://bucket/x"] + train[at + 1:], {}, "unsupported storage 'gs://bucket/x'"),
        (train[:at] + ["http://host/x"] + train[at + 1:], {}, "unsupported storage 'http://host/x'"),
        (train[:at] + ["s3://Bad_Bucket/x"] + train[at + 1:], {}, "malformed S3 URL"),
        (train[:at] + [missing] + train[at + 1:], {}, "does not exist"),
        (train[:at] + [s3] + train[at + 1:], {"AWS_SECRET_ACCESS_KEY": "wrong"}, "rejected the credentials"),
        (train[:at] + [s3] + train[at + 1:], {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"},
         "cannot reach the S3 endpoint"),
        (["results", "table", "--results-dir", missing], {}, "does not exist"),
        (["results", "query", "SELECT 1", "--results-dir", "gs://bucket/x"], {}, "unsupported storage"),
        (["serve", "--results-dir", missing, "--port", "1"], {}, "does not exist"),
        (["report", "--results-dir", missing, "--out", str(tmp_path / "report")], {}, "does not exist"),
        (["sweep", "status", "demo.yaml", "--results-dir", "s3://"], {}, "malformed S3 URL"),
        (["sweep", "render", "demo.yaml", "--results-dir", "results"], {}, "give s3://bucket/prefix"),
        (["data", "push", "fashion-mnist", "gs://bucket/datasets"], {}, "unsupported storage"),
        (["data", "push", "fashion-mnist", str(tmp_path / "datasets")], {}, "is an s3://bucket/prefix URL"),
        (["data", "push", "fashion-mnist", missing], {}, "does not exist"),
    ]
    procs = run_cli_many([c[0] for c in cases], case_env=[c[1] for c in cases])
    for (argv, _, says), proc in zip(cases, procs):
        assert proc.returncode == EXIT_USER_ERROR, (argv, proc.returncode, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and says in proc.stderr, \
            (argv, proc.stderr)
    assert _keys(s3_server, s3) == [] and not (tmp_path / "report").exists()
    assert not any((ROOT / name).exists() for name in ("s3:", "gs:", "http:", "RESULTS"))
    # a data set not (yet) pushed may come: exit 75, which a Job retries, naming the command that uploads it
    [proc] = run_cli_many([tiny_train_args(s3, "--data-dir", s3.rsplit("/", 1)[0] + "/nodata")])
    assert proc.returncode == EXIT_RETRY and "resnet-study data push fashion-mnist" in proc.stderr, proc.stderr
    assert store.has_snapshot(store.results_location(s3)) is False
