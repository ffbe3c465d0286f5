"""Data sets (core.datasets: CIFAR-10/100 and SVHN in RGB, MNIST and Fashion-MNIST as 3x32x32, the user's own),
the validation split, and the device-resident loader.

Each split is one uint8 tensor (N, 3, 32, 32) plus int64 labels, kept on the training device; batches are
augmented there as whole tensors (core.augment) and normalised with the *training* split's per-channel statistics.
No DataLoader, no PIL, no per-sample Python on the hot path.

Where data comes from, in order:
1. `--data-dir` (env RESNET_STUDY_DATA, default ./data) in torchvision's on-disk layouts:
   `cifar-10-batches-py/` (data_batch_1..5, test_batch, batches.meta), `cifar-100-python/` (train, test, meta),
   `FashionMNIST/raw/` and `MNIST/raw/` (idx files, .gz or not), `train_32x32.mat` / `test_32x32.mat` (SVHN);
2. Fashion-MNIST only: Debian's package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist);
3. a torchvision download into the data dir, only with `--download` (off by default: a batch job should fail
   loudly rather than fetch 170 MB from the internet on every pod; fetch once, then mount the directory).

`--data-dir s3://bucket/prefix` is the same layout in a bucket, put there by `resnet-study data push` with a
manifest (DATASET.manifest.json: each file's SHA-256 and the data fingerprint runs record). A run fetches the files
once into this machine's cache (core.storage.local_cache) and checks each against the manifest, so a pod needs no
data volume and a half-fetched or changed file is never trained on.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import RetryLater, StudyError, datasets, settings, userdata
from . import augment as aug
from .datasets import BUILTINS, DatasetSpec
from .runtime import data_fingerprint, file_digest
from .storage import local_cache, open_storage

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def default_data_dir() -> Path:
    return Path(settings.DATA.get())


@dataclass
class Split:
    """Images and labels of one split. `index` (int64, or None for every row) says which rows of `images` the split
    is: a validation split or a limit is an index, never a copy, so the runs of a cell share one copy of the data
    set's images while each keeps its own training / validation rows."""

    images: torch.Tensor  # uint8 (N, 3, 32, 32), possibly shared with other splits
    labels: torch.Tensor  # int64 (N,)
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels) if self.index is None else len(self.index)

    def head(self, k: int | None) -> "Split":
        if k is None:
            return self
        if self.index is None:
            return Split(self.images[:k], self.labels[:k])  # views
        return Split(self.images, self.labels, self.index[:k])

    def take(self, idx: torch.Tensor) -> "Split":
        return Split(self.images, self.labels, idx if self.index is None else self.index[idx])

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of the split's rows `idx` (positions within the split), gathered."""
        i = idx if self.index is None else self.index[idx]
        return self.images[i], self.labels[i]

    def to(self, device) -> "Split":
        """On `device`; the same tensors when they are there already (so splits that share images still do)."""
        return Split(self.images.to(device), self.labels.to(device),
                     None if self.index is None else self.index.to(device))


@dataclass
class DataSet:
    name: str
    classes: list[str]
    train: Split
    test: Split
    val: Split | None = None


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100: torchvision's python pickles


def _read_cifar_batch(path: Path, label_key: bytes = b"labels") -> tuple[torch.Tensor, torch.Tensor]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    data = torch.from_numpy(np.ascontiguousarray(d[b"data"], dtype=np.uint8))
    images = data.reshape(-1, 3, 32, 32)  # rows are R plane, G plane, B plane: RGB order, channel-first
    labels = torch.as_tensor(list(d[label_key]), dtype=torch.int64)
    if len(images) != len(labels):
        raise ValueError("image and label counts differ")
    return images.contiguous(), labels


def load_cifar(spec: DatasetSpec, data_dir: Path) -> tuple[Split, Split, list[str]]:
    """CIFAR-10 (data_batch_1..5, test_batch, batches.meta) or CIFAR-100 (train, test, meta; the 100 fine labels)."""
    root = data_dir / spec.folder
    *batches, meta = [root / name for name in spec.files]
    missing = [f.name for f in batches if not f.is_file()]
    if missing:
        raise RetryLater(
            f"{spec.title} not found: {root} lacks {', '.join(missing)}; put torchvision's {spec.folder}/ there "
            f"(--data-dir or RESNET_STUDY_DATA), or add --download to fetch it"
        )
    fine = spec.name == "cifar100"
    label_key, names_key = (b"fine_labels", b"fine_label_names") if fine else (b"labels", b"label_names")
    try:
        parts = [_read_cifar_batch(f, label_key) for f in batches[:-1]]
        test = _read_cifar_batch(batches[-1], label_key)
        classes = list(spec.classes)
        if meta.is_file():
            with open(meta, "rb") as f:
                classes = [c.decode() for c in pickle.load(f, encoding="bytes")[names_key]]
    except Exception as e:  # any unreadable pickle is a corrupt download
        raise StudyError(
            f"{spec.title} files in {root} are corrupt ({type(e).__name__}: {e}); delete the folder and fetch it "
            f"again (--download)"
        ) from None
    train = Split(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    return train, Split(*test), classes


# ---------------------------------------------------------------- MNIST / Fashion-MNIST: idx files


def _read_idx(path: Path) -> torch.Tensor:
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise ValueError(f"not an unsigned-byte idx file (magic {magic:#x})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    if data.numel() != torch.Size(dims).numel():
        raise ValueError(f"truncated: {data.numel()} bytes for shape {dims}")
    return data.reshape(dims)


def idx_files(spec: DatasetSpec, data_dir: Path) -> list[Path]:
    """The four idx files (train images, train labels, test images, test labels), .gz or not, from
    DATA/<folder>/ (FashionMNIST/raw, MNIST/raw), else (Fashion-MNIST) from Debian's package."""
    folders = [data_dir / spec.folder] + ([DEBIAN_FASHION_MNIST] if spec.name == "fashion-mnist" else [])
    paths = [next((f / name for f in folders for name in (stem, stem + ".gz") if (f / name).is_file()), None)
             for stem in spec.files]
    if None in paths:
        debian = (f" or {DEBIAN_FASHION_MNIST}; install it with 'apt-get install dataset-fashion-mnist'," if
                  spec.name == "fashion-mnist" else ";")
        raise RetryLater(f"{spec.title} not found in {folders[0]}{debian} put torchvision's {spec.folder}/ under "
                         f"--data-dir, or add --download")
    return paths


def fashion_mnist_files(data_dir: Path) -> list[Path]:
    return idx_files(BUILTINS["fashion-mnist"], data_dir)


def load_idx(spec: DatasetSpec, data_dir: Path) -> tuple[Split, Split, list[str]]:
    paths = idx_files(spec, data_dir)
    try:
        tr_x, tr_y, te_x, te_y = (_read_idx(p) for p in paths)
        if len(tr_x) != len(tr_y) or len(te_x) != len(te_y):
            raise ValueError("image and label counts differ")
    except Exception as e:
        raise StudyError(
            f"{spec.title} file {paths[0].parent} is corrupt ({type(e).__name__}: {e}); delete it and fetch it again"
        ) from None
    return Split(_to_3x32(tr_x), tr_y.long()), Split(_to_3x32(te_x), te_y.long()), list(spec.classes)


def _to_3x32(x: torch.Tensor) -> torch.Tensor:
    """28x28 grey -> 3x32x32: zero-pad 2 pixels each side, repeat the channel 3 times."""
    return F.pad(x[:, None], (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()


# ---------------------------------------------------------------- SVHN: MATLAB files (scipy.io)


def load_svhn(spec: DatasetSpec, data_dir: Path) -> tuple[Split, Split, list[str]]:
    """train_32x32.mat / test_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0 (mapped to 0,
    as torchvision does)."""
    from scipy.io import loadmat  # scipy is heavy: loaded only when SVHN is

    paths = [data_dir / spec.folder / f for f in spec.files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise RetryLater(f"SVHN not found: {data_dir / spec.folder} lacks {', '.join(missing)}; put torchvision's "
                         f"SVHN files there (--data-dir), or add --download")
    splits = []
    for p in paths:
        try:
            mat = loadmat(p)
            x, y = np.asarray(mat["X"], dtype=np.uint8), np.asarray(mat["y"], dtype=np.int64).reshape(-1)
            if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
                raise ValueError(f"X is {x.shape}, y has {len(y)} labels")
        except Exception as e:
            raise StudyError(f"SVHN file {p} is corrupt ({type(e).__name__}: {e}); delete it and fetch it again") \
                from None
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
        splits.append(Split(images, torch.from_numpy(y % 10)))
    return splits[0], splits[1], list(spec.classes)


# ---------------------------------------------------------------- the user's own data (core.userdata)


def load_user(spec: DatasetSpec, data_dir: Path) -> tuple[Split, Split, list[str]]:
    arrays, _ = userdata.load_user(spec, data_dir)
    return (Split(torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])),
            Split(torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"])),
            [str(c) for c in arrays["classes"]])


READERS = {"cifar-pickle": load_cifar, "idx": load_idx, "svhn-mat": load_svhn, "arrays": load_user}


def _download(spec: DatasetSpec, data_dir: Path) -> None:
    import torchvision

    if spec.torchvision is None:
        raise StudyError(f"{spec.name} is your own data set: there is nothing to download; pass its folder or .npz")
    data_dir.mkdir(parents=True, exist_ok=True)
    cls = getattr(torchvision.datasets, spec.torchvision)
    try:
        if spec.name == "svhn":
            for split in ("train", "test"):
                cls(str(data_dir), split=split, download=True)
        else:
            cls(str(data_dir), train=True, download=True)
            cls(str(data_dir), train=False, download=True)
    except Exception as e:
        raise StudyError(f"download of {spec.name} into {data_dir} failed ({e}); fetch it on a machine with "
                         f"internet") from None


def data_files(name: str, data_dir: Path | str | None = None) -> list[Path]:
    """The files `load(name, data_dir)` reads: what a run's data fingerprint is computed over (built-ins)."""
    spec = datasets.get(name)
    data_dir = local_data_dir(name, data_dir)
    if spec.loader == "idx":
        return idx_files(spec, data_dir)
    return [data_dir / spec.folder / f for f in spec.files if (data_dir / spec.folder / f).is_file()]


def fingerprint(name: str, data_dir: Path | str | None = None) -> str:
    """The data fingerprint a run records: over the files read (built-ins), or the user data's content hash (the
    one its name carries)."""
    spec = datasets.get(name)
    if spec.builtin:
        return data_fingerprint(data_files(name, data_dir))
    if spec.fingerprint or name in userdata.FINGERPRINTS:
        return spec.fingerprint or userdata.FINGERPRINTS[name]
    return userdata.load_user(spec, local_data_dir(name, data_dir))[1]


def load(name: str, data_dir: Path | str | None = None, download: bool = False) -> tuple[Split, Split, list[str]]:
    spec = datasets.get(datasets.check_name(name))
    data_dir = local_data_dir(spec.name, data_dir)
    reader = READERS[spec.loader]
    try:
        return reader(spec, data_dir)
    except StudyError:
        if not download or not spec.builtin:
            raise
    _download(spec, data_dir)
    return reader(spec, data_dir)


# ---------------------------------------------------------------- data sets in a bucket


def _layout_name(name: str, path: Path) -> str:
    """Where a data file lives under a data dir (torchvision's layouts), whatever folder it was read from."""
    folder = datasets.get(name).folder
    return f"{folder}/{path.name}" if folder else path.name


def manifest_name(name: str) -> str:
    return f"{name}.manifest.json"


def push(name: str, data_dir: Path | str | None, dest: str) -> dict:
    """Upload the data set `load(name, data_dir)` reads to the bucket prefix `dest`, each file one PUT, then its
    manifest (last, so a reader never sees a manifest whose files are not all there). A user data set (`name` a
    path or its stored name) goes up as its decoded arrays, `<name>.npz` (core.userdata)."""
    name = datasets.check_name(name)
    storage = open_storage(dest)
    if storage.is_local:
        raise StudyError(f"data push: the destination is an s3://bucket/prefix URL (got {dest!r}); for a local "
                         f"folder copy the files")
    spec = datasets.get(name)
    if spec.builtin:
        files = data_files(name, data_dir)
        fp = data_fingerprint(files)
    else:
        fp = fingerprint(name, data_dir)
        files = [userdata.cache_dir() / f"{name}.npz"]
        if not files[0].is_file():  # known by name, read from a data dir: write the cache copy from it
            arrays, fp = userdata.load_user(spec, local_data_dir(name, data_dir))
            userdata.write_decoded(files[0], arrays, fp)
    manifest = {"dataset": name, "fingerprint": fp, "files": {_layout_name(name, f): file_digest(f) for f in files}}
    storage.check_writable()
    for f in files:
        storage.upload(_layout_name(name, f), f)
    storage.write(manifest_name(name), json.dumps(manifest, indent=1).encode())
    return manifest


def local_data_dir(name: str, data_dir: Path | str | None) -> Path:
    """The local folder a data set is read from: --data-dir itself, or for s3:// this machine's copy of it, fetched
    once and verified file by file against the bucket's manifest."""
    if not data_dir:
        return default_data_dir()
    storage = open_storage(data_dir)
    if storage.is_local:
        return Path(data_dir)
    found = storage.read(manifest_name(name))
    if found is None:
        raise RetryLater(f"{name} is not in {storage} (no {manifest_name(name)}); upload it with `resnet-study data "
                         f"push {name} {storage}`")
    manifest = json.loads(found)
    cache = local_cache(storage, "data")
    for rel, sha256 in manifest["files"].items():
        path = cache / rel
        if path.is_file() and file_digest(path) == sha256:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if not storage.download(rel, path):
            raise RetryLater(f"{storage}/{rel} is missing though {manifest_name(name)} lists it; push the data set again")
        if (got := file_digest(path)) != sha256:
            path.unlink()
            raise StudyError(f"{storage}/{rel} has SHA-256 {got[:12]}..., its manifest says {sha256[:12]}...; push "
                             f"the data set again (`resnet-study data push {name} {storage}`)")
    return cache


def stratified_split(labels: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val): k images held out, each class in proportion to its share, chosen by `seed`."""
    g = torch.Generator().manual_seed(seed)
    classes, counts = labels.unique(return_counts=True)
    quota = counts.double() * k / len(labels)
    take = quota.floor().long()
    short = k - int(take.sum())
    if short:
        take[torch.argsort(quota - take, descending=True)[:short]] += 1
    val = [torch.nonzero(labels == c).flatten()[torch.randperm(int(cnt), generator=g)[:t]]
           for c, cnt, t in zip(classes, counts, take)]
    val_idx = torch.cat(val).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val_idx] = False
    return torch.nonzero(keep).flatten(), val_idx


def prepare(name: str, data_dir: Path | None = None, *, download: bool = False, train_limit: int | None = None,
            test_limit: int | None = None, val_split: int = 0, seed: int = 0) -> DataSet:
    train, test, classes = load(name, data_dir, download)
    return select(DataSet(name, classes, train, test), train_limit=train_limit, test_limit=test_limit,
                  val_split=val_split, seed=seed)


def select(full: DataSet, *, train_limit: int | None = None, test_limit: int | None = None, val_split: int = 0,
           seed: int = 0) -> DataSet:
    """One run's view of a loaded data set: the first `train_limit` / `test_limit` images, less a stratified
    validation split chosen by `seed`. Indices into `full`'s tensors, no copies: the runs of a cell share them."""
    train, test = full.train.head(train_limit), full.test.head(test_limit)
    val = None
    if val_split:
        if val_split >= len(train):
            raise StudyError(
                f"--val-split {val_split} leaves no training images ({len(train)} available); use a smaller split"
            )
        labels = train.labels if train.index is None else train.labels[train.index]
        tr_idx, val_idx = stratified_split(labels.cpu(), val_split, seed)
        train, val = train.take(tr_idx.to(labels.device)), train.take(val_idx.to(labels.device))
    return DataSet(full.name, full.classes, train, test, val)


def channel_stats(split: "Split | torch.Tensor") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over a uint8 split (or images tensor), as fractions of 255.

    Exact: from a 256-bin histogram per channel (integer counts, chunked), so no float copy of the split is made."""
    if isinstance(split, torch.Tensor):
        split = Split(split, torch.empty(len(split), dtype=torch.int64, device=split.device))
    counts = torch.zeros(split.images.shape[1], 256, dtype=torch.float64)
    positions = torch.arange(len(split), device=split.images.device)
    for chunk_idx in positions.split(8192):
        chunk = split.rows(chunk_idx)[0]
        for c in range(chunk.shape[1]):
            counts[c] += torch.bincount(chunk[:, c].reshape(-1), minlength=256).cpu().double()
    values = torch.arange(256, dtype=torch.float64) / 255
    total = counts.sum(1)
    mean = (counts * values).sum(1) / total
    var = (counts * values.square()).sum(1) / total - mean.square()
    return mean.float(), var.clamp_min(1e-12).sqrt().float()


class DeviceLoader:
    """Batches of one split, resident on `device`: shuffled and augmented (training) or in order and untouched.

    Batch k of an epoch is `batch(order, k)` with `order = self.order()`: every batch but the last has
    `batch_size` images, the last the rest (its own shape: a captured CUDA graph needs one per shape). Yields
    (normalised float32 images in channels_last, int64 labels). All randomness comes from `generator`, which lives
    on the device, so a checkpoint of its state (and of the epoch's order) resumes the exact sequence, mid-epoch
    too. Nothing here synchronises with the device: the order, the gather, the augmentation and the normalisation
    are all queued device ops.
    """

    def __init__(self, split: Split, batch_size: int, mean: torch.Tensor, std: torch.Tensor, *, device,
                 augment: str = "none", shuffle: bool = False, generator: torch.Generator | None = None):
        if augment not in aug.PRESETS:
            raise StudyError(f"unknown augmentation {augment!r}; use one of: {', '.join(aug.PRESETS)}")
        self.split = split.to(device)
        self.batch_size, self.device = batch_size, torch.device(device)
        self.augment, self.shuffle, self.generator = augment, shuffle, generator
        self.mean = mean.to(self.device, torch.float32)[None, :, None, None]
        self.std = std.to(self.device, torch.float32)[None, :, None, None]

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] floats -> (x - mean) / std in channels_last. Computed in NCHW, then copied once: on CPU, broadcast
        arithmetic over channels_last with 3 channels innermost is several times slower."""
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def order(self) -> torch.Tensor:
        """The epoch's order of the split's rows: a permutation drawn from the generator, or 0..N-1."""
        n = len(self.split)
        return (torch.randperm(n, device=self.device, generator=self.generator) if self.shuffle
                else torch.arange(n, device=self.device))

    def batch(self, order: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.split.rows(order[k * self.batch_size:(k + 1) * self.batch_size])
        return self.normalise(aug.apply(self.augment, images, self.generator)), labels

    def __iter__(self):
        order = self.order()
        for k in range(len(self)):
            yield self.batch(order, k)
