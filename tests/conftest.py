"""Fixtures only (helpers are in tests/helpers.py)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests import s3_server as s3_server_module
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


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 protocol server on 127.0.0.1 for the whole session (tests/s3_server.py), checking signatures."""
    server = s3_server_module.start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path) -> str:
    """A fresh bucket on the test server, reached the standard AWS way (this process's environment, which child
    processes inherit), with a snapshot cache of its own; returns the results URL `s3://<bucket>/study`."""
    monkeypatch.setenv("RESNET_STUDY_CACHE", str(tmp_path / "cache"))
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    bucket = f"study-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/study"
