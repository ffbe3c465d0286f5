"""One trainer per run: a lease file in the run's folder, held while the run trains.

    runs/<run_id>/lease.json   {"token", "host", "pid", "started", "heartbeat"}

Two identical `train` commands, or a retried Kubernetes pod that starts while its predecessor still terminates,
would otherwise both train the same run and write the same checkpoint and shard. The lease is taken by creating the
file with O_CREAT | O_EXCL (atomic on local disks and on NFS v3+; no flock, which NFS does not honour). Its holder
rewrites the heartbeat every HEARTBEAT_S seconds. Another process that finds it taken logs once who holds it and
waits (or, with `--if-running exit`, stops), then resumes the run or finds it completed. A lease is taken over
when its holder is known dead (same host, pid gone) or its heartbeat is older than STALE_S (another host: a lost
node, a killed pod). The takeover renames the stale file away (one rename wins) before creating a new one; a holder
whose token is no longer in the file knows it lost the lease and stops before writing anything more.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import EXIT_BUSY, StudyError

LEASE_NAME = "lease.json"
HEARTBEAT_S = 10.0
STALE_S = 90.0
POLL_S = 0.5


def pid_alive(pid: int) -> bool:
    """Whether the process runs; a zombie (dead, not yet reaped, e.g. under an init that does not reap) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class Holder:
    token: str
    host: str
    pid: int
    started: float
    heartbeat: float

    def alive(self, stale_s: float = STALE_S) -> bool:
        """Dead when it ran on this host and its pid is gone; else alive while its heartbeat is fresh."""
        if self.host == socket.gethostname() and not pid_alive(self.pid):
            return False
        return time.time() - self.heartbeat < stale_s

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.started))
        return f"host {self.host} pid {self.pid} since {since} UTC (heartbeat {time.time() - self.heartbeat:.0f} s ago)"


def read_holder(folder: Path) -> Holder | None:
    return _read_holder_at(Path(folder) / LEASE_NAME)


def _read_holder_at(path: Path) -> Holder | None:
    try:
        info = json.loads(Path(path).read_text())
        return Holder(info["token"], info["host"], int(info["pid"]), float(info["started"]), float(info["heartbeat"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, or being written: the caller looks again


class RunBusy(StudyError):
    """Another live process holds the run's lease (and the caller asked not to wait): exit code 3."""

    exit_code = EXIT_BUSY


class Lease:
    """`with Lease(folder, run_id, log=...).acquire(wait=True):` trains; `lost` turns True if it is taken over."""

    def __init__(self, folder: Path, run_id: str, log=print, heartbeat_s: float = HEARTBEAT_S,
                 stale_s: float = STALE_S):
        self.folder, self.run_id, self.log = Path(folder), run_id, log
        self.path = self.folder / LEASE_NAME
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _info(self) -> bytes:
        return json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "started": self.started, "heartbeat": time.time()}).encode()

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, self._info())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _take_over(self, stale: Holder) -> None:
        tomb = self.folder / f".{LEASE_NAME}.stale-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path, tomb)
        except FileNotFoundError:
            return  # someone else moved it first
        moved = _read_holder_at(tomb)
        if moved is not None and moved.token != stale.token:
            try:  # we moved a fresh lease that replaced the stale one meanwhile: put it back
                os.link(tomb, self.path)
            except FileExistsError:
                pass  # a third process holds it now; the one we displaced will see it lost the lease
        tomb.unlink(missing_ok=True)

    def holder(self) -> Holder | None:
        """Who holds the lease now (None: nobody, or it is being rewritten)."""
        return read_holder(self.folder)

    def try_acquire(self) -> bool:
        """Take the lease if it is free or its holder is gone; False at once if a live process holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        while not self._try_create():
            holder = read_holder(self.folder)
            if holder is None:
                time.sleep(POLL_S / 5)
                continue
            if holder.alive(self.stale_s):
                return False
            self.log(f"{self.run_id}: taking over the lease of {holder.describe()}: its holder is gone")
            self._take_over(holder)
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.run_id}", daemon=True)
        self._thread.start()
        return True

    def acquire(self, wait: bool = True) -> "Lease":
        told = False
        while not self.try_acquire():
            holder = read_holder(self.folder)
            if holder is None:
                continue
            if not wait:
                raise RunBusy(f"{self.run_id} is being trained by {holder.describe()}; not waiting (--if-running "
                              f"exit); run the same command later, or with --if-running wait")
            if not told:
                self.log(f"{self.run_id}: being trained by {holder.describe()}; waiting for it to finish or stop")
                told = True
            time.sleep(POLL_S)
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            holder = read_holder(self.folder)
            if holder is not None and holder.token != self.token:
                self.lost = True
                self.log(f"{self.run_id}: lost the lease to {holder.describe()}; stopping")
                return
            try:
                tmp = self.folder / f".{LEASE_NAME}.{self.token[:8]}"
                tmp.write_bytes(self._info())
                os.replace(tmp, self.path)
            except OSError:
                pass  # a flaky disk must not kill the run; others see an ageing heartbeat

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        holder = read_holder(self.folder)
        if holder is not None and holder.token == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

