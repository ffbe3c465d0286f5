"""API latency benchmark: a SYNTHETIC store (default 10 000 runs x 100 epochs), the real server, p50 / p95 per route.

    resnet-study bench api                     # 10 000 runs x 100 epochs, 50 timed requests per route
    resnet-study bench api --runs 1000 --requests 20 --keep /tmp/synthetic-store

The store is written directly (one bulk INSERT ... SELECT per table, in the store's schema and file format), not
trained: every run is labelled `synthetic-...` and its numbers are made up (a plausible decaying error curve). It
measures the service, not the science. The server is the service under uvicorn in its own process on 127.0.0.1; the
client sends requests one at a time. For each route: the first request (cold: nothing kept for this generation,
DuckDB pages not yet read), then `--requests` timed ones (warm: the answer kept, results_api/cache.py), then as many
with If-None-Match set to the ETag they carried (a client that holds the answer: 304, no body).
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from ...core import settings, store
from ...core.config import default_milestones
from ...core.datasets import BUILTINS
from ...core.vocab import layers
from ...results_api import auth

DEPTHS = (3, 5, 7, 9, 18)  # the paper's n


def build_synthetic_store(results_dir: Path, runs: int, epochs: int) -> Path:
    """Write results.duckdb with `runs` synthetic runs of `epochs` epochs each (runs: 94 % completed, 5 % running,
    1 % failed; both data sets; n in 3,5,7,9,18; shortcut A, B and none; confusion rows for completed runs)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    db = store.db_path(results_dir)
    tmp = db.with_name(db.name + ".building")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp), config=store.DUCKDB_CONFIG)
    store.create_schema(con)
    con.execute("SELECT setseed(0.42)")
    milestones = default_milestones(epochs)
    con.execute(f"""
        CREATE TEMP TABLE spec AS SELECT i,
            CASE i % 2 WHEN 0 THEN 'cifar10' ELSE 'fashion-mnist' END AS dataset,
            $n[1 + (i // 2) % 5] AS n, $layers[1 + (i // 2) % 5] AS layers,
            ['A', 'A', 'A', 'B', 'none'][1 + (i // 10) % 5] AS shortcut,
            i // 50 AS seed,
            CASE WHEN i % 100 = 99 THEN 'failed' WHEN i % 100 >= 94 THEN 'running' ELSE 'completed' END AS status,
            (CASE i % 2 WHEN 0 THEN 0.07 ELSE 0.05 END) + 0.02 / (1 + (i // 2) % 5) + 0.01 * random() AS final
        FROM range({runs}) t(i)""", {"n": list(DEPTHS), "layers": [layers(n) for n in DEPTHS]})
    con.execute(f"""
        CREATE TEMP TABLE ep AS SELECT
            'synthetic-' || lpad(s.i::VARCHAR, 7, '0') AS run_id, e AS epoch, s.final,
            s.final + (0.9 - s.final) * exp(-e / 12.0) + 0.01 * random() AS test_error,
            (s.final - 0.04) * (1 - e / ({epochs} * 1.2)) + (0.9 - s.final) * exp(-e / 10.0) + 0.005 * random()
                AS train_error,
            (20 + 6 * s.n) * (0.9 + 0.2 * random()) AS epoch_seconds
        FROM spec s, range(1, {epochs} + 1) r(e)
        WHERE s.status <> 'running' OR e <= {epochs} // 2""")
    con.execute("""
        INSERT INTO epochs BY NAME SELECT run_id, epoch, 0.1 AS lr, 2 * train_error AS train_loss, train_error,
            2 * test_error AS test_loss, test_error, NULL AS val_loss, NULL AS val_error, epoch_seconds,
            50000 / epoch_seconds AS images_per_second FROM ep""")
    con.execute(f"""
        INSERT INTO runs BY NAME SELECT 'synthetic-' || lpad(s.i::VARCHAR, 7, '0') AS run_id, 'synthetic' AS run_name,
            s.n, s.layers, s.shortcut, s.dataset, {epochs} AS epochs, 'paper' AS augment, s.seed,
            128 AS batch_size, 0.1 AS lr, 0.9 AS momentum, 0.0001 AS weight_decay, {milestones} AS milestones,
            0 AS warmup_epochs, 0 AS val_split, NULL AS train_limit, NULL AS test_limit, 50000 AS train_size,
            0 AS val_size, 10000 AS test_size, 270000 * s.n // 3 AS params, s.status, count(e.epoch) AS epochs_done,
            TIMESTAMP '2026-01-01' + to_seconds(s.i) AS started_at,
            CASE WHEN s.status = 'completed' THEN TIMESTAMP '2026-01-01' + to_seconds(s.i + 3600) END AS finished_at,
            TIMESTAMP '2026-01-01' + to_seconds(s.i + 3600) AS updated_at, 'cuda' AS device_type,
            'synthetic' AS device_name,
            'bf16' AS precision, 'synthetic' AS torch_version, sum(e.epoch_seconds) AS train_seconds,
            arg_max(e.train_error, e.epoch) AS train_error, 2 * arg_max(e.test_error, e.epoch) AS test_loss,
            arg_max(e.test_error, e.epoch) AS test_error, NULL AS val_loss, NULL AS val_error,
            CASE WHEN s.status = 'failed' THEN 'synthetic failure' END AS error_message, '{{}}' AS config
        FROM spec s JOIN ep e ON e.run_id = 'synthetic-' || lpad(s.i::VARCHAR, 7, '0')
        GROUP BY ALL""")
    con.execute("""
        INSERT INTO confusion BY NAME SELECT r.run_id, 'test' AS split, t AS true_label, p AS predicted_label,
            (CASE r.dataset WHEN 'cifar10' THEN $c ELSE $f END)[t + 1] AS true_class,
            (CASE r.dataset WHEN 'cifar10' THEN $c ELSE $f END)[p + 1] AS predicted_class,
            CASE WHEN t = p THEN round(1000 * (1 - r.test_error)) ELSE round(1000 * r.test_error / 9) END AS count
        FROM runs r, range(10) a(t), range(10) b(p) WHERE r.status = 'completed'""",
                {"c": list(BUILTINS["cifar10"].classes), "f": list(BUILTINS["fashion-mnist"].classes)})
    con.execute("CHECKPOINT")
    con.close()
    os.replace(tmp, db)
    return db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(client, base: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if client.get(f"{base}/healthz").status_code == 200:
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not answer /healthz within 60 s")


def _timed(client, url: str, headers: dict | None = None):
    t = time.perf_counter()
    r = client.get(url, headers=headers)
    return (time.perf_counter() - t) * 1000, r


def _percentile(times: list[float], q: float) -> float:
    times = sorted(times)
    return statistics.median(times) if q == 0.5 else times[min(len(times) - 1, round(q * (len(times) - 1)))]


def routes(sample_run: str) -> list[str]:
    return [
        "/healthz",
        "/tables/comparison",
        "/tables/comparison?format=csv",
        "/tables/comparison?format=markdown",
        "/tables/comparison?format=html",
        "/tables/comparison?dataset=cifar10&metric=test_error_pct",
        "/tables/comparisons",
        "/findings",
        "/runs?dataset=cifar10&n=3&shortcut=A",
        "/runs?limit=100",
        f"/runs/{sample_run}",
        f"/runs/{sample_run}/epochs",
        f"/runs/{sample_run}/confusion",
        "/figures/error-curves.png",
        "/figures/accuracy.svg",
        "/figures/depth-vs-accuracy.png",
        "/figures/time-to-accuracy.png",
        "/figures/time-vs-accuracy.png",
        f"/figures/confusion.png?run_id={sample_run}",
        "/figures/plain-vs-resnet.png",
        "/",
    ]


def bench_api(runs: int = 10_000, epochs: int = 100, requests: int = 50, keep: Path | None = None,
              bucket: str | None = None) -> list[dict]:
    """`bucket`: publish the synthetic store as a generation under that s3:// prefix and serve it from there (the
    service downloads it once, then asks the bucket which generation is current every REMOTE_CHECK_S)."""
    import httpx

    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="resnet-study-bench-api-"))
    try:
        t0 = time.perf_counter()
        build_synthetic_store(folder, runs, epochs)
        size_mb = store.db_path(folder).stat().st_size / 2**20
        print(f"SYNTHETIC store: {runs} runs x {epochs} epochs in {folder} ({size_mb:.0f} MB), built in "
              f"{time.perf_counter() - t0:.1f} s; numbers are made up, latencies are real", flush=True)
        served = str(folder)
        if bucket:
            t0 = time.perf_counter()
            g = store.publish_snapshot(store.results_location(bucket), store.db_path(folder))
            served = str(store.results_location(bucket))
            print(f"published as generation {g} in {served} in {time.perf_counter() - t0:.1f} s", flush=True)
        port = _free_port()
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env[settings.RESULTS.name] = served
        for name in (auth.TOKEN_ENV, auth.TOKEN_FILE_ENV):  # the benchmark's requests carry no token
            env.pop(name, None)
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                                 "resnet_study.results_api.app:create_app_from_env", "--host", "127.0.0.1",
                                 "--port", str(port), "--log-level", "warning", "--no-access-log"], env=env)
        base = f"http://127.0.0.1:{port}"
        results = []
        try:
            with httpx.Client(timeout=120) as client:
                _wait_ready(client, base, proc)
                sample = client.get(f"{base}/runs?status=completed&limit=1").json()[0]["run_id"]
                print(f"server: uvicorn on {base} (own process); {requests} timed requests per route, "
                      f"one at a time\n")
                print(f"{'route':58} {'status':>6} {'cold ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'304 p50':>8} "
                      f"{'bytes':>9}")
                for path in routes(sample):
                    cold, r = _timed(client, base + path)
                    times = []
                    for _ in range(requests):
                        ms, r = _timed(client, base + path)
                        times.append(ms)
                    etag, not_modified = r.headers.get("etag"), []
                    for _ in range(requests if etag else 0):
                        ms, again = _timed(client, base + path, {"If-None-Match": etag})
                        if again.status_code != 304:
                            raise RuntimeError(f"{path}: If-None-Match {etag} answered {again.status_code}, not 304")
                        not_modified.append(ms)
                    p50, p95 = _percentile(times, 0.5), _percentile(times, 0.95)
                    p304 = _percentile(not_modified, 0.5) if not_modified else None
                    results.append({"route": path, "status": r.status_code, "cold_ms": cold, "p50_ms": p50,
                                    "p95_ms": p95, "not_modified_p50_ms": p304, "bytes": len(r.content)})
                    shown = f"{p304:8.1f}" if p304 is not None else f"{'-':>8}"
                    print(f"{path:58} {r.status_code:>6} {cold:8.1f} {p50:8.1f} {p95:8.1f} {shown} "
                          f"{len(r.content):>9}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        return results
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
