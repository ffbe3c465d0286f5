"""The results service over a store filled by real `resnet-study train` runs on real Fashion-MNIST, served by a real
`resnet-study serve` process on 127.0.0.1 that requires a bearer token (the client sends it): every route, the
comparison table recomputed independently, hostile input, schemathesis, concurrent writers (an open server), and the
dashboard in headless Chromium, which opens it once with `?token=`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from resnet_study.results_api.reference import claims
from tests.helpers import CLI, ROOT, Server, assert_png, assert_svg, cli_env, db_rows, store_fingerprint

TRAIN = ["train", "--dataset", "fashion-mnist", "--train-limit", "1000", "--test-limit", "500", "--device", "cpu",
         "--progress", "json"]
# (n, shortcut, epochs, seed): two seeds of one cell (mean ± std), a deeper net, a second epoch budget, option B, plain.
STUDY = [(1, "A", 2, 0), (1, "A", 2, 1), (2, "A", 2, 0), (1, "A", 1, 0), (1, "B", 2, 0), (1, "none", 2, 0)]
FIGURES = ("error-curves", "accuracy", "depth-vs-accuracy", "time-vs-accuracy", "confusion", "plain-vs-resnet")
ARTIFACTS = ROOT / "test-artifacts"
API_TOKEN = "api-test-token-9d41c7e0b2"
pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- helpers: real processes


def train_procs(results_dir: Path, cells, parallel: int = 2) -> None:
    """Run `resnet-study train` for each cell, `parallel` at a time; fail with stderr if one fails."""
    pending = list(cells)
    while pending:
        batch, pending = pending[:parallel], pending[parallel:]
        procs = [subprocess.Popen([*CLI, *TRAIN, "--n", str(n), "--shortcut", sc, "--epochs", str(ep), "--seed",
                                   str(seed), "--results-dir", str(results_dir)], env=cli_env(), cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for n, sc, ep, seed in batch]
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def study(tmp_path_factory, fashion_mnist_available) -> Path:
    results = tmp_path_factory.mktemp("api-study") / "results"
    train_procs(results, STUDY)
    return results


@pytest.fixture(scope="module")
def server(study):
    srv = Server(study, token=API_TOKEN)
    yield srv
    srv.stop()


# ---------------------------------------------------------------- every route


def test_health_and_runs(server, study):
    runs = db_rows(study, "SELECT * FROM runs ORDER BY run_id")
    assert len(runs) == len(STUDY) and all(r["status"] == "completed" for r in runs)
    assert server.get("/healthz").json() == {"status": "ok", "runs": len(STUDY)}

    listed = server.get("/runs").json()
    assert sorted(r["run_id"] for r in listed) == [r["run_id"] for r in runs]
    by_id = {r["run_id"]: r for r in listed}
    for r in runs:
        assert by_id[r["run_id"]]["test_error"] == pytest.approx(r["test_error"])
        assert by_id[r["run_id"]]["n"] == r["n"] and by_id[r["run_id"]]["shortcut"] == r["shortcut"]

    assert [r["n"] for r in server.get("/runs", params={"n": 2}).json()] == [2]
    assert [r["shortcut"] for r in server.get("/runs", params={"shortcut": "none"}).json()] == ["none"]
    assert len(server.get("/runs", params={"epochs": 2, "shortcut": "A"}).json()) == 3
    assert server.get("/runs", params={"dataset": "cifar10"}).json() == []
    assert len(server.get("/runs", params={"status": "completed", "augment": "paper"}).json()) == len(STUDY)
    assert len(server.get("/runs", params={"limit": 2, "offset": 1}).json()) == 2

    r = server.get("/runs", params={"format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted(row["run_id"] for row in rows) == [x["run_id"] for x in runs]
    assert {float(row["test_error"]) for row in rows} == {x["test_error"] for x in runs}


def test_one_run_epochs_confusion(server, study):
    run = db_rows(study, "SELECT * FROM runs WHERE n = 2")[0]
    rid = run["run_id"]
    got = server.get(f"/runs/{rid}").json()
    assert got["run_id"] == rid and got["layers"] == 14 and got["epochs_done"] == 2
    assert json.loads(got["config"])["n"] == 2  # the full config travels with the run

    epochs = server.get(f"/runs/{rid}/epochs").json()
    assert [e["epoch"] for e in epochs] == [1, 2]
    truth = db_rows(study, "SELECT epoch, test_error, train_error FROM epochs WHERE run_id = ? ORDER BY epoch", [rid])
    assert [e["test_error"] for e in epochs] == pytest.approx([t["test_error"] for t in truth])
    ep_csv = list(csv.DictReader(io.StringIO(server.get(f"/runs/{rid}/epochs", params={"format": "csv"}).text)))
    assert [float(e["train_error"]) for e in ep_csv] == pytest.approx([t["train_error"] for t in truth])

    cm = server.get(f"/runs/{rid}/confusion").json()
    test_cells = [c for c in cm if c["split"] == "test"]
    assert len(test_cells) == 100 and sum(c["count"] for c in test_cells) == run["test_size"] == 500
    assert {c["true_class"] for c in test_cells} >= {"Trouser", "Ankle boot"}
    right = sum(c["count"] for c in test_cells if c["true_label"] == c["predicted_label"])
    assert 1 - right / 500 == pytest.approx(run["test_error"])
    cm_csv = list(csv.DictReader(io.StringIO(server.get(f"/runs/{rid}/confusion", params={"format": "csv"}).text)))
    assert sum(int(c["count"]) for c in cm_csv if c["split"] == "test") == 500

    assert server.get("/runs/resnet-nosuchrun-0000000000").status_code == 404
    assert server.get("/runs/resnet-nosuchrun-0000000000/epochs").status_code == 404


@pytest.mark.parametrize("name", FIGURES)
def test_figures_png_and_svg(server, study, name):
    params = {}
    if name == "confusion":
        params["run_id"] = db_rows(study, "SELECT run_id FROM runs WHERE n = 2")[0]["run_id"]
    png = server.get(f"/figures/{name}.png", params=params)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert_png(png.content)
    svg = server.get(f"/figures/{name}.svg", params=params)
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert_svg(svg.content)
    if name in ("error-curves", "accuracy"):
        assert_png(server.get(f"/figures/{name}.png", params={"dataset": "fashion-mnist", "epochs": 1}).content)
    if name == "confusion":
        assert b"Ankle boot" in svg.content or b"Ankle" in svg.content  # class names drawn (SVG keeps text)


def test_dashboard_html(server):
    r = server.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for text in ('class="comparison"', "He et al. 2016, Table 6", "Seed report 2024, Table 1",
                 "/figures/error-curves.svg", "/figures/plain-vs-resnet.svg", "<progress"):
        assert text in page
    assert "<script" not in page  # plain server-rendered HTML


# ---------------------------------------------------------------- the comparison table, recomputed independently


def expected_cells(study: Path) -> dict:
    """(dataset, metric, shortcut, augment) -> {layers x epochs: (mean, std|None, count)}, from the epochs table:
    the final test error is the last epoch's row, the training time the sum of the epochs' seconds."""
    rows = db_rows(study, """
        SELECT r.run_id, r.dataset, r.shortcut, r.augment, r.layers, r.epochs, e.epoch, e.test_error, e.epoch_seconds
        FROM runs r JOIN epochs e USING (run_id) WHERE r.status = 'completed'""")
    runs: dict[str, dict] = {}
    for row in rows:
        run = runs.setdefault(row["run_id"], {**row, "seconds": 0.0, "last": 0})
        run["seconds"] += row["epoch_seconds"]
        if row["epoch"] > run["last"]:
            run["last"], run["final"] = row["epoch"], row["test_error"]
    groups: dict[tuple, dict[str, list[float]]] = {}
    for run in runs.values():
        assert run["last"] == run["epochs"]
        for metric, value in (("test_error_pct", 100 * run["final"]), ("train_seconds", run["seconds"])):
            key = (run["dataset"], metric, run["shortcut"], run["augment"])
            groups.setdefault(key, {}).setdefault(f"{run['layers']}x{run['epochs']}", []).append(value)
    return {k: {c: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else None, len(v)) for c, v in cells.items()}
            for k, cells in groups.items()}


def test_comparison_cells_equal_independent_computation(server, study):
    expected = expected_cells(study)
    table = server.get("/tables/comparison").json()
    measured = {(r["dataset"], r["metric"], r["shortcut"], r["augment"]): r["cells"]
                for r in table["rows"] if r["kind"] == "measured"}
    assert set(measured) == set(expected)
    # plain vs residual and option A vs B are rows of their own
    assert {k[2] for k in measured} == {"A", "B", "none"}
    for key, cells in expected.items():
        assert set(measured[key]) == set(cells), key
        for col, (mean, std, count) in cells.items():
            got = measured[key][col]
            assert got["count"] == count
            assert got["mean"] == pytest.approx(mean, rel=1e-9, abs=1e-9)
            assert got["std"] == (None if std is None else pytest.approx(std, rel=1e-6, abs=1e-9))
    assert table["runs_counted"] == len(STUDY)
    # the two-seed cell really is a mean ± std over 2 runs
    two = measured[("fashion-mnist", "test_error_pct", "A", "paper")]["8x2"]
    assert two["count"] == 2 and two["std"] is not None

    # CSV: one line per cell, the same numbers
    long = list(csv.DictReader(io.StringIO(server.get("/tables/comparison", params={"format": "csv"}).text)))
    for line in (x for x in long if x["kind"] == "measured"):
        mean, std, count = expected[(line["dataset"], line["metric"], line["shortcut"], line["augment"])][
            f"{line['layers']}x{line['epochs']}"]
        assert float(line["mean"]) == pytest.approx(mean) and int(line["count"]) == count
        assert (line["std"] == "") == (std is None)

    # filters
    only = server.get("/tables/comparison", params={"dataset": "fashion-mnist", "metric": "train_seconds"}).json()
    assert {(r["dataset"], r["metric"]) for r in only["rows"]} == {("fashion-mnist", "train_seconds")}


def test_comparison_reference_rows_and_formats(server):
    assert not [r for r in server.get("/tables/comparison").json()["rows"] if r["kind"] == "reference"]
    table = server.get("/tables/comparison", params={"all": "true"}).json()  # every published column
    refs = {(r["label"], r["dataset"], r["metric"]): r["cells"] for r in table["rows"] if r["kind"] == "reference"}
    paper = refs[("He et al. 2016, Table 6", "cifar10", "test_error_pct")]
    assert paper["20x182"]["mean"] == 8.75 and paper["110x182"]["mean"] == 6.43 and paper["1202x182"]["mean"] == 7.93
    seed_fm = refs[("Seed report 2024, Table 1", "fashion-mnist", "test_error_pct")]
    assert seed_fm["20x100"]["mean"] == 5.18 and seed_fm["44x20"]["mean"] == 9.04
    assert refs[("Seed report 2024, Table 1", "cifar10", "train_seconds")]["20x20"]["mean"] == 838
    # every published number in core/reference/ appears
    with open(ROOT / "core" / "reference" / "seed_report_table1.csv") as f:
        published = list(csv.DictReader(line for line in f if not line.startswith("#")))
    for p in published:
        cells = refs[("Seed report 2024, Table 1", p["dataset"], "test_error_pct")]
        assert cells[f"{p['layers']}x{p['epochs']}"]["mean"] == float(p["test_error_percent"])
    assert all(r["source"] for r in table["rows"] if r["kind"] == "reference")

    md = server.get("/tables/comparison", params={"format": "markdown", "all": "true"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert "| He et al. 2016, Table 6 |" in md.text and "8.75" in md.text and " ± " in md.text
    html = server.get("/tables/comparison", params={"format": "html", "all": "true"})
    assert html.headers["content-type"].startswith("text/html") and "<table" in html.text and "6.43" in html.text


# ---------------------------------------------------------------- read-only, hostile input, schemathesis


ROUTES = ["/", "/healthz", "/runs", "/runs/{rid}", "/runs/{rid}/epochs", "/runs/{rid}/confusion",
          "/tables/comparison", "/tables/comparisons", "/findings", "/figures/error-curves.png", "/figures/error-curves.svg", "/openapi.json", "/docs",
          "/runs/no-such-run", "/nonexistent"]
HOSTILE = [
    "/figures/..%2f..%2fetc%2fpasswd.png",
    "/figures/..%2F..%2F..%2Fetc%2Fpasswd.svg",
    "/figures/%2e%2e%2f%2e%2e%2fetc%2fpasswd.png",
    "/figures/....//....//etc/passwd.png",
    "/runs/..%2f..%2fetc%2fpasswd",
    "/runs/..%2f..%2fresults.duckdb/epochs",
    "/figures/confusion.png?run_id=../../etc/passwd",
    "/figures/error-curves.png?dataset=../../etc/passwd",
    "/runs?dataset=cifar10'%20OR%20'1'='1",
    "/runs?dataset=cifar10';%20DROP%20TABLE%20runs;%20--",
    "/runs?n=1%20OR%201=1",
    "/runs?n=1;DELETE%20FROM%20runs",
    "/runs?status=completed'--",
    "/runs/x'%20OR%20'1'='1",
    "/runs/x%22;%20DROP%20TABLE%20runs;%20--/epochs",
    "/runs/%27%29%3B%20DELETE%20FROM%20epochs%3B%20--/confusion",
    "/tables/comparison?metric=test_error_pct;%20DROP%20TABLE%20runs",
    "/tables/comparison?dataset=fashion-mnist'/*&format=csv",
    "/tables/comparison?format=../../etc/passwd",
    "/tables/comparisons?metric=test_error",
    "/tables/comparisons?dataset=cifar10'%20OR%20'1'='1&format=csv",
    "/tables/comparison?all=maybe",
    "/figures/error-curves.png?epochs=1%20UNION%20SELECT%201",
    "/runs?n=100000000000000000000000000000000000000",
    "/runs?n=-1",
    "/runs?epochs=1e400",
    "/runs?n=NaN",
    "/runs?limit=1000000000000",
    "/runs?offset=-5",
    "/runs?limit=0",
    "/figures/error-curves.png?epochs=99999999999999999999",
    "/runs/" + "a" * 5000,
    "/runs/" + "a" * 5000 + "/epochs",
    "/figures/confusion.png?run_id=" + "b" * 5000,
    "/figures/" + "c" * 5000 + ".png",
    "/runs?dataset=" + "d" * 5000,
    "/figures/nonexistent.png",
    "/figures/error-curves.gif",
    "/figures/error-curves.png.svg",
    "/runs/%00",
    "/runs?dataset=%00",
]


def test_write_methods_refused_everywhere(server, study):
    rid = db_rows(study, "SELECT run_id FROM runs LIMIT 1")[0]["run_id"]
    before = store_fingerprint(study)
    for route in ROUTES:
        url = route.format(rid=rid)
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            r = server.client.request(method, url, content=b'{"status": "failed"}',
                                      headers={"content-type": "application/json"})
            assert r.status_code in (404, 405), (method, url, r.status_code)
    assert store_fingerprint(study) == before
    assert server.get("/healthz").json()["runs"] == len(STUDY)


def test_hostile_input_is_4xx_and_leaks_nothing(server, study):
    before = store_fingerprint(study)
    for url in HOSTILE:
        r = server.get(url)
        assert 400 <= r.status_code < 500, (url[:120], r.status_code, r.text[:300])
        body = r.text
        # 422 messages echo the offending input back, which is no leak; internals and files would be
        for leak in ("root:x:", "Traceback", "Exception", "Error:", "site-packages", str(study)):
            assert leak not in body, (url[:120], leak)
        assert len(body) < 20_000
    assert store_fingerprint(study) == before
    assert len(server.get("/runs").json()) == len(STUDY)
    assert db_rows(study, "SELECT count(*) AS n FROM epochs")[0]["n"] == sum(ep for _, _, ep, _ in STUDY)


def test_schemathesis_finds_no_5xx_and_no_schema_violation(server, study, tmp_path):
    before = store_fingerprint(study)
    proc = subprocess.run(
        [str(Path(CLI[0]).parent / "schemathesis"), "run", f"{server.base}/openapi.json", "--checks", "all",
         "--max-examples", "15", "--workers", "1", "--seed", "7", "--generation-database", "none", "--no-color",
         "--request-timeout", "60", "--report", "junit", "--report-dir", str(tmp_path),
         "--header", f"Authorization: Bearer {API_TOKEN}"],
        capture_output=True, text=True, timeout=480, env=cli_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "No issues found" in proc.stdout and "11 selected" in proc.stdout
    assert store_fingerprint(study) == before


# ---------------------------------------------------------------- answers while 4 jobs write


def test_answers_while_four_train_processes_write(tmp_path, fashion_mnist_available):
    results = tmp_path / "results"
    results.mkdir()
    srv = Server(results)  # an empty dir: the service starts before any run exists
    procs = []
    try:
        assert srv.get("/healthz").json() == {"status": "ok", "runs": 0}
        procs = [subprocess.Popen([*CLI, *TRAIN, "--n", "1", "--epochs", "3", "--seed", str(seed),
                                   "--train-limit", "600", "--test-limit", "300", "--results-dir", str(results)],
                                  env=cli_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for seed in range(4)]
        seen_runs, seen_epochs, curves, polls = [], set(), set(), 0
        urls = ["/healthz", "/runs", "/tables/comparison", "/tables/comparison?format=csv", "/",
                "/figures/error-curves.png", "/figures/time-vs-accuracy.svg"]
        while any(p.poll() is None for p in procs) or polls < len(urls):
            for url in urls:
                r = srv.get(url)
                assert r.status_code == 200, (url, r.status_code, r.text[:300])
                polls += 1
                if url == "/figures/error-curves.png":
                    curves.add(hashlib.sha256(r.content).hexdigest())
            seen_runs.append(srv.get("/healthz").json()["runs"])
            seen_epochs |= {(r["run_id"], r["epochs_done"]) for r in srv.get("/runs").json()}
        for p in procs:
            assert p.wait(timeout=60) == 0, p.stderr.read()
        seen_runs.append(srv.get("/healthz").json()["runs"])
        assert seen_runs == sorted(seen_runs), seen_runs  # never goes backwards
        assert seen_runs[-1] == 4, (seen_runs, sorted(p.name for p in (results / "runs").iterdir()))
        assert len(seen_runs) >= 5  # it really answered many times while the jobs ran
        assert any(done < 3 for _, done in seen_epochs)  # it served runs part-way through
        assert len(curves) >= 2  # the figure cache is keyed by data version: new epochs, new figure
        final = srv.get("/runs", params={"status": "completed"}).json()
        assert len(final) == 4 and all(r["epochs_done"] == 3 for r in final)
        cells = srv.get("/tables/comparison", params={"dataset": "fashion-mnist", "metric": "test_error_pct"}).json()
        assert [r["cells"]["8x3"]["count"] for r in cells["rows"] if r["kind"] == "measured"] == [4]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        srv.stop()


# ---------------------------------------------------------------- the dashboard in headless Chromium


def test_dashboard_in_headless_chromium(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1500,2400"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.set_page_load_timeout(120)
        driver.get(server.base + f"/?token={API_TOKEN}")  # once: the cookie carries it to the figures and links
        assert driver.current_url == server.base + "/"
        table = driver.find_element(By.CSS_SELECTOR, "table.comparison")
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        labels = [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows]
        assert "train 1k of 60k images, test 500 of 10k images" in labels
        assert any(l.startswith("plain net") for l in labels) and any(l.startswith("option B") for l in labels)
        assert any("±" in td.text for td in table.find_elements(By.CSS_SELECTOR, "td.num"))
        findings = driver.find_elements(By.CSS_SELECTOR, "ul.findings li.finding")
        assert [f.find_element(By.TAG_NAME, "b").text for f in findings] == [c.claim for c in claims()]
        assert all("not measured yet: run `resnet-study sweep local" in f.text for f in findings)
        assert findings[0].is_displayed()
        deadline = time.monotonic() + 120
        while True:  # figures load after the page; wait until each has decoded
            sizes = driver.execute_script(
                "return Array.from(document.images).map(i => [i.src, i.complete, i.naturalWidth])")
            if all(done for _, done, _ in sizes) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(sizes) >= 6
        for src, done, width in sizes:
            assert done and width > 100, src  # each figure rendered as an image the browser could decode
        runs = driver.find_elements(By.CSS_SELECTOR, "table.runs tbody tr")
        assert len(runs) == len(STUDY)
        ARTIFACTS.mkdir(exist_ok=True)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1500, min(int(height) + 100, 8000))
        assert driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        assert_png((ARTIFACTS / "dashboard.png").read_bytes())
    finally:
        driver.quit()
