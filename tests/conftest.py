"""Fixtures (helpers are in tests/helpers.py), and the suite's time budget.

RESNET_STUDY_TEST_BUDGET_S (set by .ci/run): when pytest's own time exceeds it, the run fails after the summary and
the slowest tests are printed, so a suite that grows too slow fails loudly and says where the time went, long before
CI's hard limit stops it silently."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import FASHION_MNIST_DEBIAN, ROOT
from tests.slurm_cluster import slurm_cluster  # noqa: F401  (the fixture: a real single-node Slurm)

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
    # Imported here, not at the top: boto3 and moto are the bucket tests' alone, and tests/gpu is collected on a GPU
    # machine that has neither (tests/test_gpu_suite.py holds conftest to that).
    from tests import s3_server as s3_server_module

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


BUDGET_ENV = "RESNET_STUDY_TEST_BUDGET_S"
_started = time.monotonic()


def _budget() -> float | None:
    value = os.environ.get(BUDGET_ENV, "").strip()
    return float(value) if value else None


def pytest_sessionfinish(session, exitstatus):
    budget = _budget()
    if budget is not None and time.monotonic() - _started > budget and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    budget, took = _budget(), time.monotonic() - _started
    if budget is None:
        return
    if took > budget:
        terminalreporter.write_line(f"FAILED: the suite took {took:.0f} s, over its budget of {budget:.0f} s "
                                    f"({BUDGET_ENV}); the slowest tests are listed above", red=True, bold=True)
    else:
        terminalreporter.write_line(f"time budget: {took:.0f} s of {budget:.0f} s ({BUDGET_ENV})")
