"""Test helpers, in one module: the real CLI as a subprocess, a real `resnet-study serve`, CIFAR-10-format data, the
store read independently with DuckDB, the real CLI parser for manifests and compose files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import duckdb
import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).parent / "resnet-study"  # the installed console script, as users run it
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "resnet_study.jobs"]
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def cli_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.pop("RESNET_STUDY_RESULTS", None)
    env.pop("RESNET_STUDY_DATA", None)
    env.pop("RESNET_STUDY_API_TOKEN", None)
    env.pop("RESNET_STUDY_API_TOKEN_FILE", None)
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


_MANY = r"""
import contextlib, io, json, os, sys, traceback
from resnet_study.jobs.cli import main
results = []
for argv, env in json.load(sys.stdin):
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = ["resnet-study", *argv]
    saved = dict(os.environ)
    os.environ.update(env["set"])
    for name in env["unset"]:
        os.environ.pop(name, None)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    os.environ.clear()
    os.environ.update(saved)
    results.append({"args": argv, "returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
json.dump(results, sys.__stdout__)
"""


def run_cli_many(argvs: list[list], timeout: float = 600, env: dict | None = None, case_env: list[dict] | None = None,
                 ) -> list[subprocess.CompletedProcess]:
    """Each argv through the CLI's real entry point (`resnet_study.jobs.cli:main`, exit codes and all), one after
    another in ONE process: torch is imported once instead of once per command (seconds each). `case_env`: per case,
    variables to set (a value) or remove (None) for that command only; the CLI reads its environment per command
    (threads, CPU request), nothing it caches."""
    cases = [[[str(a) for a in v], {"set": {k: str(x) for k, x in e.items() if x is not None},
                                    "unset": [k for k, x in e.items() if x is None]}]
             for v, e in zip(argvs, case_env or [{}] * len(argvs))]
    proc = subprocess.run([sys.executable, "-c", _MANY], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=timeout, env=env or cli_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return [subprocess.CompletedProcess(r["args"], r["returncode"], r["stdout"], r["stderr"])
            for r in json.loads(proc.stdout)]


def query(results_dir: Path, sql: str) -> list[dict]:
    """Rows of `resnet-study results query --format json`: the user's own read path."""
    return json.loads(run_cli("results", "query", sql, "--format", "json", "--results-dir", results_dir).stdout)


def tiny_train_args(results_dir: Path, *extra: str) -> list[str]:
    return ["train", "--n", "1", "--dataset", "fashion-mnist", "--epochs", "2", "--train-limit", "256",
            "--test-limit", "200", "--device", "cpu", "--progress", "json", "--results-dir", str(results_dir), *extra]


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


# ---------------------------------------------------------------- a real server, the store read independently


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`resnet-study serve` in its own process on a free 127.0.0.1 port; with `token`, it requires that bearer token
    (given as RESNET_STUDY_API_TOKEN) and the client sends it. Its log goes to a file (`log()`): one line per
    request would fill a pipe that nobody reads."""

    def __init__(self, results_dir: Path, token: str | None = None):
        import tempfile

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = token
        self._log = tempfile.NamedTemporaryFile(prefix="resnet-study-serve-", suffix=".log")
        env = cli_env(RESNET_STUDY_API_TOKEN=token) if token else cli_env()
        self.proc = subprocess.Popen([*CLI, "serve", "--results-dir", str(results_dir), "--host", "127.0.0.1",
                                      "--port", str(self.port)], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=self._log, text=True)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.base, timeout=60, headers=headers)
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, f"serve exited: {self.log()}"
            try:
                if self.client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not answer /healthz in 90 s"
            time.sleep(0.2)

    def get(self, url: str, **kw) -> httpx.Response:
        return self.client.get(url, **kw)

    def log(self) -> str:
        return Path(self._log.name).read_text()

    def stop(self) -> str:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        err = self.log()
        self._log.close()
        return err


def store_fingerprint(results_dir: Path) -> dict:
    """Every file in the results dir with its size, mtime and content hash: 'the store is unchanged'."""
    out = {}
    for path in sorted(results_dir.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(results_dir))] = (st.st_size, st.st_mtime_ns,
                                                       hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def db_rows(results_dir: Path, sql: str, params=None) -> list[dict]:
    """Read the store directly with DuckDB, read-only: the test's own, independent read path."""
    con = duckdb.connect(str(results_dir / "results.duckdb"), read_only=True)
    try:
        cur = con.execute(sql, params or [])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def assert_png(body: bytes) -> None:
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(body))
    img.verify()
    assert img.size[0] >= 300 and img.size[1] >= 200


def assert_svg(body: bytes) -> None:
    root = ET.fromstring(body)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(list(root.iter())) > 50  # axes, ticks, lines: a drawn figure, not an empty canvas


# ---------------------------------------------------------------- the real CLI parser, the image's user


def parse_command(argv: list[str]):
    """Parse `resnet-study ARGS` with the real Typer/Click app (options, types, argument counts), run nothing."""
    from typer.main import get_command

    from resnet_study.jobs.cli import app

    assert argv[0] == "resnet-study", f"command must start with resnet-study: {argv}"
    cmd = get_command(app)
    ctx = cmd.make_context("resnet-study", list(argv[1:]))
    while hasattr(cmd, "resolve_command"):
        name, cmd, rest = cmd.resolve_command(ctx, [*getattr(ctx, "_protected_args", []), *ctx.args])
        ctx = cmd.make_context(name, rest, parent=ctx)
    return ctx.command_path, ctx.params


def dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert users, "the Dockerfile must switch to a numeric non-root USER (runAsNonRoot needs a numeric uid)"
    return int(users[-1])
