"""A real single-node Slurm for the tests: Debian's slurm-wlm and munge (installed by `make system-deps-test`), with
munged, slurmctld and slurmd running as root under one temp dir, stopped and removed afterwards with no process left.

Short credential lifetime (cred_expire=10) and KillWait make a requeued task start again in about 18 s instead of
two minutes (../shared/notes/slurm.md). proctrack/pgid: linuxproc leaked children, cgroup cannot launch tasks in a
container without the freezer controller. Where it cannot start (not root, packages missing) the tests skip, saying
why.
"""

from __future__ import annotations

import os
import shutil
import socket as socket_module
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
KILL_WAIT_S = 5
CRED_EXPIRE_S = 10
PARTITION = "debug"
# What the node claims (SlurmdParameters=config_overrides): the renders' default 4 CPUs a task fit; the tests' own
# tasks ask for 1 CPU each, as the machine has 2.
CPUS = 8
GPU_FILES = ("/dev/null", "/dev/zero")  # stand-ins for /dev/nvidiaN: slurmd only stats them
GPUS = len(GPU_FILES)


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    jobcomp: Path
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)  # in the foreground: ours to stop and reap

    @property
    def env(self) -> dict[str, str]:
        """What every Slurm client command needs: SLURM_CONF."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env})
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
        return proc

    def completed(self) -> list[dict[str, str]]:
        """jobcomp/filetxt: one dict per finished task (JobId, ArrayJobId, ArrayTaskId, JobState, ExitCode, ...)."""
        if not self.jobcomp.is_file():
            return []
        out = []
        for line in self.jobcomp.read_text().splitlines():
            out.append(dict(kv.split("=", 1) for kv in line.split() if "=" in kv))
        return out

    def idle(self) -> bool:
        return not self.run("squeue", "-h", "-o", "%i").stdout.strip()

    def cancel_all(self) -> None:
        self.run("scancel", "--user=root", check=False)


def unavailable() -> str | None:
    """Why a Slurm cannot start here, or None."""
    if os.geteuid() != 0:
        return "a single-node Slurm runs its daemons as root; these tests need root (CI runs them as root)"
    missing = [t for t in (*DAEMONS, "mungekey", "sbatch", "squeue", "scontrol") if not shutil.which(t)]
    if missing:
        return f"{', '.join(missing)} not installed: run `make system-deps-test` (apt-get install slurm-wlm munge)"
    return None


def _mem_mb() -> int:
    with open("/proc/meminfo") as f:
        kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return kb // 1024 * 3 // 4


def _free_port() -> int:
    with socket_module.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(what: str, cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Slurm test cluster: {what} did not happen in {timeout} s")
        time.sleep(0.1)


def start(cluster: SlurmCluster) -> None:
    root = cluster.root
    root.chmod(0o711)  # munged insists every folder above its socket is o+x
    for d in ("munge", "state", "spool", "log", "run"):
        (root / d).mkdir(mode=0o711)
    munge = root / "munge"
    key, socket = munge / "munge.key", munge / "socket"
    subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
    key.chmod(0o400)
    pid_files = {"munged": root / "run" / "munged.pid", "slurmctld": root / "run" / "slurmctld.pid",
                 "slurmd": root / "run" / "slurmd.pid"}
    procs = cluster.daemons
    procs["munged"] = _daemon(["munged", "--foreground", f"--key-file={key}", f"--socket={socket}",
                                f"--pid-file={pid_files['munged']}", f"--log-file={root / 'log' / 'munged.log'}",
                                f"--seed-file={munge / 'seed'}"], root, os.environ)
    _wait_for("munged's socket", socket.exists, 10)
    conf, jobcomp = cluster.conf, cluster.jobcomp
    conf.write_text(f"""\
ClusterName=resnet-study-test
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket},cred_expire={CRED_EXPIRE_S}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={pid_files['slurmctld']}
SlurmdPidFile={pid_files['slurmd']}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
JobCompType=jobcomp/filetxt
JobCompLoc={jobcomp}
MailProg=/bin/true
KillWait={KILL_WAIT_S}
MinJobAge=300
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=localhost CPUs={CPUS} RealMemory={_mem_mb()} Gres=gpu:{GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
    # GPUs without devices: enough for sbatch --test-only of a GPU render (nothing here runs on them)
    (root / "gres.conf").write_text("".join(f"NodeName=localhost Name=gpu File={f}\n" for f in GPU_FILES))
    env = {**os.environ, **cluster.env}
    procs["slurmctld"] = _daemon(["slurmctld", "-D", "-i", "-f", str(conf)], root, env)
    procs["slurmd"] = _daemon(["slurmd", "-D", "-N", "localhost", "-f", str(conf)], root, env)
    _wait_for("the node going idle", lambda: cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
              in ("idle", "mixed", "allocated"), 30)


def _daemon(argv: list[str], root: Path, env) -> subprocess.Popen:
    log = open(root / "log" / f"{argv[0]}.out", "ab")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    finally:
        log.close()


def stop(cluster: SlurmCluster) -> None:
    """Cancel every job, stop the daemons (SIGTERM, then SIGKILL), reap them."""
    if "slurmctld" in cluster.daemons:
        try:
            cluster.cancel_all()
            _wait_for("the jobs ending", cluster.idle, 30)
        except Exception:  # noqa: BLE001 - the daemons go regardless
            pass
    for name in ("slurmd", "slurmctld", "munged"):
        proc = cluster.daemons.get(name)
        if proc is None:
            continue
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node Slurm (SlurmCluster) for the session; skips, saying why, where it cannot start."""
    why = unavailable()
    if why:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="resnet-study-slurm-"))
    cluster = SlurmCluster(root, root / "slurm.conf", root / "log" / "jobcomp.txt")
    try:
        start(cluster)
        yield cluster
    finally:
        stop(cluster)
        shutil.rmtree(root, ignore_errors=True)
