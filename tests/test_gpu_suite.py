"""tests/gpu kept in step with the code without a GPU (these run in CI, on the CPU):

- every SQL query of tests/gpu (each a module-level constant there; an inline one fails here) runs against a store of
  today's schema, so a query of a column that is gone fails here rather than first on a lent GPU machine;
- a lent GPU machine (its image, plus exactly the wheels of bench/gpu-wheels.txt) collects tests/gpu, conftest
  included, and runs the commands those tests run: here the project's dependencies that the machine lacks and that
  are not carried are made unimportable, and every carried wheel must be imported by something (none is extra).
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

import pytest

from tests.helpers import CLI, ROOT, cli_env, run_cli_many

GPU_TESTS = ROOT / "tests" / "gpu"
SQL = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)
# The distributions of the lent H200's image that this project uses (its package list of 2026-11-17, in the device
# notes); everything else the project needs there is carried (bench/gpu-wheels.txt).
ON_THE_GPU_MACHINE = {"torch", "torchvision", "typer", "rich", "pyyaml", "numpy", "scipy", "httpx", "jinja2",
                      "matplotlib", "pillow", "pytest", "statsmodels", "typing-extensions"}
# Imported by our code only through a blocked distribution, but importable on their own: blocked with it.
ALSO_BLOCKED = {"boto3": ["botocore"], "fastapi": ["starlette"]}

HOOK = '''
import atexit, os, sys
from importlib.abc import MetaPathFinder

_LACKS = frozenset(filter(None, os.environ["GPU_MACHINE_LACKS"].split(",")))


class _NotOnTheGpuMachine(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _LACKS:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the lent GPU machine)", name=name)
        return None


sys.meta_path.insert(0, _NotOnTheGpuMachine())


def _log():
    with open(os.path.join(os.environ["GPU_IMPORT_LOG"], f"{os.getpid()}.txt"), "w") as f:
        f.write("\\n".join(sorted({m.partition(".")[0] for m in list(sys.modules)})))


atexit.register(_log)
'''


def dist(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def carried() -> dict[str, str]:
    """bench/gpu-wheels.txt: distribution -> version."""
    lines = [ln.strip() for ln in (ROOT / "bench" / "gpu-wheels.txt").read_text().splitlines()]
    return {dist(ln): ln.split("==")[1] for ln in lines if ln and not ln.startswith("#")}


def import_names(distribution: str) -> list[str]:
    return sorted({m for m, dists in importlib.metadata.packages_distributions().items()
                   if distribution in {d.lower().replace("_", "-") for d in dists} and not m.startswith("_")})


def gpu_queries() -> dict[str, str]:
    """Every SQL text of tests/gpu/*.py, by `file:CONSTANT`; an SQL text anywhere but a module-level constant fails."""
    found = {}
    for path in sorted(GPU_TESTS.glob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                    isinstance(node.value.value, str) and SQL.match(node.value.value):
                constants[id(node.value)] = (f"{path.name}:{node.targets[0].id}", node.value.value)
        inline = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                  and SQL.match(n.value) and id(n) not in constants]
        assert not inline, f"{path.name}, lines {inline}: make each query a module-level constant (checked here)"
        found.update(constants.values())
    return found


def test_every_query_of_tests_gpu_runs_against_a_store_of_todays_schema(tmp_path):
    """Cost: about 1 s (one process runs them all). A query of the `device` column, which the runs table no longer
    has, is refused the same way: the check can fail."""
    queries = gpu_queries()
    assert len(queries) >= 4, queries
    store = tmp_path / "results"  # an empty store: the schema this checkout writes, no runs
    store.mkdir()
    gone = "SELECT test_error, precision, device FROM runs"
    procs = run_cli_many([["results", "query", sql, "--format", "json", "--results-dir", store]
                          for sql in [*queries.values(), gone]])
    for name, proc in zip(queries, procs):
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
    assert procs[-1].returncode == 2 and 'column "device" not found' in procs[-1].stderr


@pytest.mark.slow  # real training processes
def test_a_gpu_machine_with_the_carried_wheels_collects_tests_gpu_and_runs_its_commands(tmp_path,
                                                                                         fashion_mnist_available):
    """Cost: about 20 s on 2 cores (pytest's collection, a 2-seed cell in a process per run, a query, a status). Not
    on the machine and not carried (e.g. boto3, moto, fastapi): unimportable here, and nothing tests/gpu needs
    imports it; every carried wheel is imported by something; the carried versions are this venv's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {dist(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    wheels = carried()
    for name, version in wheels.items():
        assert importlib.metadata.version(name) == version, f"bench/gpu-wheels.txt: {name}=={version}, venv has " \
                                                            f"{importlib.metadata.version(name)}"
    lacking = sorted(needed - ON_THE_GPU_MACHINE - set(wheels))
    blocked = sorted({m for d in lacking for m in import_names(d) + ALSO_BLOCKED.get(d, [])})
    assert {"boto3", "moto", "fastapi"} <= set(blocked), blocked
    hook, log = tmp_path / "hook", tmp_path / "imports"
    hook.mkdir()
    log.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    env = cli_env(PYTHONPATH=str(hook), GPU_MACHINE_LACKS=",".join(blocked), GPU_IMPORT_LOG=str(log),
                  PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # the machine has pytest, not this venv's plugins

    def run(*argv) -> subprocess.CompletedProcess:
        return subprocess.run([*map(str, argv)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)

    probe = run(sys.executable, "-c", "import boto3")
    assert probe.returncode == 1 and "not on the lent GPU machine" in probe.stderr  # the blocking works
    collected = run(sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/gpu")
    assert collected.returncode == 0 and re.search(r"\b\d+ tests? collected", collected.stdout), \
        collected.stdout + collected.stderr
    results = tmp_path / "results"
    trained = run(*CLI, "train", "--n", "1", "--dataset", "fashion-mnist", "--epochs", "1", "--train-limit", "256",
                  "--test-limit", "200", "--device", "cpu", "--progress", "json", "--seeds", "0,1",
                  "--cell-layout", "process-per-run", "--results-dir", results)
    assert trained.returncode == 0, trained.stderr
    for argv in (["results", "query", "SELECT count(*) AS n FROM runs", "--results-dir", results],
                 ["sweep", "status", "bench/gpu-study.yaml", "--results-dir", results]):
        proc = run(*CLI, *argv)
        assert proc.returncode == 0, proc.stderr
    imported = {m for f in log.iterdir() for m in f.read_text().split()}
    assert not imported & set(blocked)
    unused = {d for d in wheels if not set(import_names(d)) & imported}
    assert not unused, f"bench/gpu-wheels.txt carries {sorted(unused)}, which nothing imported: drop them"
    assert len(list(log.iterdir())) >= 6  # pytest, train and its 2 children, query, status: the hook ran in each
