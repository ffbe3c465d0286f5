"""The results service in-process (FastAPI's TestClient) over a real results dir written by resnet-study 0.1.0
(tests/fixtures/): every route answers from a store the new code did not write, the figure cache is keyed by the
data version, and the reader follows each new snapshot. The fast tier; tests/test_api.py runs the real server."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import pytest
from fastapi.testclient import TestClient

from resnet_study.core import store
from resnet_study.core.records import EpochRecord, RunRecord
from resnet_study.results_api import figures, queries
from resnet_study.results_api.app import create_app
from tests.helpers import assert_png, assert_svg, db_rows


@pytest.fixture
def client(old_store):
    with TestClient(create_app(old_store)) as c:
        yield c


def test_an_old_store_is_served_unchanged(client, old_store):
    runs = db_rows(old_store, "SELECT run_id, status, test_error FROM runs ORDER BY run_id")
    assert len(runs) == 9 and sum(r["status"] == "completed" for r in runs) == 8
    assert client.get("/healthz").json() == {"status": "ok", "runs": 9}
    listed = {r["run_id"]: r for r in client.get("/runs").json()}
    assert set(listed) == {r["run_id"] for r in runs}
    for r in runs:
        assert listed[r["run_id"]]["test_error"] == pytest.approx(r["test_error"])
        assert "config" not in listed[r["run_id"]]
    rid = next(r["run_id"] for r in runs if r["status"] == "completed")
    detail = client.get(f"/runs/{rid}").json()
    assert detail["run_id"] == rid and json.loads(detail["config"])["dataset"] == "fashion-mnist"
    assert set(detail) == set(RunRecord.model_fields)  # the response model is the record
    epochs = client.get(f"/runs/{rid}/epochs").json()
    assert [e["epoch"] for e in epochs] == [1, 2] and set(epochs[0]) == set(EpochRecord.model_fields)
    cm = client.get(f"/runs/{rid}/confusion", params={"format": "csv"})
    assert sum(int(row["count"]) for row in csv.DictReader(io.StringIO(cm.text)) if row["split"] == "test") == 200
    assert client.get("/runs/no-such-run").status_code == 404


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_every_figure_draws_from_an_old_store(client, name):
    png, svg = client.get(f"/figures/{name}.png"), client.get(f"/figures/{name}.svg")
    assert png.status_code == svg.status_code == 200, (png.text[:200], svg.text[:200])
    assert_png(png.content)
    assert_svg(svg.content)


def test_dashboard_and_table_formats(client):
    page = client.get("/").text
    assert 'class="comparison"' in page and "He et al. 2016, Table 6" in page
    for name in figures.FIGURES:
        assert f"/figures/{name}.svg" in page  # the old store has a plain run: every figure is on the page
    for fmt, kind in (("csv", "text/csv"), ("markdown", "text/markdown"), ("html", "text/html")):
        r = client.get("/tables/comparison", params={"format": fmt})
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
    assert client.get("/tables/comparison", params={"metric": "test_error"}).status_code == 422  # a fraction's name


def test_a_figure_is_drawn_once_per_data_version(client, old_store, monkeypatch):
    drawn = []
    real = figures.render
    monkeypatch.setattr(figures, "render", lambda *a, **k: drawn.append(a[0]) or real(*a, **k))
    first = client.get("/figures/accuracy.png").content
    assert client.get("/figures/accuracy.png").content == first and drawn == ["accuracy"]  # the second: cached
    store.write_shard(old_store, RunRecord(run_id="new-run", status="running"), [], [])  # a new snapshot
    client.get("/figures/accuracy.png")
    assert drawn == ["accuracy", "accuracy"]


def test_the_reader_follows_each_new_snapshot(tmp_path):
    """DuckDB caches one instance per path in a process: a reader that simply reconnected by path kept serving the
    first snapshot for as long as any old connection lived. The service must see every snapshot sync publishes,
    while a connection opened earlier keeps its own consistent snapshot."""
    results = tmp_path / "results"
    db = queries.Store(results)
    assert queries.count_runs(db) == 0  # no snapshot yet: empty, and nothing written by the reader
    assert not results.exists()
    held = []
    for i in range(1, 4):
        store.write_shard(results, RunRecord(run_id=f"r{i}", status="running"), [], [])
        assert queries.count_runs(db) == i
        held.append(db.reader.connection())  # alive across the next sync
    for i, con in enumerate(held, 1):
        cur = con.cursor()
        cur.execute("USE store")
        assert cur.execute("SELECT count(*) FROM runs").fetchone()[0] == i


def test_the_snapshot_of_an_old_store_gains_new_columns_on_sync(old_store):
    """0.1.0 wrote INTEGER columns in its own order; a sync by this version keeps every row and adds what is new."""
    before = db_rows(old_store, "SELECT run_id, n, layers, test_error FROM runs ORDER BY run_id")
    store.write_shard(old_store, RunRecord(run_id="zz-new", status="running", n=4, layers=26), [], [])
    con = duckdb.connect(str(store.db_path(old_store)), read_only=True)
    columns = {r[0] for r in con.execute("DESCRIBE runs").fetchall()}
    con.close()
    assert set(RunRecord.model_fields) <= columns
    after = db_rows(old_store, "SELECT run_id, n, layers, test_error FROM runs ORDER BY run_id")
    assert after[:-1] == before and after[-1] == {"run_id": "zz-new", "n": 4, "layers": 26, "test_error": None}
