"""Fixtures only (helpers are in tests/helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import FASHION_MNIST_DEBIAN, ROOT

FIXTURE_STORE = ROOT / "tests" / "fixtures" / "results-0.1.0"


@pytest.fixture(scope="session")
def fashion_mnist_available() -> None:
    if not (FASHION_MNIST_DEBIAN / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("Debian's dataset-fashion-mnist is not installed: run `make test` (it installs it) or "
                    "`apt-get install dataset-fashion-mnist`")


@pytest.fixture
def old_store(tmp_path) -> Path:
    """A copy of a results dir written by resnet-study 0.1.0 (tests/fixtures/README.md): 8 completed runs (2 depths
    x 3 seeds, an lr variant, a plain net) and one interrupted after epoch 1 of 3, with its checkpoint."""
    return Path(shutil.copytree(FIXTURE_STORE, tmp_path / "results"))
