"""`resnet-study results table`, `resnet-study report` and `resnet-study bench api`, as real processes over a store
filled by real `train` runs on real Fashion-MNIST (and, for the benchmark, its own synthetic store)."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import xml.etree.ElementTree as ET

import duckdb
import pytest
from PIL import Image

from tests.helpers import CLI, ROOT, cli_env, run_cli

pytestmark = pytest.mark.slow  # real training processes

TRAIN = ["train", "--dataset", "fashion-mnist", "--epochs", "2", "--train-limit", "1000", "--test-limit", "500",
         "--device", "cpu", "--progress", "json"]


@pytest.fixture(scope="module")
def study(tmp_path_factory, fashion_mnist_available):
    results = tmp_path_factory.mktemp("report-study") / "results"
    procs = [subprocess.Popen([*CLI, *TRAIN, "--n", "1", "--shortcut", sc, "--results-dir", str(results)],
                              env=cli_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for sc in ("A", "none")]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()
    return results


def runs_in(results) -> list[dict]:
    con = duckdb.connect(str(results / "results.duckdb"), read_only=True)
    try:
        cur = con.execute("SELECT * FROM runs ORDER BY shortcut")
        return [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]
    finally:
        con.close()


def test_results_table_formats(study):
    runs = runs_in(study)
    long = list(csv.DictReader(io.StringIO(
        run_cli("results", "table", "--format", "csv", "--results-dir", study).stdout)))
    measured = {(r["shortcut"], r["metric"]): r for r in long if r["kind"] == "measured"}
    assert set(measured) == {(sc, m) for sc in ("A", "none") for m in ("test_error_pct", "train_seconds")}
    for run in runs:
        cell = measured[(run["shortcut"], "test_error_pct")]
        assert (cell["layers"], cell["epochs"], cell["count"]) == ("8", "2", "1")
        assert float(cell["mean"]) == pytest.approx(100 * run["test_error"])
        assert float(measured[(run["shortcut"], "train_seconds")]["mean"]) == pytest.approx(run["train_seconds"])
    # published numbers stand only at measured columns by default (none here: 8 layers, 2 epochs), all with --all
    assert not [r for r in long if r["kind"] == "reference"]
    everything = list(csv.DictReader(io.StringIO(
        run_cli("results", "table", "--all", "--format", "csv", "--results-dir", study).stdout)))
    assert {r["label"] for r in everything if r["kind"] == "reference"} == {"He et al. 2016, Table 6",
                                                                           "Seed report 2024, Table 1"}

    md = run_cli("results", "table", "--format", "markdown", "--dataset", "fashion-mnist", "--metric", "test_error_pct",
                 "--all", "--results-dir", study).stdout
    assert md.startswith("| data set | metric | row |") and "| Seed report 2024, Table 1 |" in md
    assert "He et al." not in md  # the paper's Table 6 is CIFAR-10 only
    plain = next(l for l in md.splitlines() if "plain net" in l)
    assert f"{100 * runs[-1]['test_error']:.2f}" in plain

    table = run_cli("results", "table", "--all", "--results-dir", study).stdout
    assert "Comparison table (2 completed runs)" in table and "seed report, Table 1" in table
    assert "plain net, train 1k of 60k images, test 500 of 10k images" in table and "8.75" in table

    for bad in (["--metric", "accuracy"], ["--dataset", "emnist"], ["--format", "xml"]):
        proc = run_cli("results", "table", *bad, "--results-dir", study, check=False)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    proc = run_cli("results", "table", "--results-dir", study / "nope", check=False)
    assert proc.returncode == 2 and "no results dir" in proc.stderr


def test_report_writes_the_whole_study(study, tmp_path):
    out = tmp_path / "report"
    proc = run_cli("report", "--out", out, "--results-dir", study)
    assert "index.html" in proc.stdout
    runs = runs_in(study)

    for name in ("error-curves", "accuracy", "depth-vs-accuracy", "time-vs-accuracy", "plain-vs-resnet"):
        Image.open(out / "figures" / f"{name}.png").verify()
        assert ET.parse(out / "figures" / f"{name}.svg").getroot().tag.endswith("svg")
    for run in runs:
        Image.open(out / "confusion" / f"{run['run_id']}.png").verify()

    readme = (out / "README.md").read_text()
    html = (out / "index.html").read_text()
    for text in ("## Comparison table", "He et al. 2016, Table 6", "## Comparison with published numbers",
                 "zhunzhong07/Random-Erasing README", "## Every run: config and results",
                 "![error-curves](figures/error-curves.png)"):
        assert text in readme, text
    for run in runs:  # every run with its config
        line = next(l for l in readme.splitlines() if l.startswith(f"| {run['run_id']} |"))
        assert f"| {run['shortcut']} | {run['augment']} |" in line and f"| {run['batch_size']} |" in line
        assert run["run_id"] in html
    # the published-numbers comparison sets the measured ResNet beside the Fashion-MNIST anchors, by depth:
    # ResNet-8 is not a published depth, so every row says "not measured" here
    assert "not measured" in readme
    assert '<table class="comparison">' in html and 'src="figures/error-curves.svg"' in html

    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert sorted(r["run_id"] for r in rows) == sorted(r["run_id"] for r in runs)
    assert all('"n":1' in r["config"].replace(" ", "") for r in rows)  # the full config JSON of each run
    cells = list(csv.DictReader(open(out / "comparison.csv")))
    assert {c["kind"] for c in cells} == {"measured"}  # no published number at 8 layers

    proc = run_cli("report", "--out", tmp_path / "r2", "--results-dir", tmp_path / "empty", check=False)
    assert proc.returncode == 2 and "no results store" in proc.stderr


def test_serve_refuses_a_missing_dir_and_a_busy_port(study, tmp_path):
    import socket

    proc = run_cli("serve", "--results-dir", tmp_path / "missing", "--port", "8123", check=False)
    assert proc.returncode == 2 and "no results dir" in proc.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        proc = run_cli("serve", "--results-dir", study, "--port", busy, check=False, timeout=60)
    assert proc.returncode == 2 and "cannot listen" in proc.stderr


def test_bench_api_prints_p50_p95_per_route(tmp_path):
    """A small synthetic store keeps this quick; the 10 000-run figures come from `resnet-study bench api`."""
    keep = tmp_path / "synthetic"
    out = run_cli("bench", "api", "--runs", "200", "--epochs", "20", "--requests", "3", "--keep", keep,
                  timeout=300).stdout
    assert "SYNTHETIC store: 200 runs x 20 epochs" in out
    lines = {l.split()[0]: l.split() for l in out.splitlines() if l.startswith("/")}
    assert "/tables/comparison" in lines and "/figures/error-curves.png" in lines and "/" in lines
    for route, cols in lines.items():
        assert cols[1] == "200", (route, cols)
        cold, p50, p95 = map(float, cols[2:5])
        assert 0 < p50 <= p95
    con = duckdb.connect(str(keep / "results.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*), min(run_id) FROM runs").fetchone() == (200, "synthetic-0000000")
        assert con.execute("SELECT count(DISTINCT run_id) FROM epochs").fetchone()[0] == 200
        assert re.match(r"synthetic", con.execute("SELECT any_value(run_name) FROM runs").fetchone()[0])
    finally:
        con.close()
