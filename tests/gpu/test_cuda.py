"""The CUDA path on a real GPU: bf16 autocast learns what fp32 learns, kill -9 and resume, a cell as a process per
run, --compile, and the device-side random generator across a checkpoint. Skipped where no CUDA GPU is visible (CPU
machines, CI); bench/gpu-study.sh runs them on the lent GPU machine. What a GPU machine needs to collect them, and
every query they make, is checked on the CPU by tests/test_gpu_suite.py.

Data: real Fashion-MNIST, from --data-dir (RESNET_STUDY_DATA) or Debian's package."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess

import pytest
import torch

from resnet_study.core import data
from tests.helpers import CLI, cli_env, query, run_cli

# Every SQL query of this suite, at module level: tests/test_gpu_suite.py runs each against a store of today's schema
# on the CPU (in CI), so a query of a column that is gone fails there, not first on a lent GPU.
RUN_ON_CUDA = "SELECT test_error, precision, device_type FROM runs"
EPOCH_COPIES = "SELECT epoch, count(*) AS copies FROM epochs GROUP BY epoch ORDER BY epoch"
RUN_STATUS = "SELECT status FROM runs"
CELL_RUNS = "SELECT seed, status, device_type, cell_runs FROM runs ORDER BY seed"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu-study.sh)")]


def gpu_env() -> dict:
    env = cli_env(OMP_NUM_THREADS="4")
    if os.environ.get("RESNET_STUDY_DATA"):
        env["RESNET_STUDY_DATA"] = os.environ["RESNET_STUDY_DATA"]
    return env


def train(results, *extra) -> subprocess.CompletedProcess:
    return run_cli("train", "--dataset", "fashion-mnist", "--device", "cuda", "--progress", "json",
                   "--results-dir", results, *extra, env=gpu_env(), timeout=900)


def test_bf16_autocast_lands_within_one_point_of_fp32(tmp_path):
    """ResNet-20 on all 60 000 Fashion-MNIST images for 3 epochs, the paper's augmentation: bf16 autocast and fp32
    (PyTorch's defaults: cuDNN may use TF32 for fp32 convolutions) on the same seed end within 1 point of test
    error."""
    errors = {}
    for precision in ("fp32", "bf16"):
        train(tmp_path / precision, "--n", "3", "--epochs", "3", "--precision", precision)
        [run] = query(tmp_path / precision, RUN_ON_CUDA)
        assert run["precision"] == precision and run["device_type"] == "cuda"
        errors[precision] = run["test_error"]
    print(f"test error: fp32 {errors['fp32']:.4f}, bf16 {errors['bf16']:.4f}")
    assert errors["fp32"] < 0.15 and errors["bf16"] < 0.15  # it learnt (chance: 0.9)
    assert abs(errors["bf16"] - errors["fp32"]) <= 0.01, errors


def test_kill_9_on_cuda_then_resume_with_one_row_per_epoch(tmp_path):
    results = tmp_path / "results"
    args = ["train", "--dataset", "fashion-mnist", "--device", "cuda", "--progress", "json", "--n", "3",
            "--epochs", "3", "--results-dir", str(results)]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=gpu_env())
    first = json.loads(proc.stdout.readline())  # printed once epoch 1's checkpoint and shard are written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first["epoch"] == 1
    again = run_cli(*args, env=gpu_env(), timeout=900)
    assert "resuming after epoch" in again.stderr
    assert query(results, EPOCH_COPIES) == [
        {"epoch": e, "copies": 1} for e in (1, 2, 3)]
    assert query(results, RUN_STATUS) == [{"status": "completed"}]


def test_a_cell_on_cuda_trains_a_process_per_run(tmp_path):
    """`--cell-layout auto` on CUDA (jobs/packing.py): a cell of 2 seeds is 2 training processes sharing the GPU, each
    run trained alone in its process (the same layout as tests/test_packing.py checks on the CPU, there forced)."""
    out = train(tmp_path, "--n", "1", "--epochs", "1", "--train-limit", "2560", "--seeds", "0,1")
    assert out.stderr.count(" in process ") == 2, out.stderr
    assert query(tmp_path, CELL_RUNS) == [{"seed": s, "status": "completed", "device_type": "cuda", "cell_runs": 1}
                                          for s in (0, 1)]


def test_compile_trains(tmp_path):
    out = train(tmp_path, "--n", "1", "--epochs", "2", "--compile")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and rows[-1]["test_error"] < 0.25, rows


def test_device_generator_gives_the_same_augmentation_after_resume():
    """The loader's randomness is one CUDA generator; its state, saved and restored the way core.train's checkpoint
    does (torch.save / torch.load of get_state()), continues the exact sequence of orders and augmentations."""
    train_split, _, _ = data.load("fashion-mnist")
    split = train_split.head(4096)
    mean, std = data.channel_stats(split.images)
    device = torch.device("cuda")

    def loader(generator):
        return data.DeviceLoader(split, 256, mean, std, device=device, augment="report", shuffle=True,
                                 generator=generator)

    g = torch.Generator(device=device).manual_seed(7)
    reference = [x.clone() for x, _ in loader(g)] + [x.clone() for x, _ in loader(g)]  # two epochs

    g = torch.Generator(device=device).manual_seed(7)
    first_epoch = [x.clone() for x, _ in loader(g)]
    buf = io.BytesIO()
    torch.save({"generator": g.get_state()}, buf)
    buf.seek(0)
    resumed = torch.Generator(device=device)
    resumed.set_state(torch.load(buf, weights_only=False)["generator"].cpu())
    second_epoch = [x.clone() for x, _ in loader(resumed)]
    assert len(reference) == len(first_epoch) + len(second_epoch)
    for a, b in zip(reference, first_epoch + second_epoch):
        assert torch.equal(a, b)
    assert not torch.equal(reference[0], reference[len(first_epoch)])  # epochs differ: it is not one fixed draw
