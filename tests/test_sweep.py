"""Sweep specs and the sweep commands, as real processes on real Fashion-MNIST with a real store.

- specs: validation names the bad key; the shipped studies expand to the documented cells in the documented order;
- `sweep cell` with JOB_COMPLETION_INDEX = 0..N-1 as concurrent processes: each index runs its own cell (the mapping
  the Kubernetes Indexed Job relies on);
- `sweep local --parallel 2` killed mid-sweep (SIGKILL: no chance to clean up), then run again: it runs only what was
  not completed, resuming the interrupted cells from their checkpoints; `sweep status` tells the truth throughout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import CLI, ROOT, cli_env, query, run_cli, run_cli_many
from resnet_study.core import EXIT_RETRY, StudyError, store
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


def test_seed_study_is_18_cells_of_3_seeds_in_row_major_order():
    sweep = sw.load(ROOT / "jobs" / "seed-study.yaml")
    expected = [(n, e, d) for n in (3, 5, 7) for e in (20, 50, 100) for d in ("cifar10", "fashion-mnist")]
    assert [(c.index, c.config.n, c.config.epochs, c.config.dataset) for c in sweep.cells] == [
        (i, *x) for i, x in enumerate(expected)]
    assert all(c.seeds == [0, 1, 2] for c in sweep.cells)
    for c in sweep.cells:  # the runs of a cell differ in their seed only
        assert {json.dumps(r.model_dump(exclude={"seed"}), sort_keys=True) for r in c.runs} == {
            json.dumps(c.config.model_dump(exclude={"seed"}), sort_keys=True)}
    assert {(r.shortcut, r.augment, r.train_limit, r.val_split) for r in sweep.runs} == {("A", "paper", None, 0)}
    # each its own schedule: lr /10 after 50 % and 75 % of its own epochs
    assert {r.epochs: r.milestones for r in sweep.runs} == {20: [10, 15], 50: [25, 38], 100: [50, 75]}
    assert len({r.run_id for r in sweep.runs}) == 54


def test_the_run_ids_of_seed_study_are_the_ones_it_always_had():
    """Cells are how runs are grouped, not what they are: every run id is the one 0.1 gave it (the shards of the
    GPU study of 2026-11-26 keep their identity), pinned here."""
    sweep = sw.load(ROOT / "jobs" / "seed-study.yaml")
    assert sweep.cells[1].run_ids == ["resnet20A-fashion-mnist-e20-s0-e7101aeb42",
                                      "resnet20A-fashion-mnist-e20-s1-e9f11ce792",
                                      "resnet20A-fashion-mnist-e20-s2-6a6269923b"]
    assert sweep.cells[17].run_ids == ["resnet44A-fashion-mnist-e100-s0-0dcdaa5586",
                                       "resnet44A-fashion-mnist-e100-s1-a35034b138",
                                       "resnet44A-fashion-mnist-e100-s2-f86361132f"]
    all_ids = " ".join(sorted(r.run_id for r in sweep.runs))
    assert hashlib.sha256(all_ids.encode()).hexdigest()[:16] == "1faf7d726767ed2f"  # what 0.1.0 listed
    shards = {p.parent.name for p in (ROOT / "docs" / "results" / "gpu-2026-11-26").rglob("run.json")}
    assert shards and shards <= set(all_ids.split())


def test_paper_spec_is_table6_plus_resnet110_with_warmup_at_64k_iterations():
    sweep = sw.load("paper-cifar10.yaml")  # a shipped spec by file name
    cells = [(c.config.n, c.config.shortcut, c.config.warmup_epochs) for c in sweep.cells]
    assert cells == [(n, s, 0) for n in (3, 5, 7, 9) for s in ("A", "none")] + [(18, "A", 1)]
    assert all(c.seeds == [0, 1, 2, 3, 4] for c in sweep.cells) and len(sweep.runs) == 45
    assert {(c.dataset, c.epochs, tuple(c.milestones), c.val_split, c.augment) for c in sweep.runs} == {
        ("cifar10", 182, (91, 136), 5000, "paper")}
    # 45 000 images / 128 = 352 steps per epoch: 182 epochs are the paper's 64k iterations, the milestones its 32k/48k
    steps = -(-(50_000 - 5000) // 128)
    assert (steps * 182, steps * 91, steps * 136) == (64_064, 32_032, 47_872)
    assert sweep.cells[8].config.layers == 110


def test_demo_spec_is_cpu_sized_with_two_seeds():
    sweep = sw.load(ROOT / "jobs" / "demo.yaml")
    assert len(sweep) == 2 and [c.seeds for c in sweep.cells] == [[0, 1], [0, 1]]
    for c in sweep.runs:
        assert c.dataset == "fashion-mnist" and c.epochs <= 3 and c.train_limit <= 5000 and c.test_limit <= 1000


def test_more_seeds_keep_every_index_and_run_id(tmp_path):
    one = sw.load(write_spec(tmp_path, "grid: {n: [1, 2], lr: [0.1, 0.05]}\nextra: [{n: 3}]\n", "a.yaml"))
    three = sw.load(write_spec(tmp_path, "grid: {n: [1, 2], lr: [0.1, 0.05]}\nextra: [{n: 3}]\nseeds: 3\n", "b.yaml"))
    assert len(one) == len(three) == 5 and len(one.runs) == 5 and len(three.runs) == 15
    assert [c.run_ids[0] for c in three.cells] == [c.run_ids[0] for c in one.cells]  # seed 0: the same runs
    assert [c.seeds for c in three.cells] == [[0, 1, 2]] * 5
    assert [(c.config.n, c.config.lr) for c in one.cells] == [(1, 0.1), (1, 0.05), (2, 0.1), (2, 0.05), (3, 0.1)]
    listed = sw.load(write_spec(tmp_path, "grid: [{n: [1]}, {n: [2], shortcut: [B]}]\nseeds: [7, 3]\n", "c.yaml"))
    assert [(c.config.n, c.config.shortcut, c.seeds) for c in listed.cells] == [(1, "A", [7, 3]), (2, "B", [7, 3])]


def test_sweep_list_prints_every_cell_with_its_seeds_and_run_ids():
    rows = json.loads(run_cli("sweep", "list", "jobs/seed-study.yaml", "--format", "json").stdout)
    sweep = sw.load(ROOT / "jobs" / "seed-study.yaml")
    assert [(r["index"], r["seeds"], r["run_ids"], r["n"], r["dataset"]) for r in rows] == [
        (c.index, [0, 1, 2], c.run_ids, c.config.n, c.config.dataset) for c in sweep.cells]
    table = run_cli("sweep", "list", "jobs/seed-study.yaml").stdout
    assert "seed-study: 18 cells x 3 seeds = 54 runs" in table


def test_missing_spec_and_index_errors(tmp_path):
    spec = write_spec(tmp_path, "grid: {n: [1, 2]}\n")
    missing, which, beyond = run_cli_many([
        ["sweep", "cell", "no-such-spec.yaml", "--index", "0"],
        ["sweep", "cell", spec, "--results-dir", tmp_path / "r"],
        ["sweep", "cell", spec, "--index", "2", "--results-dir", tmp_path / "r"]])
    assert missing.returncode == 2 and "sweep spec no-such-spec.yaml not found" in missing.stderr
    assert "demo.yaml" in missing.stderr  # it lists the shipped specs
    assert which.returncode == 2
    assert "which cell? pass --index I (0..1) or set JOB_COMPLETION_INDEX" in which.stderr
    assert beyond.returncode == 2 and "cell index 2 is out of range: " in beyond.stderr
    assert "has cells 0..1" in beyond.stderr
    assert not (tmp_path / "r").exists()  # nothing was started


# ---------------------------------------------------------------- sweep cell: index -> cell, as Kubernetes does it


@pytest.mark.slow
def test_job_completion_index_runs_its_own_cell(tmp_path, fashion_mnist_available):
    spec = write_spec(tmp_path, """
        fixed: {n: 1, dataset: fashion-mnist, epochs: 1, test_limit: 100}
        grid: {train_limit: [128, 160, 192]}
        seeds: 2
        """.replace("\n        ", "\n"))
    results = tmp_path / "results"
    sweep = sw.load(spec)
    env = {sw.INDEX_MODE_ENV: sw.INDEX_MODE}  # what the rendered Job sets
    procs = [subprocess.Popen([*CLI, "sweep", "cell", str(spec), "--device", "cpu", "--progress", "json",
                               "--results-dir", str(results)], env=cli_env(JOB_COMPLETION_INDEX=str(i), **env),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(len(sweep))]  # all at once, like the pods of one Job
    outputs = [p.communicate(timeout=300) for p in procs]
    for i, (p, (out, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, err
        assert f"cell {i}/3: seeds 0,1: {' '.join(sweep.cells[i].run_ids)}" in err
        assert {json.loads(line)["run_id"] for line in out.splitlines()} == set(sweep.cells[i].run_ids)
    rows = query(results, "SELECT run_id, status, train_size, epochs_done FROM runs ORDER BY train_size, seed")
    assert [(r["run_id"], r["status"], r["train_size"], r["epochs_done"]) for r in rows] == [
        (c.run_id, "completed", c.train_limit, 1) for c in sweep.runs]
    # a retried pod of a completed index does nothing
    again = run_cli("sweep", "cell", spec, "--index", "1", "--results-dir", results, "--device", "cpu")
    assert again.stderr.count("already completed") == 2
    # a pod of a Job rendered by 0.1 (one run per index, no index mode): refused, one line, nothing run
    old = run_cli("sweep", "cell", spec, "--results-dir", tmp_path / "old", check=False,
                  env=cli_env(JOB_COMPLETION_INDEX="4"))
    assert old.returncode == 2 and old.stderr.count("\n") == 1 and "one run per index" in old.stderr
    assert "sweep render" in old.stderr and not (tmp_path / "old").exists()


# ---------------------------------------------------------------- sweep local: kill, re-run, status


def status(spec: Path, results: Path) -> list[str]:
    """Each cell's state, from `sweep status --format json` (cells with their runs)."""
    cells = json.loads(run_cli("sweep", "status", spec, "--results-dir", results, "--format", "json").stdout)
    assert [c["index"] for c in cells] == list(range(len(cells)))
    return [c["state"] for c in cells]


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
    cells = [c.config for c in sw.load(spec).cells]  # one seed each
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
        sweep.send_signal(signal.SIGKILL)  # no handler runs; the cells get SIGTERM (the parent-death signal)
        out = sweep.communicate(timeout=60)[0]
    assert "cell 0 started" in out and "cell 1 started" in out, out  # cell 2 may or may not have started
    wait_for(lambda: not pid_alive(owner["pid"]), 30, "the orphaned cell to die")
    before = {i: shard(results, c.run_id) for i, c in enumerate(cells)}
    # the orphaned cell stopped cleanly: its run checkpointed mid-epoch and says so
    assert before[1]["status"] == "interrupted" and 1 <= before[1]["epochs_done"] < 12
    states = status(spec, results)
    assert states[0] == "completed" and states[1] == "interrupted"
    assert states[2] == ("interrupted" if before[2] else "missing")

    again = run_cli("sweep", "local", spec, "--parallel", "2", "--device", "cpu", "--results-dir", results)
    assert re.search(r"3 cells \(3 runs\); 2 to run \(interrupted [12](, missing 1)?\), 1 skipped", again.stdout), \
        again.stdout
    assert "cell 0 " not in again.stdout and "cell 1 resumed" in again.stdout and "cell 2 " in again.stdout
    assert shard(results, cells[0].run_id) == before[0]  # the completed cell was not touched
    log1 = (results / "sweep-logs" / "tiny" / "1.log").read_text()
    assert f"resuming epoch {before[1]['epochs_done'] + 1} at step" in log1
    assert status(spec, results) == ["completed"] * 3
    epochs = query(results, "SELECT run_id, count(*) AS n, count(DISTINCT epoch) AS d, max(epoch) AS last "
                            "FROM epochs GROUP BY run_id ORDER BY run_id")
    assert sorted((e["n"], e["d"], e["last"]) for e in epochs) == [(1, 1, 1), (12, 12, 12), (12, 12, 12)]
    assert not (results / "runs" / cells[1].run_id / LEASE_NAME).exists()  # released at the end

    third = run_cli("sweep", "local", spec, "--parallel", "2", "--device", "cpu", "--results-dir", results)
    assert "3 cells (3 runs); 0 to run (nothing), 3 skipped" in third.stdout
    assert third.stdout.count("skipped: completed before") == 3


@pytest.mark.slow
def test_status_tells_a_failed_cell_and_sweep_local_reruns_it(tmp_path, fashion_mnist_available):
    # Fashion-MNIST is there, CIFAR-10 is not: cell 1 fails with a user error before the store holds anything
    spec = write_spec(tmp_path, "fixed: {n: 1, epochs: 1, train_limit: 64, test_limit: 64}\n"
                                "grid: {dataset: [fashion-mnist, cifar10]}\n", "fail.yaml")
    results = tmp_path / "results"
    data = tmp_path / "no-data"
    data.mkdir()
    proc = run_cli("sweep", "cell", spec, "--index", "1", "--results-dir", results, "--data-dir", data, check=False)
    assert proc.returncode == EXIT_RETRY and "CIFAR-10" in proc.stderr  # not there yet: a pod would retry
    assert status(spec, results) == ["missing", "missing"]
    # cell 0 as a run that crashed in training leaves it: its shard says failed (written by the job-side store API)
    cfg = sw.load(spec).cells[0].config
    row = RunRecord(run_id=cfg.run_id, n=1, layers=8, dataset="fashion-mnist", epochs=1, status="failed",
                    epochs_done=0, error_message="RuntimeError: CUDA error: an illegal memory access was encountered")
    store.write_shard(store.results_location(results), row, [], [])
    assert status(spec, results) == ["failed", "missing"]
    cells = json.loads(run_cli("sweep", "status", spec, "--results-dir", results, "--format", "json").stdout)
    assert cells[0]["runs"][0]["reason"].startswith("RuntimeError: CUDA error: an illegal memory access")
    assert "illegal memory access" in run_cli("sweep", "status", spec, "--results-dir", results).stdout
    proc = run_cli("sweep", "local", spec, "--results-dir", results, "--data-dir", data, "--device", "cpu",
                   check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 to run (failed 1, missing 1)" in proc.stdout
    assert "cell 0 completed" in proc.stdout and f"cell 1 failed (exit {EXIT_RETRY})" in proc.stdout
    assert "CIFAR-10 not found" in proc.stderr  # the tail of the failed cell's log
    assert status(spec, results) == ["completed", "missing"]


@pytest.mark.slow
def test_sweep_local_stopped_by_sigterm_exits_143_with_its_runs_resumable(tmp_path, fashion_mnist_available):
    """SIGTERM to `sweep local` (a Kubernetes pod's or a Slurm task's stop): it stops its cells cleanly (each
    checkpoints every run) and exits 143, the code that says "resumable" (core.EXIT_CODES), not 2, "a mistake";
    SIGINT likewise exits 130. About 10 s."""
    spec = write_spec(tmp_path, "name: stop\nfixed: {n: 1, dataset: fashion-mnist, test_limit: 100, "
                                "train_limit: 384, epochs: 20}\nseeds: 2\ngrid: {shortcut: [A]}\n")
    results = tmp_path / "results"
    runs = sw.load(spec).cells[0].runs
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        sweep = subprocess.Popen([*CLI, "sweep", "local", str(spec), "--device", "cpu", "--results-dir",
                                  str(results)], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        done = (shard(results, runs[0].run_id) or {}).get("epochs_done", 0)
        wait_for(lambda: (shard(results, runs[0].run_id) or {}).get("epochs_done", 0) > done, 120,
                 f"an epoch after {done}")
        sweep.send_signal(signum)
        out, err = sweep.communicate(timeout=120)
        assert sweep.returncode == code, (sweep.returncode, out, err)
        assert f"stopped on {signum.name}; run the same command again to resume" in err, err
        assert status(spec, results) == ["interrupted"]
        for run in runs:  # each run stopped itself cleanly: interrupted, with a checkpoint to resume from
            row = shard(results, run.run_id)
            assert row["status"] == "interrupted" and 1 <= row["epochs_done"] < 20, row
            assert store.checkpoint_exists(store.results_location(results), run.run_id)
