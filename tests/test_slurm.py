"""The Slurm engine on a real single-node Slurm (tests/slurm_cluster.py: slurmctld, slurmd and munged under a temp
dir), with real training on real Fashion-MNIST:

- render + `sbatch --wait`: a 2-cell x 2-seed study, its tasks writing to a bucket (the S3 test server), ends with
  the rows `sweep local` gives;
- `scontrol requeue` of a task mid-epoch: it checkpoints, is requeued, resumes; rows and final weights bit-identical
  to the uninterrupted run's;
- a task reaching its --time: the early signal (USR1) makes the cell checkpoint, the task requeues itself, completes;
- a mistake (exit 2: corrupt data) is not requeued, and `sweep status` says why;
- the rendered scripts (GPU and CPU, with and without a container) pass shellcheck and `sbatch --test-only`.

The render-only tests at the top need no Slurm. Costs (2-core CPU, measured): see each test's comment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnet_study.core import EXIT_CODES, EXIT_USER_ERROR
from resnet_study.core.storage import open_storage
from resnet_study.jobs import slurm
from resnet_study.jobs.kubernetes import RenderOptions
from resnet_study.jobs import sweep as sw
from tests.helpers import CLI, ROOT, cli_env, query, run_cli, run_cli_many

ROW_KEYS = "run_id, epoch, lr, train_loss, train_error, test_loss, test_error"
BIN = str(Path(sys.executable).parent)  # the venv's resnet-study: the "cluster's Python environment" here


def write_spec(tmp_path: Path, text: str) -> Path:
    name = re.search(r"name: (\S+)", text).group(1)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def slurm_env(cluster, **extra) -> dict:
    """The test's environment as sbatch exports it to the tasks: SLURM_CONF, the venv on PATH."""
    return cli_env(**cluster.env, PATH=f"{BIN}:{os.environ['PATH']}", **extra)


def render(spec, *args, env=None) -> str:
    return run_cli("sweep", "render", spec, "--engine", "slurm", *args, env=env).stdout


def epoch_rows(results) -> list[dict]:
    return query(results, f"SELECT {ROW_KEYS} FROM epochs ORDER BY run_id, epoch")


def wait_done(cluster, job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip():
        assert time.monotonic() < deadline, f"job {job_id} still running after {timeout} s"
        time.sleep(0.5)


def task(cluster, job_id: str, index: int = 0) -> slurm.TaskState:
    states = slurm.task_states(job_id, env={**os.environ, **cluster.env})
    assert not isinstance(states, str), states
    return states[index]


def wait_for_line(path: Path, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.is_file() else ""
        if re.search(pattern, text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not in {path} after {timeout} s:\n{text}")


# ---------------------------------------------------------------- render (no Slurm needed), < 2 s


def test_seed_study_renders_18_tasks_a_gpu_each_and_a_bucket_study(tmp_path):
    bucket = "s3://study-bucket/seed-study"
    seed, on_bucket, refused, k8s = run_cli_many([
        ["sweep", "render", "jobs/seed-study.yaml", "--engine", "slurm", "--results-dir", tmp_path / "r"],
        ["sweep", "render", "jobs/seed-study.yaml", "--engine", "slurm", "--results-dir", bucket, "--gpus", "0",
         "--cpu", "8", "--memory", "12Gi", "--time", "2-00:00:00", "--partition", "gpu", "--account", "lab",
         "--qos", "long", "--log-dir", tmp_path / "logs"],
        ["sweep", "render", "jobs/seed-study.yaml", "--engine", "slurm", "--queue", "team"],
        ["sweep", "render", "jobs/seed-study.yaml"]])
    assert seed.returncode == 0, seed.stderr
    sbatch = re.findall(r"^#SBATCH (\S+)", seed.stdout, re.M)
    assert "--array=0-17%6" in sbatch and "--gres=gpu:1" in sbatch and "--cpus-per-task=4" in sbatch
    assert f"--mem={sw.cell_memory(3).removesuffix('i')}" in sbatch and "--requeue" in sbatch
    assert "--open-mode=append" in sbatch and f"--signal=B:USR1@{sw.GRACE_SECONDS}" in sbatch
    assert f"--output={tmp_path / 'r' / 'sweep-logs' / 'seed-study'}/%a.log" in sbatch
    assert not any(s.startswith("--time") for s in sbatch) and "no saved plan" in seed.stdout  # said, not guessed
    assert f"export {sw.INDEX_MODE_ENV}={sw.INDEX_MODE}" in seed.stdout
    assert '--index "$SLURM_ARRAY_TASK_ID"' in seed.stdout and "scontrol requeue" in seed.stdout
    assert sw.load("jobs/seed-study.yaml").text.rstrip() in seed.stdout  # the spec travels inside the script

    assert on_bucket.returncode == 0, on_bucket.stderr
    sbatch = re.findall(r"^#SBATCH (\S+)", on_bucket.stdout, re.M)
    assert f"export RESNET_STUDY_RESULTS={bucket}" in on_bucket.stdout  # every task writes to the bucket
    assert not any(s.startswith("--gres") for s in sbatch) and "--cpus-per-task=8" in sbatch
    assert {"--mem=12G", "--time=2-00:00:00", "--partition=gpu", "--account=lab", "--qos=long"} <= set(sbatch)
    assert f"--output={tmp_path / 'logs'}/%a.log" in sbatch

    assert refused.returncode == EXIT_USER_ERROR and refused.stderr.count("\n") == 1
    assert "--queue is for --engine kubernetes" in refused.stderr
    assert k8s.returncode == 0 and "kind: Job" in k8s.stdout  # kubernetes stays the default


def test_time_comes_from_the_saved_plan_with_its_margin(tmp_path):
    spec = write_spec(tmp_path, "name: planned\nfixed: {n: 1, dataset: fashion-mnist, epochs: 1}\n"
                                "grid: {lr: [0.1, 0.05]}\n")
    results = tmp_path / "results"
    plan = {"spec": "planned", "device": "NVIDIA H200", "cells": [{"index": 0, "seconds": 3000.0},
                                                                  {"index": 1, "seconds": 7200.0}]}
    (results / "sweep-plans").mkdir(parents=True)
    (results / "sweep-plans" / "planned.json").write_text(json.dumps(plan))
    out = render(spec, "--results-dir", results)
    expected = slurm.slurm_time(7200 * slurm.TIME_FACTOR + slurm.TIME_EXTRA_S)
    assert expected == "0-03:10:00" and f"#SBATCH --time={expected}" in out
    assert "1.5 x the longest cell's planned training time (2.00 h on NVIDIA H200" in out


# ---------------------------------------------------------------- on a real Slurm


@pytest.mark.slow
def test_sbatch_wait_on_a_bucket_gives_the_rows_of_sweep_local(tmp_path, slurm_cluster, s3,
                                                               fashion_mnist_available):
    spec = write_spec(tmp_path, """name: pair
fixed: {n: 1, dataset: fashion-mnist, epochs: 2, train_limit: 256, test_limit: 100}
grid: {lr: [0.1, 0.05]}
seeds: 2
""")
    env = slurm_env(slurm_cluster)
    script = tmp_path / "pair.sbatch"
    script.write_text(render(spec, "--results-dir", s3, "--gpus", "0", "--cpu", "1", "--log-dir", tmp_path / "logs",
                             env=env))
    (tmp_path / "logs").mkdir()
    # sbatch --wait polls at 2 s, 10 s, then every 32 s: a job done within 10 s costs 10 s, so `sweep local` runs
    # after it rather than beside it (they would share the 2 cores)
    batch = subprocess.run(["sbatch", "--parsable", "--wait", str(script)], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=120)
    run_cli("sweep", "local", spec, "--device", "cpu", "--threads", "1", "--results-dir", tmp_path / "local")
    logs = "".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.log")))
    assert batch.returncode == 0, batch.stderr + logs
    job = batch.stdout.strip()
    assert [task(slurm_cluster, job, i).state for i in (0, 1)] == ["COMPLETED", "COMPLETED"]
    on_bucket = epoch_rows(s3)
    assert len(on_bucket) == 2 * 2 * 2 and on_bucket == epoch_rows(tmp_path / "local")


def requeue_spec(tmp_path: Path, name: str, epochs: int, train_limit: int) -> Path:
    return write_spec(tmp_path, f"""name: {name}
fixed: {{n: 1, dataset: fashion-mnist, epochs: {epochs}, train_limit: {train_limit}, test_limit: 100}}
extra: [{{lr: 0.1}}]
""")


def assert_same_as_uninterrupted(results: Path, reference: Path) -> None:
    assert epoch_rows(results) == epoch_rows(reference)
    run_id = epoch_rows(reference)[0]["run_id"]
    a, b = (torch.load(r / "runs" / run_id / "checkpoint.pt", weights_only=False)["model"]
            for r in (results, reference))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_scontrol_requeue_mid_epoch_resumes_bit_identical(tmp_path, slurm_cluster, fashion_mnist_available):
    spec = requeue_spec(tmp_path, "requeued", epochs=2, train_limit=2560)  # 20 steps an epoch, ~5 s
    env = slurm_env(slurm_cluster)
    results = tmp_path / "results"
    submitted = run_cli("sweep", "submit", spec, "--gpus", "0", "--cpu", "1", "--results-dir", results, env=env)
    job = re.search(r"submitted job (\d+)", submitted.stdout).group(1)
    log = results / "sweep-logs" / "requeued" / "0.log"
    wait_for_line(log, r'"epoch":1,', 60)
    time.sleep(1.0)  # into epoch 2
    slurm_cluster.run("scontrol", "requeue", f"{job}_0")
    reference = subprocess.Popen([*CLI, "sweep", "local", str(spec), "--device", "cpu", "--threads", "1",
                                  "--results-dir", str(tmp_path / "reference")], env=cli_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # during the requeue
    wait_done(slurm_cluster, job, 120)
    assert reference.wait(timeout=60) == 0, reference.stdout.read()
    text = log.read_text()
    assert re.search(r"stopped on SIGTERM: 1 run\(s\) checkpointed mid-epoch", text), text
    assert "after a stop by Slurm" in text and "allocation 2" in text  # Slurm requeued it, not the script
    assert re.search(r"resuming epoch 2 at step [1-9]", text), text
    state = task(slurm_cluster, job)
    assert (state.state, state.restarts) == ("COMPLETED", 1)
    assert_same_as_uninterrupted(results, tmp_path / "reference")
    status = json.loads(run_cli("sweep", "status", spec, "--results-dir", results, "--format", "json",
                                env=env).stdout)
    assert status[0]["state"] == "completed" and status[0]["slurm"] == "completed, requeued 1x"


@pytest.mark.slow
def test_a_task_at_its_time_limit_checkpoints_requeues_itself_and_completes(tmp_path, slurm_cluster,
                                                                            fashion_mnist_available):
    # --time 1 (the shortest Slurm has) and USR1 10 s before it: slurmctld checks every 30 s, so the signal comes
    # 20-50 s into the task; the cell trains ~55 s uninterrupted (1 300 img/s on one thread), so it is caught
    # mid-training.
    spec = requeue_spec(tmp_path, "timed", epochs=5, train_limit=14400)
    env = slurm_env(slurm_cluster)
    results = tmp_path / "results"
    submitted = run_cli("sweep", "submit", spec, "--gpus", "0", "--cpu", "1", "--time", "1", "--signal-before",
                        "10", "--results-dir", results, "--wait", env=env, timeout=400)
    log = (results / "sweep-logs" / "timed" / "0.log").read_text()
    assert "cell 0: completed" in submitted.stdout, submitted.stdout + log
    assert "stopped by the time-limit: requeueing" in log and "allocation 2" in log, log
    assert "stopped on SIGTERM: 1 run(s) checkpointed mid-epoch" in log, log
    assert re.search(r"resuming epoch \d at step", log), log
    state = task(slurm_cluster, re.search(r"submitted job (\d+)", submitted.stdout).group(1))
    assert state.state == "COMPLETED" and state.restarts >= 1
    rows = epoch_rows(results)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_a_mistake_is_not_requeued_and_status_says_why(tmp_path, slurm_cluster):
    corrupt = tmp_path / "data" / "cifar-10-batches-py"
    corrupt.mkdir(parents=True)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        (corrupt / name).write_bytes(b"not a pickle")
    spec = write_spec(tmp_path, "name: mistake\nfixed: {n: 1, dataset: cifar10, epochs: 1}\nextra: [{lr: 0.1}]\n")
    env = slurm_env(slurm_cluster)
    results = tmp_path / "results"
    proc = run_cli("sweep", "submit", spec, "--gpus", "0", "--cpu", "1", "--results-dir", results, "--data-dir",
                   tmp_path / "data", "--wait", env=env, check=False, timeout=120)
    log = (results / "sweep-logs" / "mistake" / "0.log").read_text()
    assert proc.returncode == 1 and "cell 0: failed (exit 2: a mistake to fix)" in proc.stdout, proc.stdout + log
    assert "exit 2: a mistake to fix (the error above); not requeued" in log and "allocation 2" not in log
    state = task(slurm_cluster, re.search(r"submitted job (\d+)", proc.stdout).group(1))
    assert (state.state, state.exit_code, state.restarts) == ("FAILED", EXIT_USER_ERROR, 0)
    status = run_cli("sweep", "status", spec, "--results-dir", results, "--format", "json", env=env).stdout
    shown = json.loads(status)[0]["slurm"]
    assert shown.startswith("failed (exit 2: a mistake to fix)") and "are corrupt" in shown, shown
    # without Slurm's commands, status says so and shows the store's state
    bare = run_cli("sweep", "status", spec, "--results-dir", results, env=cli_env(PATH="/usr/bin/nonexistent"))
    assert "Slurm's commands are not reachable here (no scontrol): the store's state only" in bare.stderr
    assert "cells missing 1" in bare.stdout


@pytest.mark.slow
def test_rendered_scripts_pass_shellcheck_and_sbatch_test_only(tmp_path, slurm_cluster):
    spec = ROOT / "jobs" / "seed-study.yaml"
    variants = {"gpu": [], "cpu": ["--gpus", "0"], "apptainer": ["--container", "ghcr.io/lab/resnet-study:1"],
                "pyxis": ["--container", "ghcr.io/lab/resnet-study:1", "--container-runtime", "pyxis", "--gpus", "0"],
                "bucket": ["--results-dir", "s3://study-bucket/x", "--data-dir", "s3://study-bucket/data",
                           "--setup", "source /opt/rs/bin/activate"]}
    outs = run_cli_many([["sweep", "render", spec, "--engine", "slurm", "--results-dir", tmp_path / "r",
                          "--time", "30", *extra] for extra in variants.values()])
    for (name, _), out in zip(variants.items(), outs):
        assert out.returncode == 0, out.stderr
        path = tmp_path / f"{name}.sbatch"
        path.write_text(out.stdout)
        check = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, f"{name}: {check.stdout}"
        test_only = slurm_cluster.run("sbatch", "--test-only", str(path), check=False)
        assert test_only.returncode == 0 and "to start at" in test_only.stderr, f"{name}: {test_only.stderr}"
    assert "apptainer exec --nv" in outs[2].stdout and "docker://ghcr.io/lab/resnet-study:1" in outs[2].stdout
    assert "srun --ntasks=1 --container-image=ghcr.io/lab/resnet-study:1" in outs[3].stdout


def test_the_script_has_an_arm_for_every_exit_code_of_core():
    """The case statement is generated from EXIT_CODES: every code lands in the arm of its batch action."""
    script = slurm.render(sw.load("jobs/demo.yaml"), RenderOptions(gpus=0), slurm.SlurmOptions(),
                          open_storage("/tmp/results"))
    arms = re.findall(r"^  ([\d|]+)\)  # (\w+)", script, re.M)
    by_code = {int(c): action for codes, action in arms for c in codes.split("|")}
    assert {e.code: e.batch for e in EXIT_CODES} == {c: a for c, a in by_code.items() if c not in (126, 127)}


def test_the_requeue_table_in_docs_hpc_is_the_policy():
    """docs/hpc.md's exit-code table is what the rendered script does with each code of core's EXIT_CODES."""
    text = (ROOT / "docs" / "hpc.md").read_text().split("## Exit codes and requeues", 1)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if re.match(r"\| \d+ \|", line)]
    assert [(int(code), action) for code, action, _ in rows] == [(e.code, e.batch) for e in EXIT_CODES]
    assert {int(code): does for code, _, does in rows} == slurm.requeue_policy()
