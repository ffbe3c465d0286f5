"""How a cell's runs map to processes (jobs/packing.py), on the CPU: the rules for CUDA as functions (no GPU is
faked: `process_groups("cuda", ...)` is the layout `--device cuda` takes), and the process-per-run layout itself
(`--cell-layout process-per-run`, which `auto` picks on CUDA) as real processes on real Fashion-MNIST: K runs in K
training processes give the single-process cell's rows and weights, SIGTERM to the parent of `sweep cell` (what a
pod runs) stops every child cleanly with 143 and the same command resumes them, `--if-running exit` leaves held runs.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest
import torch

from resnet_study.core import EXIT_CODES
from resnet_study.core.config import RunConfig
from resnet_study.core.lease import LEASE_NAME, Lease
from resnet_study.jobs import packing
from resnet_study.jobs.options import experiment_argv, experiments_from
from tests.helpers import CLI, cli_env, parse_command, query, run_cli

TINY = ["--n", "1", "--dataset", "fashion-mnist", "--epochs", "2", "--train-limit", "256", "--test-limit", "200",
        "--device", "cpu", "--progress", "json"]
PER_RUN = ["--cell-layout", "process-per-run"]
ROW_KEYS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error")


def test_the_layout_rules():
    """Cost: < 0.1 s. On CUDA a run per process, on a CPU one process per cell; the override either way; 8 runs per
    GPU decide the cells at a time; an argv rebuilt from a run's config makes that run again."""
    seeds = [0, 1, 2]
    assert packing.process_groups(seeds, "cuda") == [[0], [1], [2]]
    assert packing.process_groups(seeds, "cpu") == [[0, 1, 2]]
    assert packing.process_groups(seeds, "cuda", "one-process") == [[0, 1, 2]]
    assert packing.process_groups(seeds, "cpu", "process-per-run") == [[0], [1], [2]]
    assert packing.process_groups([5], "cuda") == [[5]]
    assert [packing.cells_at_once(k, 1) for k in (1, 3, 8, 16)] == [8, 2, 1, 1]
    assert packing.cells_at_once(3, 2) == 5 and packing.runs_at_once("cuda", 2) == 16
    cfg = RunConfig(n=2, dataset="fashion-mnist", epochs=6, seed=4, weight_decay=5e-4, train_limit=640, val_split=64,
                    augment="report", warmup_epochs=1)
    _, params = parse_command(["resnet-study", "train", *experiment_argv(cfg)])
    assert experiments_from(dict(params)) == [cfg]


@pytest.mark.parametrize("codes, combined", [
    ([0, 0], 0), ([0, 3], 0), ([3, 3], 3), ([0, 143], 143), ([143, -15], 143), ([130, 0], 130), ([143, 75], 75),
    ([0, 1, 75], 1), ([1, 2, 143], 2), ([-9, 0], 1), ([0, 137], 1), ([], 0)])
def test_exit_codes_combine_by_the_worst_batch_action(codes, combined):
    """Cost: < 0.1 s. fail > retry > resume > done (core.EXIT_CODES), a signal's -N as 128 + N, unknown = failed."""
    assert packing.combine_exit_codes(codes) == combined
    assert combined in {e.code for e in EXIT_CODES}


def rows_and_weights(results, run_id):
    shard = json.loads((results / "runs" / run_id / "run.json").read_text())
    rows = [{k: e[k] for k in ROW_KEYS} for e in shard["epochs"]]  # the science, not the timings or provenance
    return rows, torch.load(results / "runs" / run_id / "checkpoint.pt", weights_only=False)["model"]


@pytest.mark.slow
def test_a_cell_as_a_process_per_run_is_the_one_process_cell(tmp_path, fashion_mnist_available):
    """Cost: about 29 s on 2 cores (a 3-seed cell twice, in 1 and in 3 processes). The process-per-run cell starts
    one training process per seed; every run's rows and final weights are the one-process cell's, bit for bit."""
    one, split = tmp_path / "one", tmp_path / "split"
    run_cli("train", *TINY, "--threads", "1", "--seeds", "0-2", "--results-dir", one)
    proc = run_cli("train", *TINY, "--threads", "3", "--seeds", "0-2", *PER_RUN, "--results-dir", split)
    pids = set(re.findall(r": seed \d in process (\d+)", proc.stderr))
    assert len(pids) == 3, proc.stderr
    assert "CPU threads: 1 each" in proc.stderr
    assert query(one, "SELECT DISTINCT cell_runs FROM runs") == [{"cell_runs": 3}]
    assert query(split, "SELECT DISTINCT cell_runs FROM runs") == [{"cell_runs": 1}]  # each trained alone
    run_ids = [r["run_id"] for r in query(one, "SELECT run_id FROM runs ORDER BY seed")]
    assert len(run_ids) == 3
    for rid in run_ids:
        (rows_a, w_a), (rows_b, w_b) = rows_and_weights(one, rid), rows_and_weights(split, rid)
        assert rows_a == rows_b and len(rows_a) == 2, rid
        assert w_a.keys() == w_b.keys() and all(torch.equal(w_a[k], w_b[k]) for k in w_a), rid
    again = run_cli("train", *TINY, "--seeds", "0-2", *PER_RUN, "--results-dir", split)
    assert again.stderr.count("already completed") == 3 and "in process" not in again.stderr


@pytest.mark.slow
def test_sigterm_to_the_parent_stops_every_child_cleanly_and_the_cell_resumes(tmp_path, fashion_mnist_available):
    """Cost: about 34 s on 2 cores. `sweep cell` of a 3-seed cell, a process per run; SIGTERM to the parent once every
    run has finished an epoch: the parent exits 143, every run is interrupted (or completed) with its checkpoint,
    no lease is left; the same command then completes every run with one row per epoch."""
    spec = tmp_path / "cell.yaml"
    spec.write_text("fixed: {dataset: fashion-mnist, epochs: 4, train_limit: 1280, test_limit: 200}\n"
                    "grid: {n: [1]}\nseeds: 3\n")
    results = tmp_path / "results"
    args = ["sweep", "cell", str(spec), "--index", "0", "--device", "cpu", "--threads", "3", *PER_RUN,
            "--progress", "json", "--results-dir", str(results)]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    seen = set()
    while len(seen) < 3:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        seen.add(json.loads(line)["run_id"])
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped on SIGTERM" in err
    states = query(results, "SELECT run_id, status FROM runs")
    assert len(states) == 3 and {s["status"] for s in states} <= {"interrupted", "completed"}, states
    assert "interrupted" in {s["status"] for s in states}, states
    for s in states:
        assert (results / "runs" / s["run_id"] / "checkpoint.pt").is_file()
        assert not (results / "runs" / s["run_id"] / LEASE_NAME).exists()
    run_cli(*args)
    assert query(results, "SELECT status, count(*) AS n FROM runs GROUP BY status") == [{"status": "completed", "n": 3}]
    assert query(results, "SELECT run_id, count(*) AS rows, count(DISTINCT epoch) AS epochs FROM epochs "
                          "GROUP BY run_id HAVING rows != 4 OR epochs != 4") == []


@pytest.mark.slow
def test_if_running_exit_leaves_a_held_run_and_exits_3_only_when_every_run_is_held(tmp_path, fashion_mnist_available):
    """Cost: about 12 s on 2 cores (one tiny run trained). A live lease on seed 0: the cell of seeds 0,1 in a process
    per run trains seed 1 and leaves seed 0 (exit 0); asked again, with seed 1 completed, it exits 3."""
    results = tmp_path / "results"
    held = RunConfig(n=1, dataset="fashion-mnist", epochs=2, train_limit=256, test_limit=200, seed=0)
    lease = Lease(results / "runs" / held.run_id, held.run_id, log=lambda m: None)
    assert lease.try_acquire()
    try:
        args = ["train", *TINY, "--seeds", "0,1", *PER_RUN, "--if-running", "exit", "--results-dir", results]
        some = run_cli(*args)
        assert f"{held.run_id} is being trained by" in some.stderr and "left to it (--if-running exit)" in some.stderr
        assert some.stderr.count("in process") == 1
        none = run_cli(*args, check=False)
        assert none.returncode == 3, none.stderr
        assert "already completed" in none.stderr and "every run asked for is being trained elsewhere" in none.stderr
    finally:
        lease.release()
    assert [r["seed"] for r in query(results, "SELECT seed FROM runs")] == [1]
