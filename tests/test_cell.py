"""A cell: all seeds of one experiment trained together in one process (core/cell.py), as real processes on real
Fashion-MNIST with a real store.

- equivalence, exact: `train --seeds 0,1,2` and the three `train --seed s` give identical epoch rows and identical
  final weights; each run's data orders and augmentations in the cell are its single run's, draw for draw;
- faults: a cell killed with SIGKILL mid-epoch, then the same command, ends exactly like the uninterrupted cell;
  SIGTERM at a random step stops it cleanly (mid-epoch checkpoints, runs marked interrupted, leases released) and
  the resumed cell trains only the steps that were left; a completed seed is not trained again; two identical
  cell commands at once train each run once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from resnet_study.core import EXIT_SIGTERM, data
from resnet_study.core.config import RunConfig, RunOptions
from resnet_study.core.lease import LEASE_NAME
from tests.helpers import CLI, cli_env, query, run_cli, run_cli_many

pytestmark = pytest.mark.slow  # real training processes

SEEDS = (0, 1, 2)
EPOCHS = 3
EXPERIMENT = ["--n", "1", "--dataset", "fashion-mnist", "--epochs", str(EPOCHS), "--train-limit", "640", "--test-limit",
              "200", "--val-split", "64", "--device", "cpu", "--threads", "1", "--progress", "json"]
STEPS_PER_EPOCH = -(-(640 - 64) // 128)  # 5: four full batches and a short one of 64
ROW_KEYS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error", "val_loss", "val_error")


def cell_args(results, *extra) -> list:
    return ["train", *EXPERIMENT, "--results-dir", results, *extra]


def run_ids() -> list[str]:
    cfg = RunConfig(n=1, dataset="fashion-mnist", epochs=EPOCHS, train_limit=640, test_limit=200, val_split=64)
    return [cfg.with_seed(s).run_id for s in SEEDS]


def rows(results, run_id) -> list[tuple]:
    shard = json.loads((results / "runs" / run_id / "run.json").read_text())
    return [tuple(e[k] for k in ROW_KEYS) for e in shard["epochs"]]


def weights(results, run_id) -> dict:
    return torch.load(results / "runs" / run_id / "checkpoint.pt", weights_only=False)["model"]


def assert_same_runs(a, b) -> None:
    """Every run of the cell: the same epoch rows (losses, errors, lr) and bit-identical final weights."""
    for rid in run_ids():
        assert rows(a, rid) == rows(b, rid), rid
        wa, wb = weights(a, rid), weights(b, rid)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), rid


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fashion_mnist_available):
    """The uninterrupted cell, in its own results dir."""
    results = tmp_path_factory.mktemp("cell") / "results"
    proc = run_cli(*cell_args(results, "--seeds", "0-2"))
    assert [json.loads(line)["run_id"] for line in proc.stdout.splitlines()].count(run_ids()[1]) == EPOCHS
    assert proc.stderr.count(f"completed {EPOCHS} epochs") == 3
    return results


def test_a_cell_is_its_single_runs_bit_for_bit(reference, tmp_path):
    singles = tmp_path / "singles"
    for proc in run_cli_many([cell_args(singles, "--seed", s) for s in SEEDS]):
        assert proc.returncode == 0, proc.stderr
    assert_same_runs(reference, singles)
    recorded = {r["seed"]: r for r in query(reference, "SELECT seed, run_id, cell_runs, status, train_size, val_size "
                                                       "FROM runs")}
    assert [recorded[s]["run_id"] for s in SEEDS] == run_ids()  # the ids `train --seed s` gives
    assert {(r["cell_runs"], r["status"], r["train_size"], r["val_size"]) for r in recorded.values()} == {
        (3, "completed", 576, 64)}
    assert {r["cell_runs"] for r in query(singles, "SELECT cell_runs FROM runs")} == {1}

    # a cell whose seed 0 is already completed trains only seeds 1 and 2, and ends the same
    partial = tmp_path / "partial"
    (partial / "runs").mkdir(parents=True)
    shutil.copytree(singles / "runs" / run_ids()[0], partial / "runs" / run_ids()[0])
    proc = run_cli(*cell_args(partial, "--seeds", "0,1,2"))
    assert f"{run_ids()[0]}: already completed" in proc.stderr
    assert proc.stderr.count(f"completed {EPOCHS} epochs") == 2
    assert {json.loads(line)["run_id"] for line in proc.stdout.splitlines()} == set(run_ids()[1:])
    assert_same_runs(reference, partial)


def test_each_run_in_a_cell_draws_its_own_orders_and_augmentations(tmp_path, monkeypatch, fashion_mnist_available):
    """In-process, the batches each run sees (the rows it gathers and the augmented pixels it trains on) are
    recorded: in a cell of seeds 0 and 1 each run's sequence is its single run's, draw for draw. Two runs sharing
    one generator (or one run's draws leaking into another's) would make the cell's sequences differ."""
    from resnet_study.core import cell

    seen: dict[int, list] = {}
    real_batch = data.DeviceLoader.batch

    def recording_batch(self, order, k):
        x, y = real_batch(self, order, k)
        if not self.shuffle:  # evaluation batches: in order, never augmented
            return x, y
        seen.setdefault(id(self.generator), []).append((order[k * self.batch_size:(k + 1) * self.batch_size].clone(),
                                                        x.clone()))
        return x, y

    monkeypatch.setattr(data.DeviceLoader, "batch", recording_batch)
    cfg = RunConfig(n=1, dataset="fashion-mnist", epochs=2, train_limit=384, test_limit=100, augment="report")

    def sequences(results, seeds) -> list[list]:
        seen.clear()
        cell.train_cell([cfg.with_seed(s) for s in seeds], RunOptions(device="cpu", threads=1, progress="json",
                                                                      results_dir=results), log=lambda msg: None)
        return list(seen.values())  # in the order the runs were built: the order of `seeds`

    together = sequences(tmp_path / "cell", [0, 1])
    alone = [sequences(tmp_path / f"s{s}", [s])[0] for s in (0, 1)]
    assert len(together) == 2 and [len(s) for s in together] == [len(s) for s in alone] == [6, 6]
    for run_together, run_alone in zip(together, alone):
        for (idx_a, x_a), (idx_b, x_b) in zip(run_together, run_alone):
            assert torch.equal(idx_a, idx_b) and torch.equal(x_a, x_b)
    assert not torch.equal(together[0][0][0], together[1][0][0])  # the two seeds draw different orders


def _stored_epochs(results, run_id) -> int:
    try:
        return len(json.loads((results / "runs" / run_id / "run.json").read_text())["epochs"])
    except (FileNotFoundError, ValueError):
        return 0


def test_a_cell_killed_mid_epoch_resumes_every_run_exactly(reference, tmp_path):
    results = tmp_path / "results"
    args = [str(a) for a in cell_args(results, "--seeds", "0-2")]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env())
    first = json.loads(proc.stdout.readline())  # one run's epoch 1 is stored: the others are mid-way
    time.sleep(float(np.random.default_rng().uniform(0, 0.5)))
    proc.kill()
    proc.wait()
    stored = [_stored_epochs(results, rid) for rid in run_ids()]
    assert first["epoch"] == 1 and max(stored) >= 1 and min(stored) < EPOCHS, stored
    again = run_cli(*args)
    assert "resuming after epoch 1" in again.stderr
    counts = query(results, "SELECT run_id, count(*) AS n, count(DISTINCT epoch) AS d FROM epochs GROUP BY run_id")
    assert sorted((c["n"], c["d"]) for c in counts) == [(EPOCHS, EPOCHS)] * 3  # one row per epoch
    assert_same_runs(reference, results)


@pytest.mark.parametrize("seeds", [["--seed", "0"], ["--seeds", "0-2"]], ids=["one run", "a cell"])
def test_sigterm_stops_cleanly_and_the_run_resumes_at_that_step(reference, tmp_path, seeds):
    """SIGTERM at a random step of epoch 2 of 3: every run finishes its step, checkpoints mid-epoch, says
    interrupted and gives its lease back (another process takes it at once); the same command trains exactly the
    steps that were left, and every run ends as the uninterrupted one (rows and weights, bit for bit)."""
    from resnet_study.core.lease import Lease

    results = tmp_path / "results"
    ids = run_ids()[:1] if seeds[0] == "--seed" else run_ids()
    args = [str(a) for a in cell_args(results, *seeds)]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    for _ in ids:  # every run has finished epoch 1
        assert json.loads(proc.stdout.readline())["epoch"] == 1
    time.sleep(float(np.random.default_rng().uniform(0, 0.1 * len(ids) * STEPS_PER_EPOCH)))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_SIGTERM, err
    assert "run the same command again to resume" in err
    stopped = {rid: int(err.split(f"{rid}: stopped (SIGTERM)")[1].split(" steps in this process")[0].split("(")[-1])
               for rid in ids if f"{rid}: stopped" in err}
    assert stopped, err
    shards = {r["run_id"]: r for r in query(results, "SELECT run_id, status, epochs_done FROM runs")}
    for rid in stopped:
        assert shards[rid]["status"] == "interrupted" and 1 <= shards[rid]["epochs_done"] < EPOCHS
        assert not (results / "runs" / rid / LEASE_NAME).exists()
        taker = Lease(results / "runs" / rid, rid, log=lambda m: None)
        assert taker.try_acquire()  # free at once: no stale lease to wait out
        taker.release()

    again = run_cli(*args)
    for rid in stopped:
        done_here = int(again.stderr.split(f"{rid}: completed {EPOCHS} epochs")[1].split(" steps in this process")[0]
                        .split("(")[-1])
        assert stopped[rid] + done_here == EPOCHS * STEPS_PER_EPOCH, again.stderr  # no step trained twice
    assert again.stderr.count(" at step ") == len(stopped)  # "resuming epoch E at step K of 5"
    for rid in ids:
        assert rows(reference, rid) == rows(results, rid), rid
        wa, wb = weights(reference, rid), weights(results, rid)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), rid


def test_two_identical_cell_commands_train_each_run_once(tmp_path, fashion_mnist_available):
    results = tmp_path / "results"
    args = [str(a) for a in cell_args(results, "--seeds", "0-2")]
    procs = [subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env()) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = [json.loads(line)["run_id"] for out, _ in outputs for line in out.splitlines()]
    assert sorted(trained) == sorted(run_ids() * EPOCHS)  # each run's epochs, trained by exactly one of the two
    counts = query(results, "SELECT count(*) AS n, count(DISTINCT run_id || epoch) AS d FROM epochs")
    assert counts == [{"n": 3 * EPOCHS, "d": 3 * EPOCHS}]
    assert not any((results / "runs" / r / LEASE_NAME).exists() for r in run_ids())


def test_if_running_exit_leaves_held_runs_and_exits_3_only_if_it_trained_nothing(tmp_path, fashion_mnist_available):
    from resnet_study.core.lease import Lease

    results = tmp_path / "results"
    held = [Lease(results / "runs" / rid, rid, log=lambda m: None) for rid in run_ids()]
    try:
        for lease in held[:2]:
            assert lease.try_acquire()
        some = run_cli(*cell_args(results, "--seeds", "0-2", "--if-running", "exit"))
        assert "left to it (--if-running exit)" in some.stderr and some.stderr.count(f"completed {EPOCHS} epochs") == 1
        none = run_cli(*cell_args(results, "--seeds", "0,1", "--if-running", "exit"), check=False)
        assert none.returncode == 3 and none.stderr.count("error: ") == 1
        assert "every run asked for is being trained elsewhere: " in none.stderr
    finally:
        for lease in held[:2]:
            lease.release()
    assert [r["seed"] for r in query(results, "SELECT seed FROM runs")] == [2]
