"""Sweep specs and the sweep commands, as real processes on real Fashion-MNIST with a real store.

- specs: validation names the bad key; the shipped studies expand to the documented cells in the documented order;
- `sweep run` with JOB_COMPLETION_INDEX = 0..N-1 as concurrent processes: each index runs its own cell (the mapping
  the Kubernetes Indexed Job relies on);
- `sweep local --parallel 2` killed mid-sweep (SIGKILL: no chance to clean up), then run again: it runs only what was
  not completed, resuming the interrupted cells from their checkpoints; `sweep status` tells the truth throughout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import CLI, ROOT, cli_env, query, run_cli
from resnet_study.core import StudyError, store
from resnet_study.core.lease import LEASE_NAME
from resnet_study.core.records import RunRecord
from resnet_study.jobs import sweep as sw


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- specs


@pytest.mark.parametrize("text, message", [
    ("grdi: {n: [1]}\n", r"grdi: Extra inputs are not permitted; the keys are: name, description"),
    ("grid: {depth: [1, 2]}\n", r"grid: .*'depth' is not an experiment field; use one of: n, shortcut"),
    ("grid: {n: [1]}\nfixed: {seed: 3}\n", r"fixed: .*'seed' is set by the top-level `seeds`"),
    ("grid: {n: [1, 0]}\n", r"grid cell \{'n': 0\}: n: Input should be greater than or equal to 1"),
    ("grid: {shortcut: [A, C]}\n", r"grid cell \{'shortcut': 'C'\}: shortcut: Input should be 'A', 'B' or 'none'"),
    ("grid: {n: [1, 1]}\n", r"cells 0 and 1 are the same experiment"),
    ("fixed: {epochs: 2}\n", r"no cells; give `grid` axes or `extra` cells"),
    ("grid: {n: []}\n", r"grid: .*axis 'n' has no values"),
    ("grid: {n: [1]}\nseeds: 0\n", r"seeds: .*a seed count must be >= 1"),
    ("grid: {n: [1]}\nname: Bad_Name\n", r"name: String should match pattern"),
    ("extra: [{n: 18, warmup_epochs: 30, epochs: 20}]\n", r"extra\[0\] cell .*warmup_epochs \(30\) must be smaller"),
    ("- n: 1\n", r"a sweep spec is a mapping"),
    ("grid: {n: 3}\n", r"grid\.n: Input should be a valid list"),
    ("grid: {n: [1]}\nfixed: {epochs: ten}\n", r"fixed\.epochs: Input should be a valid integer"),
])
def test_spec_errors_name_the_key(tmp_path, text, message):
    path = write_spec(tmp_path, text)
    with pytest.raises(StudyError, match=message):
        sw.load(path)


def test_spec_error_is_one_line_and_exit_2_from_the_cli(tmp_path):
    path = write_spec(tmp_path, "grid: {n: [1]}\nsedes: 3\n")
    proc = run_cli("sweep", "list", path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}: sedes: Extra inputs are not permitted; the keys are: name, description, parallelism, "
        f"fixed, grid, extra, seeds"]


def test_seed_study_is_18_cells_times_3_seeds_in_row_major_order():
    sweep = sw.load(ROOT / "jobs" / "seed-study.yaml")
    expected = [(n, e, d) for n in (3, 5, 7) for e in (20, 50, 100) for d in ("cifar10", "fashion-mnist")]
    assert [(c.n, c.epochs, c.dataset, c.seed) for c in sweep.cells] == [(*x, s) for s in range(3) for x in expected]
    assert {(c.shortcut, c.augment, c.train_limit, c.val_split) for c in sweep.cells} == {("A", "paper", None, 0)}
    # each its own schedule: lr /10 after 50 % and 75 % of its own epochs
    assert {c.epochs: c.milestones for c in sweep.cells} == {20: [10, 15], 50: [25, 38], 100: [50, 75]}
    assert len({c.run_id for c in sweep.cells}) == 54


def test_paper_spec_is_table6_plus_resnet110_with_warmup_at_64k_iterations():
    sweep = sw.load("paper-cifar10.yaml")  # a shipped spec by file name
    cells = [(c.n, c.shortcut, c.warmup_epochs) for c in sweep.cells]
    one_seed = [(n, s, 0) for n in (3, 5, 7, 9) for s in ("A", "none")] + [(18, "A", 1)]
    assert cells == one_seed * 5 and sorted({c.seed for c in sweep.cells}) == [0, 1, 2, 3, 4]
    assert {(c.dataset, c.epochs, tuple(c.milestones), c.val_split, c.augment) for c in sweep.cells} == {
        ("cifar10", 182, (91, 136), 5000, "paper")}
    # 45 000 images / 128 = 352 steps per epoch: 182 epochs are the paper's 64k iterations, the milestones its 32k/48k
    steps = -(-(50_000 - 5000) // 128)
    assert (steps * 182, steps * 91, steps * 136) == (64_064, 32_032, 47_872)
    assert [c.layers for c in sweep.cells][8] == 110


def test_demo_spec_is_cpu_sized_with_two_seeds():
    sweep = sw.load(ROOT / "jobs" / "demo.yaml")
    assert len(sweep) == 4 and sorted({c.seed for c in sweep.cells}) == [0, 1]
    for c in sweep.cells:
        assert c.dataset == "fashion-mnist" and c.epochs <= 3 and c.train_limit <= 5000 and c.test_limit <= 1000


def test_more_seeds_append_indices_and_keep_the_old_ones(tmp_path):
    one = sw.load(write_spec(tmp_path, "grid: {n: [1, 2], lr: [0.1, 0.05]}\nextra: [{n: 3}]\n", "a.yaml"))
    three = sw.load(write_spec(tmp_path, "grid: {n: [1, 2], lr: [0.1, 0.05]}\nextra: [{n: 3}]\nseeds: 3\n", "b.yaml"))
    assert len(one) == 5 and len(three) == 15
    assert [c.run_id for c in three.cells[:5]] == [c.run_id for c in one.cells]
    assert [c.seed for c in three.cells] == [0] * 5 + [1] * 5 + [2] * 5
    assert [(c.n, c.lr) for c in one.cells] == [(1, 0.1), (1, 0.05), (2, 0.1), (2, 0.05), (3, 0.1)]
    listed = sw.load(write_spec(tmp_path, "grid: [{n: [1]}, {n: [2], shortcut: [B]}]\nseeds: [7, 3]\n", "c.yaml"))
    assert [(c.n, c.shortcut, c.seed) for c in listed.cells] == [(1, "A", 7), (2, "B", 7), (1, "A", 3), (2, "B", 3)]


def test_sweep_list_prints_every_index_and_run_id():
    rows = json.loads(run_cli("sweep", "list", "jobs/seed-study.yaml", "--format", "json").stdout)
    sweep = sw.load(ROOT / "jobs" / "seed-study.yaml")
    assert [(r["index"], r["run_id"], r["n"], r["dataset"]) for r in rows] == [
        (i, c.run_id, c.n, c.dataset) for i, c in enumerate(sweep.cells)]


@pytest.mark.slow
def test_missing_spec_and_index_errors(tmp_path):
    proc = run_cli("sweep", "run", "no-such-spec.yaml", "--index", "0", check=False)
    assert proc.returncode == 2 and "sweep spec no-such-spec.yaml not found" in proc.stderr
    assert "demo.yaml" in proc.stderr  # it lists the shipped specs
    spec = write_spec(tmp_path, "grid: {n: [1, 2]}\n")
    proc = run_cli("sweep", "run", spec, "--results-dir", tmp_path / "r", check=False)
    assert proc.returncode == 2
    assert "which cell? pass --index I (0..1) or set JOB_COMPLETION_INDEX" in proc.stderr
    proc = run_cli("sweep", "run", spec, "--results-dir", tmp_path / "r", check=False,
                   env=cli_env(JOB_COMPLETION_INDEX="2"))
    assert proc.returncode == 2 and "cell index 2 is out of range: " in proc.stderr and "has cells 0..1" in proc.stderr
    assert not (tmp_path / "r").exists()  # nothing was started


# ---------------------------------------------------------------- sweep run: index -> cell, as Kubernetes does it


@pytest.mark.slow
def test_job_completion_index_runs_its_own_cell(tmp_path, fashion_mnist_available):
    spec = write_spec(tmp_path, """
        fixed: {n: 1, dataset: fashion-mnist, epochs: 1, test_limit: 100}
        grid: {train_limit: [128, 160, 192]}
        """.replace("\n        ", "\n"))
    results = tmp_path / "results"
    sweep = sw.load(spec)
    procs = [subprocess.Popen([*CLI, "sweep", "run", str(spec), "--device", "cpu", "--progress", "json",
                               "--results-dir", str(results)], env=cli_env(JOB_COMPLETION_INDEX=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(len(sweep))]  # all at once, like the pods of one Job
    outputs = [p.communicate(timeout=300) for p in procs]
    for i, (p, (out, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, err
        assert f"cell {i}/3: {sweep.cells[i].run_id}" in err
        assert {json.loads(line)["run_id"] for line in out.splitlines()} == {sweep.cells[i].run_id}
    rows = query(results, "SELECT run_id, status, train_size, epochs_done FROM runs ORDER BY train_size")
    assert [(r["run_id"], r["status"], r["train_size"], r["epochs_done"]) for r in rows] == [
        (c.run_id, "completed", c.train_limit, 1) for c in sweep.cells]
    # a retried pod of a completed index does nothing
    again = run_cli("sweep", "run", spec, "--index", "1", "--results-dir", results, "--device", "cpu")
    assert "already completed" in again.stderr


# ---------------------------------------------------------------- sweep local: kill, re-run, status


def status(spec: Path, results: Path) -> list[str]:
    rows = json.loads(run_cli("sweep", "status", spec, "--results-dir", results, "--format", "json").stdout)
    assert [r["index"] for r in rows] == list(range(len(rows)))
    return [r["state"] for r in rows]


def shard(results: Path, run_id: str) -> dict | None:
    try:
        return json.loads((results / "runs" / run_id / "run.json").read_text())["run"]
    except (FileNotFoundError, ValueError):
        return None


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().rpartition(")")[2].split()[0] != "Z"


@pytest.mark.slow
def test_sweep_local_killed_then_rerun_runs_only_what_was_missing(tmp_path, fashion_mnist_available):
    # cell 0 is quick; cells 1 and 2 train long enough to be caught mid-run
    spec = write_spec(tmp_path, """
        name: tiny
        fixed: {n: 1, dataset: fashion-mnist, test_limit: 100}
        extra:
          - {epochs: 1, train_limit: 128}
          - {epochs: 12, train_limit: 384}
          - {epochs: 12, train_limit: 320}
        """.replace("\n        ", "\n"))
    results = tmp_path / "results"
    cells = sw.load(spec).cells
    assert status(spec, results) == ["missing"] * 3

    sweep = subprocess.Popen([*CLI, "sweep", "local", str(spec), "--parallel", "2", "--device", "cpu",
                              "--results-dir", str(results)], env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (shard(results, cells[0].run_id) or {}).get("status") == "completed", 120, "cell 0")
        wait_for(lambda: (shard(results, cells[1].run_id) or {}).get("epochs_done", 0) >= 1, 120, "cell 1's epoch 1")
        states = status(spec, results)
        assert states[:2] == ["completed", "running"] and states[2] in ("missing", "running")
        owner = json.loads((results / "runs" / cells[1].run_id / LEASE_NAME).read_text())
        assert pid_alive(owner["pid"])  # the cell's process holds the run's lease
    finally:
        sweep.send_signal(signal.SIGKILL)  # no handler runs: the cells die by the parent-death signal
        out = sweep.communicate(timeout=60)[0]
    assert "cell 0 started" in out and "cell 1 started" in out, out  # cell 2 may or may not have started
    wait_for(lambda: not pid_alive(owner["pid"]), 30, "the orphaned cell to die")
    before = {i: shard(results, c.run_id) for i, c in enumerate(cells)}
    assert before[1]["status"] == "running" and 1 <= before[1]["epochs_done"] < 12  # what a SIGKILL leaves behind
    states = status(spec, results)
    assert states[0] == "completed" and states[1] == "interrupted"
    assert states[2] == ("interrupted" if before[2] else "missing")

    again = run_cli("sweep", "local", spec, "--parallel", "2", "--device", "cpu", "--results-dir", results)
    assert re.search(r"3 cells; 2 to run \(interrupted [12](, missing 1)?\), 1 skipped", again.stdout), again.stdout
    assert "cell 0 " not in again.stdout and "cell 1 resumed" in again.stdout and "cell 2 " in again.stdout
    assert shard(results, cells[0].run_id) == before[0]  # the completed cell was not touched
    log1 = (results / "sweep-logs" / "tiny" / "1.log").read_text()
    assert f"resuming after epoch {before[1]['epochs_done']}" in log1
    assert status(spec, results) == ["completed"] * 3
    epochs = query(results, "SELECT run_id, count(*) AS n, count(DISTINCT epoch) AS d, max(epoch) AS last "
                            "FROM epochs GROUP BY run_id ORDER BY run_id")
    assert sorted((e["n"], e["d"], e["last"]) for e in epochs) == [(1, 1, 1), (12, 12, 12), (12, 12, 12)]
    assert not (results / "runs" / cells[1].run_id / LEASE_NAME).exists()  # released at the end

    third = run_cli("sweep", "local", spec, "--parallel", "2", "--device", "cpu", "--results-dir", results)
    assert "3 cells; 0 to run (nothing), 3 skipped" in third.stdout
    assert third.stdout.count("skipped: completed before") == 3


@pytest.mark.slow
def test_status_tells_a_failed_cell_and_sweep_local_reruns_it(tmp_path, fashion_mnist_available):
    # Fashion-MNIST is there, CIFAR-10 is not: cell 1 fails with a user error before the store holds anything
    spec = write_spec(tmp_path, "fixed: {n: 1, epochs: 1, train_limit: 64, test_limit: 64}\n"
                                "grid: {dataset: [fashion-mnist, cifar10]}\n", "fail.yaml")
    results = tmp_path / "results"
    data = tmp_path / "no-data"
    data.mkdir()
    proc = run_cli("sweep", "run", spec, "--index", "1", "--results-dir", results, "--data-dir", data, check=False)
    assert proc.returncode == 2 and "CIFAR-10" in proc.stderr
    assert status(spec, results) == ["missing", "missing"]
    # cell 0 as a run that crashed in training leaves it: its shard says failed (written by the job-side store API)
    cfg = sw.load(spec).cells[0]
    row = RunRecord(run_id=cfg.run_id, n=1, layers=8, dataset="fashion-mnist", epochs=1, status="failed",
                    epochs_done=0, error_message="RuntimeError: CUDA error: an illegal memory access was encountered")
    store.write_shard(results, row, [], [])
    assert status(spec, results) == ["failed", "missing"]
    proc = run_cli("sweep", "local", spec, "--results-dir", results, "--data-dir", data, "--device", "cpu",
                   check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 to run (failed 1, missing 1)" in proc.stdout
    assert "cell 0 completed" in proc.stdout and "cell 1 failed (exit 2)" in proc.stdout
    assert "CIFAR-10 not found" in proc.stderr  # the tail of the failed cell's log
    assert status(spec, results) == ["completed", "missing"]
