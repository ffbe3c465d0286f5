"""Jobs on a shared machine, in-process: the CPUs a run may use, one trainer per run (the lease), the data
fingerprint and its cache, the source hash. The fast tier; tests/test_jobs.py runs the same as real processes."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest

import torch

from resnet_study.core import runtime
from resnet_study.core.train import resolve_precision
from resnet_study.core.lease import LEASE_NAME, Lease, RunBusy, read_holder


# ---------------------------------------------------------------- CPUs


def test_cpu_budget_is_the_smallest_of_affinity_quota_and_request(monkeypatch):
    monkeypatch.delenv(runtime.CPU_REQUEST_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    threads, why = runtime.cpu_budget()
    assert threads == min(cores, os.cpu_count()) and why in ("affinity", "cores", "cgroup cpu.max")
    monkeypatch.setenv(runtime.CPU_REQUEST_ENV, "0.25")  # a Kubernetes request of 250m: at least one thread
    assert runtime.cpu_budget() == (1, "cpu request")
    monkeypatch.setenv(runtime.CPU_REQUEST_ENV, "64")  # asking for more than the machine has gives the machine
    assert runtime.cpu_budget()[0] == threads
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.default_threads() == (3, "OMP_NUM_THREADS")


def test_affinity_limits_the_threads_of_a_process():
    code = "from resnet_study.core import runtime; print(runtime.cpu_budget())"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", runtime.CPU_REQUEST_ENV)}
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "(1, 'affinity')", out.stderr


def test_the_thread_budget_of_processes_sharing_a_4_cpu_cgroup_on_a_64_core_node(tmp_path, monkeypatch):
    """A container limited to 4 CPUs (cgroup v2 cpu.max) on a 64-core node, simulated: `sweep local --parallel 2`
    gives each cell 2 threads, not 64 / 2; a CPU request or affinity mask below the quota wins; --threads wins."""
    from resnet_study.core.config import RunOptions
    from resnet_study.jobs.sweep_cli import threads_per_cell

    root, proc = tmp_path / "cgroup", tmp_path / "proc-self-cgroup"
    (root / "kubepods" / "pod1").mkdir(parents=True)
    (root / "kubepods" / "pod1" / "cpu.max").write_text("400000 100000\n")  # 4 CPUs
    proc.write_text("0::/kubepods/pod1\n")
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.delenv(runtime.CPU_REQUEST_ENV, raising=False)
    assert runtime.cpu_budget(proc, root) == (4, "cgroup cpu.max")
    assert runtime.thread_budget(2, proc_cgroup=proc, cgroup_root=root) == 2
    assert runtime.thread_budget(8, proc_cgroup=proc, cgroup_root=root) == 1  # never 0
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda *a, **k: 4.0)  # what sweep local's process would read
    assert threads_per_cell(RunOptions(), parallel=2, cells=5) == 2
    assert threads_per_cell(RunOptions(), parallel=2, cells=1) == 4  # one cell to run: all of it
    assert threads_per_cell(RunOptions(threads=3), parallel=2, cells=5) == 3
    monkeypatch.setenv(runtime.CPU_REQUEST_ENV, "2")
    assert threads_per_cell(RunOptions(), parallel=2, cells=5) == 1
    monkeypatch.delenv(runtime.CPU_REQUEST_ENV)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert threads_per_cell(RunOptions(), parallel=2, cells=5) == 1


def test_a_cgroup_quota_is_read_from_cpu_max(tmp_path):
    """cgroup v2: '<quota> <period>' in cpu.max of the process's cgroup or a parent; the tightest one counts."""
    root = tmp_path / "cgroup"
    (root / "pod" / "ctr").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "pod" / "cpu.max").write_text("150000 100000\n")
    (root / "pod" / "ctr" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/pod/ctr\n")
    assert runtime.cgroup_cpu_limit(proc, root) == 1.5
    (root / "pod" / "cpu.max").write_text("max 100000\n")
    assert runtime.cgroup_cpu_limit(proc, root) is None


# ---------------------------------------------------------------- the lease


def write_lease(folder, host, pid, heartbeat_age):
    """A lease file as another holder leaves it; its heartbeat is the file's modification time (core.storage)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    path = folder / LEASE_NAME
    path.write_text(json.dumps({"token": "t0", "host": host, "pid": pid, "started": now - 100, "beat": 3}))
    os.utime(path, (now - heartbeat_age, now - heartbeat_age))


def test_one_holder_at_a_time_and_release(tmp_path):
    first = Lease(tmp_path, "r", log=lambda m: None).acquire()
    holder = read_holder(tmp_path)
    assert holder.pid == os.getpid() and holder.token == first.token
    with pytest.raises(RunBusy, match=r"r is being trained by host .* pid \d+ .*--if-running"):
        Lease(tmp_path, "r", log=lambda m: None).acquire(wait=False)
    first.release()
    assert not (tmp_path / LEASE_NAME).exists()
    Lease(tmp_path, "r", log=lambda m: None).acquire(wait=False).release()


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_lease(tmp_path, socket.gethostname(), dead.pid, heartbeat_age=1)
    said = []
    lease = Lease(tmp_path, "r", log=said.append).acquire(wait=False)
    assert read_holder(tmp_path).token == lease.token
    assert "taking over the lease" in said[0] and "its holder is gone" in said[0]
    lease.release()


def test_another_hosts_lease_is_taken_over_only_when_its_heartbeat_is_stale(tmp_path):
    write_lease(tmp_path, "node-7", 4242, heartbeat_age=5)
    with pytest.raises(RunBusy, match="host node-7 pid 4242"):
        Lease(tmp_path, "r", log=lambda m: None).acquire(wait=False)
    write_lease(tmp_path, "node-7", 4242, heartbeat_age=600)
    lease = Lease(tmp_path, "r", log=lambda m: None).acquire(wait=False)
    assert read_holder(tmp_path).host == socket.gethostname()
    lease.release()


def test_a_waiter_says_once_who_holds_it_and_gets_it_when_released(tmp_path):
    import threading

    holder = Lease(tmp_path, "r", log=lambda m: None).acquire()
    said, got = [], []
    waiter = threading.Thread(target=lambda: got.append(Lease(tmp_path, "r", log=said.append).acquire()))
    waiter.start()
    time.sleep(1.5)
    assert not got and len(said) == 1 and "waiting for it to finish or stop" in said[0]
    holder.release()
    waiter.join(timeout=10)
    assert got and read_holder(tmp_path).token == got[0].token
    got[0].release()


def test_a_holder_knows_when_it_lost_the_lease(tmp_path):
    lease = Lease(tmp_path, "r", log=lambda m: None, heartbeat_s=0.1).acquire()
    write_lease(tmp_path, "node-9", 1, heartbeat_age=0)  # taken over by someone who presumed it dead
    deadline = time.time() + 5
    while not lease.lost and time.time() < deadline:
        time.sleep(0.05)
    assert lease.lost
    lease.release()
    assert read_holder(tmp_path).host == "node-9"  # its release leaves the new holder's lease alone


# ---------------------------------------------------------------- provenance


def test_data_fingerprint_is_cached_beside_the_files_and_follows_their_content(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"one" * 1000)
    b.write_bytes(b"two" * 1000)
    first = runtime.data_fingerprint([a, b])
    cache = tmp_path / runtime.FINGERPRINT_CACHE
    assert json.loads(cache.read_text())["a.bin"]["sha256"] == hashlib.sha256(b"one" * 1000).hexdigest()
    assert runtime.data_fingerprint([b, a]) == first  # order-free
    b.write_bytes(b"two" * 999 + b"TWO")
    assert runtime.data_fingerprint([a, b]) != first


def test_source_hash_covers_the_three_packages():
    files = [p for pkg in runtime.SUBPACKAGES for p in (runtime.PACKAGE_ROOT / pkg).rglob("*.py")]
    assert len(files) > 25 and len(runtime.source_hash()) == 16


def test_auto_precision_follows_the_cpus_bf16_flags():
    """`--precision auto` on a CPU: bf16 where a flag says the CPU multiplies bf16 in hardware (AMX, AVX512-BF16 on
    AMD Zen 4, Arm BF16), fp32 where bf16 would be emulated (AVX2 only); the reason names what decided it."""
    cpu = torch.device("cpu")
    zen4 = frozenset({"sse4_2", "avx2", "avx512f", "avx512_bf16"})
    sapphire = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})
    epyc_avx2 = frozenset({"sse4_2", "avx2", "fma"})
    assert resolve_precision("auto", cpu, zen4) == ("bf16", "auto: CPU flag avx512_bf16")
    assert resolve_precision("auto", cpu, sapphire) == ("bf16", "auto: CPU flag amx_bf16")
    fp32 = resolve_precision("auto", cpu, epyc_avx2)
    assert fp32.precision == "fp32" and fp32.reason.startswith("auto: no bf16 CPU flag")
    assert resolve_precision("fp32", cpu, zen4) == ("fp32", "--precision fp32")  # given: the flags do not matter
    assert resolve_precision("bf16", cpu, epyc_avx2) == ("bf16", "--precision bf16")
    # this machine's flags, read once from /proc/cpuinfo
    here = runtime.cpu_flags()
    assert resolve_precision("auto", cpu).precision == ("bf16" if runtime.cpu_bf16_flag(here) else "fp32")
