"""The results service in-process (FastAPI's TestClient) over a real results dir written by resnet-study 0.1.0
(tests/fixtures/): every route answers from a store the new code did not write, the figure cache is keyed by the
data version, and the reader follows each new snapshot; with a token only the token reads; an unreadable store is 503.
The fast tier; tests/test_api.py and tests/test_remote.py run the real server."""

from __future__ import annotations

import csv
import io
import json
import tempfile

import duckdb
import pytest
from fastapi.testclient import TestClient

from resnet_study.core import StudyError, store
from resnet_study.core.records import EpochRecord, RunRecord
from resnet_study.results_api import app as app_module, auth, figures, queries
from resnet_study.results_api.app import create_app
from tests.helpers import assert_png, assert_svg, db_rows


@pytest.fixture
def client(old_store):
    with TestClient(create_app(store.results_location(old_store))) as c:
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
    store.write_shard(store.results_location(old_store), RunRecord(run_id="new-run", status="running"), [], [])  # a new snapshot
    client.get("/figures/accuracy.png")
    assert drawn == ["accuracy", "accuracy"]


def test_the_reader_follows_each_new_snapshot(tmp_path):
    """DuckDB caches one instance per path in a process: a reader that simply reconnected by path kept serving the
    first snapshot for as long as any old connection lived. The service must see every snapshot sync publishes,
    while a connection opened earlier keeps its own consistent snapshot."""
    results = tmp_path / "results"
    db = queries.Store(store.results_location(results))
    assert queries.count_runs(db) == 0  # no snapshot yet: empty, and nothing written by the reader
    assert not results.exists()
    held = []
    for i in range(1, 4):
        store.write_shard(store.results_location(results), RunRecord(run_id=f"r{i}", status="running"), [], [])
        assert queries.count_runs(db) == i
        held.append(db.reader.connection())  # alive across the next sync
    for i, con in enumerate(held, 1):
        cur = con.cursor()
        cur.execute("USE store")
        assert cur.execute("SELECT count(*) FROM runs").fetchone()[0] == i


def test_the_snapshot_of_an_old_store_gains_new_columns_on_sync(old_store):
    """0.1.0 wrote INTEGER columns in its own order; a sync by this version keeps every row and adds what is new."""
    before = db_rows(old_store, "SELECT run_id, n, layers, test_error FROM runs ORDER BY run_id")
    store.write_shard(store.results_location(old_store), RunRecord(run_id="zz-new", status="running", n=4, layers=26), [], [])
    con = duckdb.connect(str(store.db_path(old_store)), read_only=True)
    columns = {r[0] for r in con.execute("DESCRIBE runs").fetchall()}
    con.close()
    assert set(RunRecord.model_fields) <= columns
    after = db_rows(old_store, "SELECT run_id, n, layers, test_error FROM runs ORDER BY run_id")
    assert after[:-1] == before and after[-1] == {"run_id": "zz-new", "n": 4, "layers": 26, "test_error": None}


# ---------------------------------------------------------------- who may read: the optional bearer token

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def guarded(old_store):
    with TestClient(create_app(store.results_location(old_store), token=TOKEN)) as c:
        yield c


def test_without_a_token_everything_is_open_and_the_schema_declares_no_scheme(client):
    assert client.get("/runs").status_code == client.get("/").status_code == 200
    assert client.get("/?token=anything", follow_redirects=False).status_code == 200  # nothing to set
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_with_a_token_only_the_token_reads(guarded):
    for url in ("/runs", "/tables/comparison?format=csv", "/findings", "/figures/accuracy.svg", "/"):
        missing = guarded.get(url, follow_redirects=False)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer", url
        assert "Authorization: Bearer TOKEN" in missing.json()["detail"]
        wrong = guarded.get(url, headers={"Authorization": "Bearer " + TOKEN[:-1] + "0"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert wrong.json() == {"detail": "wrong token in the Authorization header"}
        assert guarded.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200, url
    assert guarded.get("/healthz").json() == {"status": "ok", "runs": 9}  # probes carry no token
    assert guarded.get("/openapi.json").status_code == guarded.get("/docs").status_code == 200


def test_a_browser_opens_the_dashboard_once_with_the_token_and_a_cookie_keeps_it(guarded, caplog):
    assert guarded.get("/?token=not-it", follow_redirects=False).status_code == 401
    with caplog.at_level("INFO", logger="resnet_study.results_api"):
        r = guarded.get(f"/?token={TOKEN}", follow_redirects=False)
    assert "GET /?token=*** 303" in caplog.text and TOKEN not in caplog.text  # the log line masks it
    assert r.status_code == 303 and r.headers["location"] == "./"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"resnet_study_token={TOKEN};") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Max-Age=2592000" in cookie and "Secure" not in cookie  # http here
    assert 'class="comparison"' in guarded.get("/").text  # the cookie, no header
    assert guarded.get("/figures/accuracy.png").status_code == 200  # what the page's <img> tags load
    guarded.cookies.set("resnet_study_token", "an-old-token")
    stale = guarded.get("/runs")
    assert stale.status_code == 401 and "open /?token=TOKEN again" in stale.json()["detail"]


def test_the_schema_declares_the_bearer_and_the_cookie_on_every_route_but_healthz(guarded):
    schema = guarded.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer", "description": auth.BEARER.model.description},
        "cookie": {"type": "apiKey", "in": "cookie", "name": "resnet_study_token",
                   "description": auth.COOKIE_SCHEME.model.description}}
    for path, ops in schema["paths"].items():
        security = ops["get"].get("security")
        if path == "/healthz":
            assert security is None
        else:
            assert security == [{"bearer": []}, {"cookie": []}] and "401" in ops["get"]["responses"], path


def test_the_token_comes_from_the_variable_or_a_file_and_bad_ones_are_one_line(tmp_path):
    assert auth.load_token(environ={}) is None
    assert auth.load_token(environ={"RESNET_STUDY_API_TOKEN": "  "}) is None  # empty is unset
    assert auth.load_token(environ={"RESNET_STUDY_API_TOKEN": "abc-123"}) == "abc-123"
    secret = tmp_path / "token"
    secret.write_text("s3cret+/token==\n")  # `kubectl create secret --from-file` keeps a newline
    assert auth.load_token(secret, environ={}) == "s3cret+/token=="
    assert auth.load_token(environ={"RESNET_STUDY_API_TOKEN_FILE": str(secret)}) == "s3cret+/token=="
    (tmp_path / "empty").write_text("\n")
    for kwargs, message in (
            ({"token_file": tmp_path / "nope", "environ": {}}, "does not exist; create it"),
            ({"token_file": tmp_path / "empty", "environ": {}}, "is empty"),
            ({"token_file": secret, "environ": {"RESNET_STUDY_API_TOKEN": "x"}}, "keep one of them"),
            ({"environ": {"RESNET_STUDY_API_TOKEN": "two words"}}, "openssl rand -hex 32")):
        with pytest.raises(StudyError, match=message) as e:
            auth.load_token(**kwargs)
        assert "\n" not in str(e.value)


def test_serve_refuses_an_address_others_reach_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET_STUDY_API_TOKEN", raising=False)
    monkeypatch.delenv("RESNET_STUDY_API_TOKEN_FILE", raising=False)
    assert auth.is_loopback("127.0.0.1") and auth.is_loopback("::1") and auth.is_loopback("localhost")
    assert not auth.is_loopback("0.0.0.0") and not auth.is_loopback("::") and not auth.is_loopback("")
    for host in ("0.0.0.0", "::", "192.0.2.7"):
        with pytest.raises(StudyError, match="--insecure-no-auth"):
            app_module.serve(tmp_path, host, 8000)


# ---------------------------------------------------------------- errors: 503 only for an unreadable store


def test_an_unreadable_store_is_503_with_a_request_id(old_store, monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # core.store reads a private copy of a locked file
    store.db_path(old_store).write_bytes(b"not a duckdb file")
    with TestClient(create_app(store.results_location(old_store))) as c:
        r = c.get("/runs")
        assert r.status_code == 503
        rid = r.headers["x-request-id"]
        assert r.json() == {"detail": f"results store unavailable; the server's log has the reason (request id "
                                      f"{rid})", "request_id": rid}
        assert c.get("/healthz").status_code == 503  # a probe sees it too
        assert c.get("/runs", headers={"X-Request-ID": "proxy-id-42"}).headers["x-request-id"] == "proxy-id-42"
        assert c.get("/runs", headers={"X-Request-ID": "bad id\r\n"}).headers["x-request-id"] != "bad id"
    assert any(rid in m and "not a valid DuckDB database file" in m for m in caplog.messages)
