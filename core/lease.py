"""One holder at a time: a lease object, held while a run trains (or while a process syncs the store).

    runs/<run_id>/lease.json   {"token", "host", "pid", "started", "beat"}     (the sync's: .sync.lock)

Two identical `train` commands, or a retried Kubernetes pod that starts while its predecessor still terminates,
would otherwise both train the same run and write the same checkpoint and shard. The lease lives in core.storage, on a
disk or in a bucket, and uses only its atomic operations:

- take: `create` (exclusive: link() of a complete file on a disk, PUT If-None-Match: * on S3); one racer wins.
- heartbeat: every HEARTBEAT_S its holder `renew`s it against the version it last wrote (on a disk: the mtime of
  that very inode; on S3: PUT If-Match: <etag>). A renew that finds another version means the lease was taken over:
  the holder sets `lost` and stops before writing anything more.
- take over: a lease is stale when its holder is known dead (same host, pid gone) or its heartbeat (the storage's
  modification time of the lease) is older than STALE_S: a lost node, a killed pod. The taker `swap`s it against the
  stale version it read; of several takers, and against a holder that renews meanwhile, exactly one wins.
- release: `delete` against the holder's own version, so a holder that lost the lease never removes the new one.

This is the only staleness rule in the project: the store's sync uses the same Lease (one syncer at a time).
The heartbeat's age compares the storage's clock (file server, S3) with this machine's: clocks more than a few
seconds apart shorten or lengthen STALE_S by that much.
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
from .storage import Storage, Version, open_storage

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
        if self.host == socket.gethostname() and self.pid and not pid_alive(self.pid):
            return False
        return time.time() - self.heartbeat < stale_s

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.started))
        return f"host {self.host} pid {self.pid} since {since} UTC (heartbeat {time.time() - self.heartbeat:.0f} s ago)"


def _parse_holder(data: bytes, version: Version) -> Holder:
    """The holder a lease names; a lease whose content cannot be read (an older format, a torn write on a
    filesystem without hard links) names nobody, and goes stale by its age like any other."""
    try:
        info = json.loads(data or b"{}")
        return Holder(str(info.get("token", "")), str(info.get("host", "")), int(info.get("pid") or 0),
                      float(info.get("started") or version.modified), version.modified)
    except (ValueError, TypeError, AttributeError):
        return Holder("", "", 0, version.modified, version.modified)


def read_lease(storage: Storage, name: str = LEASE_NAME) -> tuple[Holder, Version] | None:
    found = storage.read_versioned(name)
    return (_parse_holder(*found), found[1]) if found else None


def read_holder(folder: "Path | str | Storage", name: str = LEASE_NAME) -> Holder | None:
    found = read_lease(open_storage(folder), name)
    return found[0] if found else None


class RunBusy(StudyError):
    """Another live process holds the run's lease (and the caller asked not to wait): exit code 3."""

    exit_code = EXIT_BUSY


class Lease:
    """`with Lease(folder, run_id, log=...).acquire(wait=True):` trains; `lost` turns True if it is taken over.
    `folder` is a pathlib.Path, a path or URL string, or a core.storage.Storage."""

    def __init__(self, folder: "Path | str | Storage", run_id: str, log=print, heartbeat_s: float = HEARTBEAT_S,
                 stale_s: float = STALE_S, name: str = LEASE_NAME):
        self.storage, self.run_id, self.log, self.name = open_storage(folder), run_id, log, name
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self.lost = False
        self._beats = 0
        self._version: Version | None = None
        self._busy: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> bytes:
        return json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "started": self.started, "beat": self._beats}).encode()

    def holder(self) -> Holder | None:
        """Who holds the lease now (None: nobody)."""
        return read_holder(self.storage, self.name)

    def try_acquire(self) -> bool:
        """Take the lease if it is free or its holder is gone; False at once while a live process holds it."""
        for _ in range(3):  # a lease released between our create and our read: try again
            version = self.storage.create(self.name, self._content())
            if version is None:
                found = read_lease(self.storage, self.name)
                if found is None:
                    continue
                holder, seen = found
                if holder.alive(self.stale_s):
                    self._busy = holder
                    return False
                self.log(f"{self.run_id}: taking over the lease of {holder.describe()}: its holder is gone")
                version = self.storage.swap(self.name, self._content(), seen)
                if version is None:
                    return False  # another taker won, or the holder renewed after all
            self._hold(version)
            return True
        return False

    def acquire(self, wait: bool = True) -> "Lease":
        told = False
        while not self.try_acquire():
            holder = self._busy.describe() if self._busy else "another process"
            if not wait:
                raise RunBusy(f"{self.run_id} is being trained by {holder}; not waiting (--if-running exit); run "
                              f"the same command later, or with --if-running wait")
            if not told:
                self.log(f"{self.run_id}: being trained by {holder}; waiting for it to finish or stop")
                told = True
            time.sleep(POLL_S)
        return self

    def _hold(self, version: Version) -> None:
        self._version = version
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.run_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._beats += 1
            try:
                version = self.storage.renew(self.name, self._content(), self._version)
            except (OSError, StudyError):
                continue  # a flaky disk or network must not kill the run; others see an ageing heartbeat
            if version is None:
                self.log(f"{self.run_id}: lost the lease to {self._who_holds()}; stopping")
                self.lost = True  # after the log line: a holder that exits on `lost` has said why
                return
            self._version = version

    def _who_holds(self) -> str:
        try:
            holder = read_holder(self.storage, self.name)
        except (OSError, StudyError):
            holder = None
        return holder.describe() if holder else "another process"

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None
        if self._version is not None and not self.lost:
            try:
                self.storage.delete(self.name, self._version)
            except (OSError, StudyError):
                pass  # left behind: it goes stale by the rule above
        self._version = None

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
