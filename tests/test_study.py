"""The study's answers: what a cell is, its statistics, the comparisons and the claims.

Real short runs on real Fashion-MNIST made by `resnet-study train` processes; every statistic the CLI and the API
print is recomputed here independently from the `runs` table (DuckDB directly, scipy.stats and statsmodels), and
must match to 1e-6.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
from collections import defaultdict

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

from resnet_study.core import store
from resnet_study.results_api import queries
from resnet_study.results_api.app import create_app
from resnet_study.results_api.reference import Claim, claims
from tests.helpers import CLI, ROOT, cli_env, db_rows, run_cli

pytestmark = pytest.mark.slow

TINY = ["train", "--dataset", "fashion-mnist", "--train-limit", "400", "--test-limit", "300", "--device", "cpu",
        "--progress", "json"]


def train_all(results, cells: list[list[str]], parallel: int = 2) -> None:
    """One `train` process per item (a run, or a cell with --seeds), `parallel` at a time."""
    pending = list(cells)
    while pending:
        batch, pending = pending[:parallel], pending[parallel:]
        procs = [subprocess.Popen([*CLI, *TINY, *args, "--results-dir", str(results)], env=cli_env(), cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for args in batch]
        for p in procs:
            assert p.wait(timeout=600) == 0, p.stderr.read()


# ---------------------------------------------------------------- what a cell is


@pytest.fixture(scope="module")
def variants(tmp_path_factory, fashion_mnist_available):
    """Two seeds of one experiment, and three runs that each differ from it in one thing other than the seed."""
    results = tmp_path_factory.mktemp("variants") / "results"
    base = ["--n", "1", "--epochs", "1"]
    train_all(results, [base + ["--seeds", "0,1"], base + ["--train-limit", "300"], base + ["--lr", "0.05"],
                        base + ["--val-split", "100"]])
    return results


def test_only_seeds_share_a_cell_in_the_cli_and_the_api(variants):
    lines = list(csv.DictReader(io.StringIO(run_cli("results", "table", "--format", "csv", "--metric",
                                                    "test_error_pct", "--results-dir", variants).stdout)))
    measured = {line["label"]: line for line in lines if line["kind"] == "measured"}
    assert set(measured) == {
        "train 400 of 60k images, test 300 of 10k images",
        "train 300 of 60k images, test 300 of 10k images",
        "lr 0.05, train 400 of 60k images, test 300 of 10k images",
        "300/100 split, train 400 of 60k images, test 300 of 10k images",
    }, set(measured)
    assert measured["train 400 of 60k images, test 300 of 10k images"]["count"] == "2"  # the two seeds: one cell
    assert all(line["count"] == "1" for label, line in measured.items() if label.startswith(("train 300", "lr")))

    with TestClient(create_app(store.results_location(variants))) as client:
        rows = client.get("/tables/comparison", params={"metric": "test_error_pct"}).json()["rows"]
    cells = {r["label"]: r["cells"]["8x1"] for r in rows if r["kind"] == "measured"}
    assert {k: c["count"] for k, c in cells.items()} == {k: int(v["count"]) for k, v in measured.items()}
    runs = db_rows(variants, "SELECT seed, lr, train_limit, val_split, 100 * test_error AS e FROM runs")
    seeds = [r["e"] for r in runs if r["lr"] == 0.1 and r["train_limit"] == 400 and r["val_split"] == 0]
    assert cells["train 400 of 60k images, test 300 of 10k images"]["mean"] == pytest.approx(np.mean(seeds), abs=1e-6)
    # nothing is set beside the published numbers: no run here is a published experiment
    assert all(r["verdict"] != "" for r in run_json("results", "compare", "--format", "json",
                                                     "--results-dir", variants))
    assert not [r for r in run_json("results", "compare", "--format", "json", "--results-dir", variants)
                if r["kind"] == "published"]


def assert_first_n_with_80pct_power(n: int, power) -> None:
    """`n` is the fewest runs (>= 2) at which statsmodels' t-test power reaches 80 %."""
    assert power(n) >= 0.8 and (n == 2 or power(n - 1) < 0.8), (n, power(n), power(n - 1))


def run_json(*args):
    return json.loads(run_cli(*args).stdout)


# ---------------------------------------------------------------- statistics, recomputed independently


@pytest.fixture(scope="module")
def study(tmp_path_factory, fashion_mnist_available):
    """2 depths x 2 epoch budgets x 3 seeds (a cell per process), and one plain net with a single seed."""
    results = tmp_path_factory.mktemp("study") / "results"
    cells = [["--n", str(n), "--epochs", str(e), "--seeds", "0-2"] for n in (1, 2) for e in (1, 2)]
    train_all(results, cells + [["--n", "1", "--epochs", "2", "--shortcut", "none"]], parallel=3)  # 2 rounds, not 3
    return results


def independent_cells(results) -> dict[tuple, list[float]]:
    """(shortcut, layers, epochs) -> test error % of each completed run, straight from the runs table."""
    out = defaultdict(list)
    for r in db_rows(results, "SELECT shortcut, layers, epochs, test_error FROM runs WHERE status = 'completed'"):
        out[(r["shortcut"], r["layers"], r["epochs"])].append(100 * r["test_error"])
    return out


def test_cell_statistics_match_scipy(study):
    expected = independent_cells(study)
    lines = list(csv.DictReader(io.StringIO(run_cli("results", "table", "--format", "csv", "--metric",
                                                    "test_error_pct", "--results-dir", study).stdout)))
    with TestClient(create_app(store.results_location(study))) as client:
        api = client.get("/tables/comparison", params={"metric": "test_error_pct"}).json()
    api_cells = {(r["shortcut"], c): cell for r in api["rows"] if r["kind"] == "measured"
                 for c, cell in r["cells"].items()}
    measured = [line for line in lines if line["kind"] == "measured"]
    assert len(measured) == len(expected) == 5
    for line in measured:
        values = np.array(expected[(line["shortcut"], int(line["layers"]), int(line["epochs"]))])
        n, mean = len(values), values.mean()
        assert int(line["count"]) == n
        assert float(line["mean"]) == pytest.approx(mean, abs=1e-6)
        assert float(line["min"]) == pytest.approx(values.min(), abs=1e-6)
        assert float(line["max"]) == pytest.approx(values.max(), abs=1e-6)
        api_cell = api_cells[(line["shortcut"], f"{line['layers']}x{line['epochs']}")]
        if n == 1:
            assert line["std"] == line["ci_low"] == line["ci_high"] == "" and api_cell["ci_low"] is None
            continue
        sd = values.std(ddof=1)
        low, high = sps.t.interval(0.95, n - 1, loc=mean, scale=sd / math.sqrt(n))
        for got in (line, api_cell):
            assert float(got["std"]) == pytest.approx(sd, abs=1e-6)
            assert float(got["ci_low"]) == pytest.approx(low, abs=1e-6)
            assert float(got["ci_high"]) == pytest.approx(high, abs=1e-6)
    # the human forms: `mean ± half-width (n)`
    table = run_cli("results", "table", "--metric", "test_error_pct", "--results-dir", study).stdout
    values = np.array(expected[("A", 8, 2)])
    half = (values.std(ddof=1) / math.sqrt(3)) * sps.t.ppf(0.975, 2)
    assert f"{values.mean():.2f} ± {half:.2f} (3)" in table


def test_comparisons_match_scipy_and_statsmodels(study):
    expected = independent_cells(study)
    rows = run_json("results", "compare", "--format", "json", "--results-dir", study)
    with TestClient(create_app(store.results_location(study))) as client:
        assert client.get("/tables/comparisons").json() == rows
        csv_text = client.get("/tables/comparisons", params={"format": "csv"}).text
    header = csv_text.splitlines()[0].split(",")
    assert header[:15] == ["dataset", "metric", "kind", "a", "b", "n_a", "n_b", "mean_a", "mean_b", "diff",
                           "diff_ci_low", "diff_ci_high", "p_value", "p_holm", "verdict"]
    kinds = [r["kind"] for r in rows]
    assert kinds.count("depth") == 2 and kinds.count("epochs") == 2 and kinds.count("plain vs ResNet") == 1

    def cell_of(name: str) -> list[float]:  # "ResNet-8, 2 ep, ..." / "plain-8, 2 ep, ..."
        net, budget = name.split(", ")[:2]
        return expected[("none" if net.startswith("plain") else "A", int(net.split("-")[1]), int(budget.split()[0]))]

    tested = []
    for r in rows:
        a, b = np.array(cell_of(r["a"])), np.array(cell_of(r["b"]))
        assert (r["n_a"], r["n_b"]) == (len(a), len(b))
        assert r["mean_a"] == pytest.approx(a.mean(), abs=1e-6) and r["mean_b"] == pytest.approx(b.mean(), abs=1e-6)
        assert r["diff"] == pytest.approx(b.mean() - a.mean(), abs=1e-6)
        if r["kind"] == "plain vs ResNet":  # the plain net ran one seed: never a verdict from one run
            assert r["verdict"] == "cannot tell (n < 2)" and r["p_value"] is None and r["diff_ci_low"] is None
            continue
        res = sps.ttest_ind(b, a, equal_var=False)
        ci = res.confidence_interval(0.95)
        assert r["p_value"] == pytest.approx(res.pvalue, abs=1e-6)
        assert r["diff_ci_low"] == pytest.approx(ci.low, abs=1e-6) and r["diff_ci_high"] == pytest.approx(ci.high,
                                                                                                        abs=1e-6)
        d = abs(b.mean() - a.mean()) / math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
        if d == 0:  # equal means (a tiny study can give two cells the same errors): no n ever reaches 80 %
            assert r["seeds_for_80pct_power"] is None
        else:
            assert_first_n_with_80pct_power(r["seeds_for_80pct_power"], lambda n: TTestIndPower().power(d, n, 0.05))
        tested.append(r)
    assert len(tested) >= 3
    holm = multipletests([r["p_value"] for r in tested], alpha=0.05, method="holm")[1]
    for r, p in zip(tested, holm):
        assert r["p_holm"] == pytest.approx(p, abs=1e-6)
        verdict = ("b lower" if r["diff"] < 0 else "b higher") if p < 0.05 else "no detectable difference"
        assert r["verdict"] == verdict
    markdown = run_cli("results", "compare", "--format", "markdown", "--results-dir", study).stdout
    assert "cannot tell (n < 2)" in markdown and "not proof" in markdown


def test_a_published_number_is_compared_only_with_the_same_experiment():
    """Pairing and the one-sample test, on cells given directly (the published experiments take hours to run)."""
    from resnet_study.results_api.reference import published_numbers

    paper = [p for p in published_numbers() if p.label.startswith("He") and p.layers == 20]
    seed_report = [p for p in published_numbers() if p.label.startswith("Seed") and p.dataset == "cifar10"
                   and p.layers == 20 and p.epochs == 20 and p.metric == "test_error_pct"]
    base = dict(dataset="cifar10", shortcut="A", augment="paper", batch_size=128, lr=0.1, momentum=0.9,
                weight_decay=1e-4, milestones=None, warmup_epochs=0, val_split=5000, train_limit=None,
                test_limit=None, epochs=182)
    split = queries.Variant.of(base)
    full = queries.Variant.of({**base, "val_split": 0, "epochs": 20})
    subset = queries.Variant.of({**base, "val_split": 0, "epochs": 20, "train_limit": 5000})
    values = [8.1, 8.6, 8.4, 8.9]
    cells = {(split, 20, 182): values, (full, 20, 20): [19.0, 19.5], (subset, 20, 20): [30.0, 31.0]}
    rows = queries.build_comparisons(cells, "test_error_pct", paper + seed_report)
    published = [r for r in rows if r.kind == "published"]
    assert sorted((r.a.split(":")[0], r.b) for r in published) == [
        ("He et al. 2016, Table 6", "ResNet-20, 182 ep, 45k/5k split"),
        ("Seed report 2024, Table 1", "ResNet-20, 20 ep, paper recipe")]  # the 5 000-image cell: never
    res = sps.ttest_1samp(values, popmean=8.75)
    ci = res.confidence_interval(0.95)
    [he] = [r for r in published if r.a.startswith("He")]
    assert (he.n_a, he.n_b, he.mean_a) == (None, 4, 8.75)
    assert he.p_value == pytest.approx(res.pvalue, abs=1e-9)
    assert (he.diff_ci_low, he.diff_ci_high) == (pytest.approx(ci.low - 8.75), pytest.approx(ci.high - 8.75))
    d = abs(np.mean(values) - 8.75) / np.std(values, ddof=1)
    assert_first_n_with_80pct_power(he.seeds_for_80pct_power, lambda n: TTestPower().power(d, n, 0.05))


# ---------------------------------------------------------------- the claims


def synthetic_claim(**kw) -> Claim:
    base = dict(id="c", claim="32 beats 44", source="s", dataset="cifar10", kind="depth", shortcut="A", val_split=0,
                pairs=((32, 44),), at=(100,), expect="b higher", spec="seed-study.yaml")
    return Claim(**{**base, **kw})


def claim_cells(values_32, values_44):
    variant = queries.claim_variant(synthetic_claim())
    return {(variant, 32, 100): values_32, (variant, 44, 100): values_44}


@pytest.mark.parametrize("v32, v44, verdict", [
    ([9.1, 9.2, 9.0, 9.15], [9.9, 10.0, 9.8, 9.95], "supported"),
    ([9.9, 10.0, 9.8, 9.95], [9.1, 9.2, 9.0, 9.15], "contradicted"),
    ([9.3, 9.9, 9.5], [9.4, 9.8, 9.6], "not shown"),
    ([9.36], [9.66], "cannot tell"),  # the original study's evidence: one run each
])
def test_a_claim_is_judged_by_its_comparisons(v32, v44, verdict):
    finding = queries.evaluate_claim(synthetic_claim(), claim_cells(v32, v44))
    assert finding.verdict == verdict, finding.summary
    [row] = finding.rows
    assert row.diff == pytest.approx(np.mean(v44) - np.mean(v32))


def test_a_claim_without_its_cells_names_the_command():
    finding = queries.evaluate_claim(synthetic_claim(), {})
    assert finding.verdict == "not measured yet" and finding.rows == []
    assert "run `resnet-study sweep local seed-study.yaml`" in finding.summary
    assert finding.missing == ["ResNet-32, 100 ep, paper recipe", "ResNet-44, 100 ep, paper recipe"]


def test_the_shipped_claims_name_shipped_specs():
    from resnet_study.jobs import sweep as sw

    ids = [c.id for c in claims()]
    assert len(ids) == len(set(ids)) >= 6
    for c in claims():
        spec = sw.load(c.spec)
        configs = {(cfg.dataset, cfg.layers, cfg.epochs, cfg.shortcut, cfg.val_split) for cfg in spec.runs}
        depths = {d for p in c.pairs for d in p} if c.kind == "depth" else set(c.at)
        budgets = set(c.at) if c.kind == "depth" else {e for p in c.pairs for e in p}
        for layers in depths:
            for epochs in budgets:
                assert (c.dataset, layers, epochs, c.shortcut, c.val_split) in configs, (c.id, layers, epochs)


def test_findings_in_the_report_and_on_the_dashboard(study, tmp_path):
    out = tmp_path / "report"
    run_cli("report", "--out", out, "--results-dir", study)
    readme = (out / "README.md").read_text()
    section = readme.split("## Findings: the claims, tested")[1].split("\n## ")[0]
    for c in claims():
        line = next(l for l in section.splitlines() if c.claim in l)
        assert "not measured yet: run `resnet-study sweep local " + c.spec + "`" in line
    assert (out / "comparisons.csv").read_text().startswith("dataset,metric,kind,a,b,")
    html = (out / "index.html").read_text()
    assert all(c.claim in html for c in claims())
