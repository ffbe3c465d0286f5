"""`resnet-study train` end to end: real data, real processes, the real results store."""

import json
import subprocess
import time

import numpy as np
import pytest
import torch

from resnet_study.core import data
from tests.helpers import (CLI, LUMA, class_colours, cli_env, make_cifar_colour, query, run_cli, tiny_train_args)

pytestmark = pytest.mark.slow  # real training processes


def test_cifar10_format_learnable_only_from_colour(tmp_path):
    """Classes differ only in hue (equal luma): near-zero error proves RGB order, labels and the on-disk layout."""
    data_dir = make_cifar_colour(tmp_path / "data")
    train, test, classes = data.load("cifar10", data_dir)
    assert train.images.shape == (2500, 3, 32, 32) and test.images.shape == (500, 3, 32, 32)
    assert classes[3] == "colour3"
    # The loader keeps R, G, B in order: remove each image's grey level, and the nearest class colour is its label.
    means = train.images.double().mean(dim=(2, 3)).numpy()
    chroma = means - (means @ LUMA)[:, None]
    nearest = np.argmin(((chroma[:, None, :] - class_colours()[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == train.labels.numpy()) > 0.95, "channel order differs from the file's R, G, B planes"

    results = tmp_path / "results"
    run_cli("train", "--n", "1", "--dataset", "cifar10", "--epochs", "2", "--data-dir", data_dir, "--device", "cpu",
            "--results-dir", results)
    [run] = query(results, "SELECT test_error, train_size FROM runs")
    assert run["train_size"] == 2500
    assert run["test_error"] < 0.05, run


def test_validation_split_is_stratified_seeded_and_recorded(tmp_path, fashion_mnist_available):
    labels = torch.arange(10).repeat_interleave(100)
    tr, val = data.stratified_split(labels, 50, seed=3)
    assert len(val) == 50 and len(tr) == 950 and not set(tr.tolist()) & set(val.tolist())
    assert torch.bincount(labels[val], minlength=10).tolist() == [5] * 10
    assert torch.equal(val, data.stratified_split(labels, 50, seed=3)[1])
    assert not torch.equal(val, data.stratified_split(labels, 50, seed=4)[1])

    results = tmp_path / "results"
    run_cli(*tiny_train_args(results, "--val-split", "56"))
    [run] = query(results, "SELECT * FROM runs")
    assert run["train_size"] == 200 and run["val_size"] == 56 and run["val_error"] is not None
    rows = query(results, "SELECT val_loss, val_error FROM epochs")
    assert len(rows) == 2 and all(r["val_error"] is not None for r in rows)
    splits = query(results, "SELECT split, sum(count) AS images FROM confusion GROUP BY split ORDER BY split")
    assert splits == [{"split": "test", "images": 200}, {"split": "val", "images": 56}]


def test_kill_9_at_random_moments(tmp_path, fashion_mnist_available):
    """Killed again and again at arbitrary moments (mid-epoch, mid-write, mid-sync), the run still ends exact.

    The first kill lands right after epoch 1 is stored (the store then says running, with 1 epoch or more done), so
    the run must resume at least once; the later ones at random moments of the resumed processes (start-up, an
    epoch, the checkpoint, the sync). The finished run, asked again, says it is completed and trains nothing."""
    results = tmp_path / "results"
    args = tiny_train_args(results, "--epochs", "4", "--train-limit", "512")
    rng = np.random.default_rng(0)
    logs = []
    for attempt in range(4):
        log = tmp_path / f"attempt-{attempt}.log"
        with open(log, "w") as err:
            proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=err, text=True, env=cli_env())
            if attempt == 0:
                assert json.loads(proc.stdout.readline())["epoch"] == 1  # printed once epoch 1 is stored
            else:
                time.sleep(float(rng.uniform(0.5, 4.0)))
            proc.kill()
            proc.wait()
        if attempt == 0:  # what a SIGKILL leaves: the run says running, its lease is left behind
            [run] = query(results, "SELECT status, epochs_done FROM runs")
            assert run["status"] == "running" and 1 <= run["epochs_done"] < 4
        logs.append(log.read_text())
    final = run_cli(*args)
    logs.append(final.stderr)
    resumed = [text for text in logs[1:] if "resuming after epoch" in text]
    assert resumed, logs  # at least one process picked the run up from a checkpoint
    rows = query(results, "SELECT epoch, count(*) AS copies FROM epochs GROUP BY epoch ORDER BY epoch")
    assert rows == [{"epoch": e, "copies": 1} for e in (1, 2, 3, 4)]
    assert query(results, "SELECT status FROM runs") == [{"status": "completed"}]
    done = run_cli(*args)  # a finished run: nothing to do, and it says so
    assert "already completed" in done.stderr and not done.stdout
    assert query(results, "SELECT count(*) AS n FROM epochs") == [{"n": 4}]


def test_an_old_results_dir_is_resumed_and_extended(old_store, fashion_mnist_available):
    """A results dir written by 0.1.0 (tests/fixtures/): a cell of its interrupted run (seed 7) and a new seed (8)
    resumes the first from 0.1.0's checkpoint (its float lr re-set as this version keeps it: a tensor the schedule
    changes in place), trains the second from scratch, and leaves the 8 completed runs untouched."""
    completed = query(old_store, "SELECT run_id, test_error, train_seconds FROM runs WHERE status = 'completed' "
                                 "ORDER BY run_id")
    args = ["train", "--n", "1", "--dataset", "fashion-mnist", "--epochs", "3", "--train-limit", "500",
            "--test-limit", "200", "--device", "cpu", "--progress", "json", "--results-dir", old_store]
    resumed = run_cli(*args, "--seeds", "7,8")
    assert "resuming after epoch 1" in resumed.stderr and resumed.stderr.count("completed 3 epochs") == 2
    lrs = [(json.loads(line)["run_id"], json.loads(line)["lr"]) for line in resumed.stdout.splitlines()]
    assert [lr for rid, lr in lrs if "-s7-" in rid] == [0.1, 0.01]  # epochs 2 and 3 of its schedule
    runs = query(old_store, "SELECT run_id, seed, status, epochs_done, source_hash FROM runs WHERE seed >= 7 "
                            "ORDER BY seed")
    assert [(r["seed"], r["status"], r["epochs_done"]) for r in runs] == [(7, "completed", 3), (8, "completed", 3)]
    assert all(r["source_hash"] for r in runs)  # the new columns, filled by the new code
    epochs = query(old_store, f"SELECT epoch, source_hash FROM epochs WHERE run_id = '{runs[0]['run_id']}' "
                              "ORDER BY epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and epochs[0]["source_hash"] is None  # epoch 1: 0.1.0's
    assert query(old_store, "SELECT run_id, test_error, train_seconds FROM runs WHERE status = 'completed' AND "
                            "seed < 7 ORDER BY run_id") == completed
