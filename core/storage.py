"""One storage layer: a folder on a local disk (or a network filesystem mounted as one) or a prefix in an S3 bucket,
with the few operations the results store and the leases need, each atomic by the backend's own means.

    operation                  local disk / NFS                          S3 (s3://bucket/prefix)
    write(name, data)          temp file + fsync + rename                one PUT
    create(name, data)         temp file + fsync + link() (exclusive)    PUT If-None-Match: *
    swap(name, data, v)        rename aside, compare, link() the new     PUT If-Match: <etag>
    renew(name, data, v)       compare the inode, utime it               PUT If-Match: <etag>
    delete(name[, v])          unlink / rename aside + compare           DELETE [If-Match: <etag>]
    list(prefix, suffix)       scandir + stat                            ListObjectsV2
    read / download / upload   open / copy                               GET / PUT

A `Version` is what a compare-and-swap compares: the ETag on S3; inode, mtime and size on a disk. Its `modified`
(the storage's clock: the file's mtime, the object's LastModified) is what the leases' staleness rule reads.

Why each choice:
- create uses link() of a complete temp file rather than O_EXCL: the name then appears with its whole content (a
  reader never sees a half-written lease), and link() is atomic on local filesystems and on NFS (the classic NFS
  lock-file technique). Where the filesystem has no hard links (SMB), it falls back to O_EXCL.
- A disk has no compare-and-swap, so swap renames the current file aside (one rename wins among racers), compares
  the moved file with the expected version, and link()s the new content in (fails if anyone created it meanwhile):
  atomic among swappers and creators, but the name is absent for the instant between the two steps. Readers of a
  swapped name treat absent as "look again"; writes that must never leave the name absent use `write`.
- renew keeps an object the caller wrote alive. On a disk it moves the mtime of the file it checked (through one open
  descriptor, so it can only ever touch that inode) and leaves the content as created; on S3 an ETag only changes
  with the content, so renew is a swap with new content.
- S3 through boto3, the AWS reference client: conditional writes (IfNoneMatch / IfMatch on put_object and
  delete_object), endpoint, region and credentials found the standard AWS way (AWS_ACCESS_KEY_ID, AWS_PROFILE, the
  config files, AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 for MinIO, Ceph or a test server, AWS_MAX_ATTEMPTS), and
  the widest use, so its behaviour against other S3 servers is the best known.

What a bucket cannot guarantee, and what the tests cannot show: AWS S3 has decided conditional writes atomically
since 2024 (a racing writer gets 412 Precondition Failed or 409 ConditionalRequestConflict, both read here as "the
condition failed"); the tests run against moto serving one request at a time, which proves this module's protocol
but not any server's atomicity under real concurrency, its behaviour during an outage, or its rate limits. S3
compatibles vary: check_writable refuses a server that ignores If-None-Match. A lease's age is the object's
LastModified (whole seconds) against this machine's clock, so clock skew shifts STALE_S. A generation deleted after
its grace period is gone for a reader that never asked again (on a bucket, readers hold a local copy instead).

Every S3 failure a user can fix (a malformed URL, a missing bucket, rejected credentials, an unreachable endpoint, a
scheme other than s3://) is a core.StudyError of one line naming what to fix.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from . import StudyError, settings


@dataclass(frozen=True)
class Version:
    token: str  # what a compare-and-swap compares, and all that makes two versions equal
    modified: float = field(compare=False)  # seconds since the epoch, by the storage's clock


class Storage(ABC):
    """A folder of named objects; a name is a relative path with '/' ('runs/<run_id>/run.json')."""

    url: str
    is_local: bool

    def __truediv__(self, name: str) -> "Storage":
        return self.child(name)

    def __str__(self) -> str:
        return self.url

    @abstractmethod
    def child(self, name: str) -> "Storage": ...

    @abstractmethod
    def read_versioned(self, name: str) -> tuple[bytes, Version] | None: ...

    def read(self, name: str) -> bytes | None:
        found = self.read_versioned(name)
        return found[0] if found else None

    @abstractmethod
    def version(self, name: str) -> Version | None: ...

    @abstractmethod
    def write(self, name: str, data: bytes) -> Version:
        """Replace `name` atomically: readers see the old content or the new, never a part."""

    @abstractmethod
    def create(self, name: str, data: bytes) -> Version | None:
        """Create `name` with `data` if it does not exist; None if it does (exactly one of racing creators wins)."""

    @abstractmethod
    def swap(self, name: str, data: bytes, expected: Version) -> Version | None:
        """Replace `name` only if it is still at `expected`; None if it changed or is gone."""

    @abstractmethod
    def renew(self, name: str, data: bytes, expected: Version) -> Version | None:
        """Mark an object this caller holds as alive now, if it is still at `expected`; None if it is not."""

    @abstractmethod
    def delete(self, name: str, expected: Version | None = None) -> bool:
        """Remove `name` (only if still at `expected`, when given); whether it was there (and removed)."""

    @abstractmethod
    def list(self, prefix: str = "", suffix: str = "") -> dict[str, Version]:
        """Every object under `prefix` whose name ends with `suffix`, by name relative to this folder."""

    @abstractmethod
    def download(self, name: str, dest: Path) -> bool:
        """Copy `name` to the local file `dest` (written atomically); False if it does not exist."""

    @abstractmethod
    def upload(self, name: str, src: Path, exclusive: bool = False) -> Version | None:
        """Store the local file `src` as `name`, atomically; exclusive: only if absent (else None)."""

    @abstractmethod
    def check_writable(self) -> None:
        """Raise StudyError (one line, what to fix) unless objects can be written here."""


# ---------------------------------------------------------------- locations


SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(/+)(.*)$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def open_storage(where: "str | Path | Storage") -> Storage:
    """A Storage for a local path or an `s3://bucket/prefix` URL. A pathlib.Path keeps working; since Path collapses
    '//', a Path reading 's3:/bucket/prefix' is taken as the URL it came from."""
    if isinstance(where, Storage):
        return where
    text = str(where)
    m = SCHEME.match(text)
    if not m:
        return LocalStorage(Path(where))
    scheme, slashes, rest = m.group(1).lower(), m.group(2), m.group(3)
    if scheme != "s3":
        raise StudyError(f"unsupported storage {text!r}: use a local path or s3://bucket/prefix (GCS, MinIO and Ceph through their S3 API)")
    if slashes != "//" and not (isinstance(where, Path) and slashes == "/"):
        raise StudyError(f"malformed S3 URL {text!r}: write s3://bucket/prefix")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.rstrip("/")
    if not BUCKET.match(bucket) or ".." in bucket or prefix and any(p in ("", ".", "..") for p in prefix.split("/")):
        raise StudyError(f"malformed S3 URL {text!r}: write s3://bucket/prefix (bucket: 3-63 lower-case letters, "
                         f"digits, '.' or '-')")
    return S3Storage(bucket, prefix)


def local_cache(storage: "S3Storage", kind: str) -> Path:
    """This machine's folder for what it keeps of a bucket (kind "s3": downloaded snapshots and `sweep local` logs;
    "data": fetched data sets): $RESNET_STUDY_CACHE, else ~/.cache/resnet-study, then one folder per endpoint,
    bucket and prefix."""
    base = settings.CACHE.get() or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "resnet-study"
    endpoint = hashlib.sha256(s3_client().meta.endpoint_url.encode()).hexdigest()[:12]
    return Path(base) / kind / endpoint / storage.bucket / (storage.prefix or "_")


def is_remote(where: "str | Path | Storage") -> bool:
    return not open_storage(where).is_local


# ---------------------------------------------------------------- local disk


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a temp file beside it, fsync, rename (atomic on local disks and NFS)."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _copy_synced(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)
    with open(dest, "rb+") as f:
        os.fsync(f.fileno())


def _local_version(st: os.stat_result) -> Version:
    return Version(f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}", st.st_mtime)


NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK)


def _link_exclusive(tmp: Path, path: Path) -> bool:
    """Give the complete file `tmp` the name `path` unless it exists (then False); `tmp` is removed either way."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        # On NFS a retransmitted link() can report EEXIST for the link it made: then tmp has two names.
        return os.stat(tmp).st_nlink == 2
    except OSError as e:
        if e.errno not in NO_LINKS:
            raise
        return _create_by_o_excl(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _create_by_o_excl(tmp: Path, path: Path) -> bool:
    """Exclusive create on a filesystem without hard links: the name can be seen before its content is complete."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(tmp.read_bytes())
        f.flush()
        os.fsync(f.fileno())
    return True


class LocalStorage(Storage):
    is_local = True

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = str(self.root)

    def path(self, name: str = "") -> Path:
        return self.root / name if name else self.root

    def child(self, name: str) -> "LocalStorage":
        return LocalStorage(self.root / name)

    def read_versioned(self, name: str) -> tuple[bytes, Version] | None:
        try:
            with open(self.path(name), "rb") as f:
                return f.read(), _local_version(os.fstat(f.fileno()))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def version(self, name: str) -> Version | None:
        try:
            st = os.stat(self.path(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _local_version(st)

    def write(self, name: str, data: bytes) -> Version:
        path = self._parent_made(name)
        atomic_write(path, data)
        return self.version(name) or Version("", time.time())

    def create(self, name: str, data: bytes) -> Version | None:
        path = self._parent_made(name)
        tmp = _temp_beside(path)
        _write_synced(tmp, data)
        version = _local_version(os.stat(tmp))
        return version if _link_exclusive(tmp, path) else None

    def swap(self, name: str, data: bytes, expected: Version) -> Version | None:
        path = self._parent_made(name)
        aside = self._move_aside(path, expected)
        if aside is None:
            return None
        try:
            tmp = _temp_beside(path)
            _write_synced(tmp, data)
            version = _local_version(os.stat(tmp))
            return version if _link_exclusive(tmp, path) else None
        finally:
            aside.unlink(missing_ok=True)

    def _move_aside(self, path: Path, expected: Version) -> Path | None:
        """Rename `path` away if it is at `expected` (one rename wins among racers); put it back if it is not."""
        aside = path.with_name(f".{path.name}.aside-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return None
        if _local_version(os.stat(aside)) == expected:
            return aside
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # created meanwhile by someone who found it absent: theirs stands
        aside.unlink(missing_ok=True)
        return None

    def renew(self, name: str, data: bytes, expected: Version) -> Version | None:
        try:
            fd = os.open(self.path(name), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if _local_version(os.fstat(fd)) != expected:
                return None
            os.utime(fd)
            return _local_version(os.fstat(fd))
        finally:
            os.close(fd)

    def delete(self, name: str, expected: Version | None = None) -> bool:
        path = self.path(name)
        if expected is None:
            try:
                os.unlink(path)
                return True
            except (FileNotFoundError, NotADirectoryError):
                return False
        aside = self._move_aside(path, expected)
        if aside is None:
            return False
        aside.unlink(missing_ok=True)
        return True

    def list(self, prefix: str = "", suffix: str = "") -> dict[str, Version]:
        found: dict[str, Version] = {}
        self._walk(self.path(prefix), prefix.strip("/"), suffix, found)
        return found

    def _walk(self, folder: Path, rel: str, suffix: str, found: dict[str, Version]) -> None:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue  # temp files, files moved aside, the store's own marks
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                self._walk(Path(entry.path), name, suffix, found)
            elif name.endswith(suffix):
                try:
                    found[name] = _local_version(entry.stat())
                except FileNotFoundError:
                    pass  # replaced or removed while we looked

    def download(self, name: str, dest: Path) -> bool:
        tmp = _temp_beside(Path(dest))
        try:
            shutil.copyfile(self.path(name), tmp)
            os.replace(tmp, dest)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def upload(self, name: str, src: Path, exclusive: bool = False) -> Version | None:
        path = self._parent_made(name)
        tmp = _temp_beside(path)
        try:
            _copy_synced(Path(src), tmp)
            version = _local_version(os.stat(tmp))
            if exclusive:
                return version if _link_exclusive(tmp, path) else None
            os.replace(tmp, path)
            return version
        finally:
            tmp.unlink(missing_ok=True)

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StudyError(f"results dir {self.root} is not writable ({e.strerror}); pass a writable "
                             f"--results-dir (or set {settings.RESULTS})") from None

    def _parent_made(self, name: str) -> Path:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


# ---------------------------------------------------------------- S3


CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
ABSENT = {"NoSuchKey", "404", "NotFound"}
REJECTED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken", "ExpiredToken",
            "InvalidClientTokenId", "AuthorizationHeaderMalformed"}

_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def s3_client():
    """One boto3 client per process (clients are thread-safe, and slow to create). Endpoint, region and
    credentials come from the environment and the AWS config files, read by botocore itself. A custom endpoint
    (MinIO, Ceph, a test server) is addressed path-style, which they all serve. boto3 is imported here, when the
    first s3:// location is used, so that a command on a local results dir does not pay for importing it."""
    import boto3
    import botocore.config

    # Checksums only where S3 requires them: the trailing checksums newer botocore sends by default are refused by
    # some S3-compatible servers (GCS's XML API, older Ceph), and AWS accepts either.
    config = botocore.config.Config(connect_timeout=10, read_timeout=120, request_checksum_calculation="when_required",
                                    response_checksum_validation="when_required")
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))  # a new setting: a new client
    with _clients_lock:
        if key not in _clients:
            session = boto3.session.Session()
            region = session.region_name or "us-east-1"
            client = session.client("s3", region_name=region, config=config)
            if "amazonaws.com" not in client.meta.endpoint_url:
                client = session.client("s3", region_name=region, config=config.merge(
                    botocore.config.Config(s3={"addressing_style": "path"})))
            _clients[key] = client
        return _clients[key]


def _code(e) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class S3Storage(Storage):
    is_local = False

    def __init__(self, bucket: str, prefix: str = ""):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def child(self, name: str) -> "S3Storage":
        return S3Storage(self.bucket, self.key(name.strip("/")))

    def _call(self, op: str, **kw):
        """client.<op>(Bucket=..., **kw); a problem the user can fix becomes a one-line StudyError. A failed
        condition or an absent key is left to the caller (botocore's ClientError)."""
        from botocore import exceptions as bx

        client = s3_client()
        try:
            return getattr(client, op)(Bucket=self.bucket, **kw)
        except bx.ClientError as e:
            code = _code(e)
            if code in CONDITION_FAILED or code in ABSENT and op != "head_bucket":
                raise
            raise StudyError(self._explain(code, e, client)) from None
        except bx.NoCredentialsError:
            raise StudyError(f"no AWS credentials for {self.url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                             f"(or AWS_PROFILE)") from None
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError):
            raise StudyError(f"cannot reach the S3 endpoint {client.meta.endpoint_url} for {self.url}: check "
                             f"AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) and the network") from None
        except bx.BotoCoreError as e:
            raise StudyError(f"S3 request for {self.url} failed: {str(e).splitlines()[0]}") from None

    def _explain(self, code: str, e, client) -> str:
        endpoint = client.meta.endpoint_url
        if code in ("NoSuchBucket", "404"):
            return f"bucket {self.bucket} does not exist at {endpoint}: create it, or fix the bucket in {self.url}"
        if code in REJECTED:
            return (f"{endpoint} rejected the credentials for {self.url} ({code}): check AWS_ACCESS_KEY_ID, "
                    f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket's permissions")
        message = str(e.response.get("Error", {}).get("Message", "")).splitlines()[0:1]
        return f"S3 error {code or 'unknown'} on {self.url}: {''.join(message) or 'no message'}"

    def _conditional(self, op: str, **kw):
        """A request that may fail its condition or find nothing: None then."""
        from botocore.exceptions import ClientError

        try:
            return self._call(op, **kw)
        except ClientError:
            return None

    def read_versioned(self, name: str) -> tuple[bytes, Version] | None:
        got = self._conditional("get_object", Key=self.key(name))
        if got is None:
            return None
        return got["Body"].read(), Version(got["ETag"], got["LastModified"].timestamp())

    def version(self, name: str) -> Version | None:
        got = self._conditional("head_object", Key=self.key(name))
        return Version(got["ETag"], got["LastModified"].timestamp()) if got else None

    def _put(self, name: str, body, **condition) -> Version | None:
        put = self._conditional("put_object", Key=self.key(name), Body=body, **condition)
        return Version(put["ETag"], time.time()) if put else None

    def write(self, name: str, data: bytes) -> Version:
        return self._put(name, data)

    def create(self, name: str, data: bytes) -> Version | None:
        return self._put(name, data, IfNoneMatch="*")

    def swap(self, name: str, data: bytes, expected: Version) -> Version | None:
        return self._put(name, data, IfMatch=expected.token)

    def renew(self, name: str, data: bytes, expected: Version) -> Version | None:
        return self.swap(name, data, expected)

    def delete(self, name: str, expected: Version | None = None) -> bool:
        if expected is not None:
            return self._conditional("delete_object", Key=self.key(name), IfMatch=expected.token) is not None
        if self.version(name) is None:
            return False
        self._call("delete_object", Key=self.key(name))
        return True

    def list(self, prefix: str = "", suffix: str = "") -> dict[str, Version]:
        start = self.key(prefix.strip("/")) if prefix else self.prefix
        start = f"{start}/" if start else ""
        skip = len(f"{self.prefix}/") if self.prefix else 0
        found, token = {}, None
        while True:
            page = self._call("list_objects_v2", Prefix=start, **({"ContinuationToken": token} if token else {}))
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(suffix):
                    found[obj["Key"][skip:]] = Version(obj["ETag"], obj["LastModified"].timestamp())
            token = page.get("NextContinuationToken")
            if not token:
                return found

    def download(self, name: str, dest: Path) -> bool:
        got = self._conditional("get_object", Key=self.key(name))
        if got is None:
            return False
        tmp = _temp_beside(Path(dest))
        try:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(got["Body"], f, 1 << 20)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def upload(self, name: str, src: Path, exclusive: bool = False) -> Version | None:
        with open(src, "rb") as f:
            return self._put(name, f, **({"IfNoneMatch": "*"} if exclusive else {}))

    def check_writable(self) -> None:
        """The bucket exists, these credentials may write, and the server honours conditional writes: a server
        that ignored If-None-Match would let two trainers take one lease, so it is refused here."""
        self._call("head_bucket")
        probe = f".write-probe-{uuid.uuid4().hex}"
        first = self.create(probe, b"")
        second = self.create(probe, b"again")
        self.delete(probe)
        if first is None or second is not None:
            raise StudyError(f"the S3 server at {s3_client().meta.endpoint_url} ignores conditional writes "
                             f"(If-None-Match), which the leases need; use a server that supports them (AWS S3, "
                             f"MinIO, Ceph RGW)")
