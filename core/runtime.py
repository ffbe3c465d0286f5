"""Where a run runs and what produced it: the CPUs it may use, and its provenance (code, data, software, machine).

CPU threads. A process that takes one thread per visible core oversubscribes a machine it shares: three runs on
2 cores each ran 6 threads, and their OpenMP workers spun while they waited for each other (together they took far
longer than one after another: docs/benchmarks.md, "Runs sharing CPU cores"). So the default intra-op threads are the CPUs this process may use: the
smallest of its affinity mask, its cgroup v2 `cpu.max` quota (a container's `--cpus`) and, on Kubernetes, the
container's CPU request (RESNET_STUDY_CPU_REQUEST, set by the rendered Job through the downward API). `--threads N`
or OMP_NUM_THREADS override it; processes that share the budget (`sweep local`, `bench processes`) each get their part
of it from `thread_budget()`. `passive_waits()` makes idle OpenMP workers sleep instead of spin, so runs that
share cores anyway (two users, `docker run` twice) degrade gracefully: docs/benchmarks.md has the figures.

Provenance. Every run records the package version, the code (git commit and whether the tree had local changes,
or the commit baked into the image, and always a hash of the package's source), the Python, torch, CUDA and cuDNN
versions, the GPU and its driver or the CPU model, the host (the pod name on Kubernetes), the command line and a
fingerprint of the data files it read. The source hash and the data fingerprint are also written on every epoch
row, so a run resumed on other code or data says so.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from . import settings
from .storage import atomic_write

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # holds core/, jobs/, results_api/ (checkout or site-packages)
SUBPACKAGES = ("core", "jobs", "results_api")
SOURCE_SUFFIXES = (".py", ".yaml", ".csv", ".html")
CPU_REQUEST_ENV = settings.CPU_REQUEST.name  # whole CPUs; the rendered Job fills it from requests.cpu
FINGERPRINT_CACHE = ".resnet-study-fingerprints.json"
SYSTEM_DATA_DIRS = (Path("/usr/share"),)  # package-managed: fingerprints are cached in the user's cache instead


# ---------------------------------------------------------------- CPUs


def passive_waits() -> None:
    """Idle OpenMP workers sleep rather than spin (unless the user chose otherwise). Must run before torch is
    imported: libgomp reads it once, when it loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cgroup_cpu_limit(proc_cgroup: Path = Path("/proc/self/cgroup"),
                     root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by cgroup v2 `cpu.max` on this process's cgroup or any parent, or None when unlimited."""
    try:
        line = next(l for l in proc_cgroup.read_text().splitlines() if l.startswith("0::"))
    except (OSError, StopIteration):
        return None
    folder = root / line[3:].lstrip("/")
    limits = []
    for d in (folder, *folder.parents):
        if not d.is_relative_to(root):
            break
        try:
            quota, period = (d / "cpu.max").read_text().split()
        except (OSError, ValueError):
            continue
        if quota != "max":
            limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def cpu_budget(proc_cgroup: Path = Path("/proc/self/cgroup"), cgroup_root: Path = Path("/sys/fs/cgroup"),
               ) -> tuple[int, str]:
    """(CPUs, why): the CPUs this process may use, from its affinity mask, cgroup quota and CPU request."""
    found = {"cores": os.cpu_count() or 1}
    try:
        found["affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    quota = cgroup_cpu_limit(proc_cgroup, cgroup_root)
    if quota is not None:
        found["cgroup cpu.max"] = max(1, math.ceil(quota))
    request = os.environ.get(CPU_REQUEST_ENV, "").strip()
    if request:
        try:
            found["cpu request"] = max(1, math.ceil(float(request)))
        except ValueError:
            pass
    source = min(found, key=lambda k: (found[k], k != "cpu request"))
    return found[source], source


def thread_budget(processes: int = 1, **where) -> int:
    """Intra-op threads for each of `processes` processes that share this process's CPUs (cpu_budget): what
    `sweep local`, `sweep plan` and `bench processes` give the processes they start. The one place it is computed."""
    return max(1, cpu_budget(**where)[0] // max(1, processes))


def default_threads() -> tuple[int, str]:
    """The intra-op threads a run takes when --threads is not given: OMP_NUM_THREADS if set, else cpu_budget()."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    return cpu_budget()


# ---------------------------------------------------------------- code


@lru_cache(maxsize=1)
def source_hash() -> str:
    """SHA-256 (16 hex digits) of the package's source files, wherever it is installed: changes iff the code does."""
    h = hashlib.sha256()
    for pkg in SUBPACKAGES:
        folder = PACKAGE_ROOT / pkg
        for path in sorted(p for p in folder.rglob("*") if p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts):
            h.update(f"{path.relative_to(PACKAGE_ROOT)}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout the package runs from; else the image's commit (RESNET_STUDY_COMMIT), dirty
    unknown; else (None, None)."""
    if (PACKAGE_ROOT / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
            status = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "status", "--porcelain", "--untracked-files=no",
                                     "--", *SUBPACKAGES], capture_output=True, text=True, timeout=10)
            if commit and status.returncode == 0:
                return commit, bool(status.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    return settings.COMMIT.get(), None


def package_version() -> str | None:
    try:
        return metadata.version("resnet-study")
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------- data


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache_for(folder: Path) -> Path:
    folder = folder.resolve()
    if os.access(folder, os.W_OK) and not any(folder.is_relative_to(s) for s in SYSTEM_DATA_DIRS):
        return folder / FINGERPRINT_CACHE  # beside the files
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnet-study"
    return base / f"fingerprints-{hashlib.sha256(str(folder).encode()).hexdigest()[:12]}.json"


def file_digest(path: Path) -> str:
    """The file's SHA-256, read from a cache keyed by (size, mtime) when it has not changed since."""
    path = Path(path).resolve()
    cache = _cache_for(path.parent)
    st = path.stat()
    key = f"{st.st_size}:{st.st_mtime_ns}"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(path.name)
    if entry and entry.get("key") == key:
        return entry["sha256"]
    digest = _file_sha256(path)
    known[path.name] = {"key": key, "sha256": digest}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, json.dumps(known, indent=1).encode())
    except OSError:
        pass  # an unwritable cache costs a re-hash next time, nothing else
    return digest


def data_fingerprint(files: list[Path]) -> str:
    """One digest (16 hex) over the names and contents of the data files a run read."""
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        h.update(f"{path.name}\0{file_digest(path)}\0".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# CPU flags of hardware bf16 arithmetic (Linux /proc/cpuinfo names): Intel AMX, AVX512-BF16 (AMD Zen 4 and later,
# Intel Cooper Lake / Sapphire Rapids), Arm's BF16 extension. Without one, oneDNN emulates bf16 and it costs ~10x fp32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (x86 `flags`, Arm `Features`), read once; empty where /proc/cpuinfo is not there."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_bf16_flag(flags: frozenset[str] | set[str] | None = None) -> str | None:
    """The first of BF16_CPU_FLAGS this CPU has (`flags`: this machine's when None), or None: bf16 is emulated."""
    present = cpu_flags() if flags is None else flags
    return next((f for f in BF16_CPU_FLAGS if f in present), None)


def gpu_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def hostname() -> str:
    """The pod name on Kubernetes (its HOSTNAME), else the host's name."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def command_line() -> str:
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else ""


def provenance(torch_module, device, data_fingerprint: str) -> dict:
    """The RunRecord fields that say what produced a run (torch passed in: this module stays torch-free)."""
    commit, dirty = git_state()
    cuda = device.type == "cuda"
    return {
        "package_version": package_version(), "code_commit": commit, "code_dirty": dirty,
        "source_hash": source_hash(), "python_version": platform.python_version(),
        "torch_version": torch_module.__version__, "cuda_version": torch_module.version.cuda,
        "cudnn_version": str(torch_module.backends.cudnn.version()) if torch_module.backends.cudnn.is_available()
        else None,
        "gpu_name": torch_module.cuda.get_device_name(device) if cuda else None,
        "gpu_driver": gpu_driver() if cuda else None, "cpu_model": cpu_model(), "hostname": hostname(),
        "command": command_line(), "data_fingerprint": data_fingerprint,
    }
