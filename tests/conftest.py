"""Shared test helpers: run the real CLI as a subprocess, generate CIFAR-10-format data, read the real store."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [str(Path(sys.executable).parent / "resnet-study")]  # the installed console script, as users run it
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def cli_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.pop("RESNET_STUDY_RESULTS", None)
    env.pop("RESNET_STUDY_DATA", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_cli(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None, cwd=None,
            ) -> subprocess.CompletedProcess:
    """`resnet-study ARGS` in a real process."""
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env(), cwd=cwd or ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"resnet-study {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def query(results_dir: Path, sql: str) -> list[dict]:
    """Rows of `resnet-study results query --format json`: the user's own read path."""
    return json.loads(run_cli("results", "query", sql, "--format", "json", "--results-dir", results_dir).stdout)


def tiny_train_args(results_dir: Path, *extra: str) -> list[str]:
    return ["train", "--n", "1", "--dataset", "fashion-mnist", "--epochs", "2", "--train-limit", "256",
            "--test-limit", "200", "--device", "cpu", "--progress", "json", "--results-dir", str(results_dir), *extra]


@pytest.fixture(scope="session")
def fashion_mnist_available() -> None:
    if not (FASHION_MNIST_DEBIAN / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("Debian's dataset-fashion-mnist is not installed: run `make test` (it installs it) or "
                    "`apt-get install dataset-fashion-mnist`")


# ---------------------------------------------------------------- a CIFAR-10-format set learnable only from colour

LUMA = np.array([0.299, 0.587, 0.114])


def class_colours(num_classes: int = 10, amplitude: float = 70.0) -> np.ndarray:
    """One RGB offset per class, all with zero luma: the classes differ in hue only, so a model trained in grayscale
    cannot tell them apart, and one that swaps R and B predicts the wrong class."""
    u1 = np.array([1.0, -1.0, 0.0]) - LUMA @ np.array([1.0, -1.0, 0.0]) / (LUMA @ LUMA) * LUMA
    u1 /= np.linalg.norm(u1)
    u2 = np.cross(LUMA / np.linalg.norm(LUMA), u1)
    u2 -= (LUMA @ u2) / (LUMA @ LUMA) * LUMA
    u2 /= np.linalg.norm(u2)
    angles = np.linspace(0, 2 * np.pi, num_classes, endpoint=False)
    return amplitude * (np.cos(angles)[:, None] * u1 + np.sin(angles)[:, None] * u2)


def make_cifar_colour(root: Path, per_batch: int = 500, test: int = 500, seed: int = 0) -> Path:
    """Write cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta) in torchvision's pickle format."""
    rng = np.random.default_rng(seed)
    colours = class_colours()
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(count: int) -> dict:
        labels = rng.integers(0, 10, count)
        gray = rng.uniform(90, 165, (count, 1, 1, 1))  # the same luma distribution for every class
        noise = rng.normal(0, 12, (count, 3, 32, 32))
        img = gray + colours[labels][:, :, None, None] + noise
        data = np.clip(img, 0, 255).astype(np.uint8).reshape(count, 3072)  # R plane, G plane, B plane
        return {b"data": data, b"labels": labels.tolist()}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_batch), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(test), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"colour{i}".encode() for i in range(10)]}, f)
    return root
