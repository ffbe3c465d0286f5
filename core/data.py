"""Data sets (CIFAR-10 in RGB, Fashion-MNIST as 3x32x32), the validation split, and the device-resident loader.

Each split is one uint8 tensor (N, 3, 32, 32) plus int64 labels, kept on the training device; batches are
augmented there as whole tensors (core.augment) and normalised with the *training* split's per-channel statistics.
No DataLoader, no PIL, no per-sample Python on the hot path.

Where data comes from, in order:
1. `--data-dir` (env RESNET_STUDY_DATA, default ./data) in torchvision's on-disk layouts:
   `cifar-10-batches-py/` (data_batch_1..5, test_batch, batches.meta) and `FashionMNIST/raw/` (idx files, .gz or not);
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

from . import RetryLater, StudyError, settings
from . import augment as aug
from .runtime import data_fingerprint, file_digest
from .storage import local_cache, open_storage
from .vocab import CLASS_NAMES, DATASETS, check_choice

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
FASHION_MNIST_STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                       "t10k-labels-idx1-ubyte"]


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


# ---------------------------------------------------------------- CIFAR-10: torchvision's python pickles


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    data = torch.from_numpy(np.ascontiguousarray(d[b"data"], dtype=np.uint8))
    images = data.reshape(-1, 3, 32, 32)  # rows are R plane, G plane, B plane: RGB order, channel-first
    labels = torch.as_tensor(list(d[b"labels"]), dtype=torch.int64)
    if len(images) != len(labels):
        raise ValueError("image and label counts differ")
    return images.contiguous(), labels


def load_cifar10(data_dir: Path) -> tuple[Split, Split, list[str]]:
    root = data_dir / "cifar-10-batches-py"
    files = [root / name for name in CIFAR10_FILES]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise RetryLater(
            f"CIFAR-10 not found: {root} lacks {', '.join(missing)}; put torchvision's cifar-10-batches-py/ there "
            f"(--data-dir or RESNET_STUDY_DATA), or add --download to fetch it"
        )
    try:
        parts = [_read_cifar_batch(f) for f in files[:5]]
        test = _read_cifar_batch(files[5])
        classes = list(CLASS_NAMES["cifar10"])
        meta = root / "batches.meta"
        if meta.is_file():
            with open(meta, "rb") as f:
                classes = [c.decode() for c in pickle.load(f, encoding="bytes")[b"label_names"]]
    except Exception as e:  # any unreadable pickle is a corrupt download
        raise StudyError(
            f"CIFAR-10 files in {root} are corrupt ({type(e).__name__}: {e}); delete the folder and fetch it again "
            f"(--download)"
        ) from None
    train = Split(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    return train, Split(*test), classes


# ---------------------------------------------------------------- Fashion-MNIST: idx files


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


def fashion_mnist_files(data_dir: Path) -> list[Path]:
    """The four idx files (train images, train labels, test images, test labels), .gz or not, from
    DATA/FashionMNIST/raw/, else from Debian's package."""
    folders = [data_dir / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST]
    paths = [next((f / name for f in folders for name in (stem, stem + ".gz") if (f / name).is_file()), None)
             for stem in FASHION_MNIST_STEMS]
    if None in paths:
        raise RetryLater(
            f"Fashion-MNIST not found in {folders[0]} or {folders[1]}; install it with "
            f"'apt-get install dataset-fashion-mnist', put torchvision's FashionMNIST/raw/ under --data-dir, "
            f"or add --download"
        )
    return paths


def load_fashion_mnist(data_dir: Path) -> tuple[Split, Split, list[str]]:
    paths = fashion_mnist_files(data_dir)
    try:
        tr_x, tr_y, te_x, te_y = (_read_idx(p) for p in paths)
        if len(tr_x) != len(tr_y) or len(te_x) != len(te_y):
            raise ValueError("image and label counts differ")
    except Exception as e:
        raise StudyError(
            f"Fashion-MNIST file {paths[0].parent} is corrupt ({type(e).__name__}: {e}); delete it and fetch it again"
        ) from None
    return Split(_to_3x32(tr_x), tr_y.long()), Split(_to_3x32(te_x), te_y.long()), list(CLASS_NAMES["fashion-mnist"])


def _to_3x32(x: torch.Tensor) -> torch.Tensor:
    """28x28 grey -> 3x32x32: zero-pad 2 pixels each side, repeat the channel 3 times."""
    return F.pad(x[:, None], (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()


def _download(name: str, data_dir: Path) -> None:
    import torchvision

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        if name == "cifar10":
            torchvision.datasets.CIFAR10(str(data_dir), train=True, download=True)
        else:
            torchvision.datasets.FashionMNIST(str(data_dir), train=True, download=True)
    except Exception as e:
        raise StudyError(f"download of {name} into {data_dir} failed ({e}); fetch it on a machine with internet") from None


LOADERS = {"cifar10": load_cifar10, "fashion-mnist": load_fashion_mnist}


def data_files(name: str, data_dir: Path | str | None = None) -> list[Path]:
    """The files `load(name, data_dir)` reads: what a run's data fingerprint is computed over."""
    data_dir = local_data_dir(name, data_dir)
    if name == "fashion-mnist":
        return fashion_mnist_files(data_dir)
    root = data_dir / "cifar-10-batches-py"
    return [root / f for f in CIFAR10_FILES + ["batches.meta"] if (root / f).is_file()]


def load(name: str, data_dir: Path | str | None = None, download: bool = False) -> tuple[Split, Split, list[str]]:
    check_choice("--dataset", "dataset", name, DATASETS)
    data_dir = local_data_dir(name, data_dir)
    try:
        return LOADERS[name](data_dir)
    except StudyError:
        if not download:
            raise
    _download(name, data_dir)
    return LOADERS[name](data_dir)


# ---------------------------------------------------------------- data sets in a bucket


def _layout_name(name: str, path: Path) -> str:
    """Where a data file lives under a data dir (torchvision's layouts), whatever folder it was read from."""
    return f"{'FashionMNIST/raw' if name == 'fashion-mnist' else 'cifar-10-batches-py'}/{path.name}"


def manifest_name(name: str) -> str:
    return f"{name}.manifest.json"


def push(name: str, data_dir: Path | str | None, dest: str) -> dict:
    """Upload the data set `load(name, data_dir)` reads to the bucket prefix `dest`, each file one PUT, then its
    manifest (last, so a reader never sees a manifest whose files are not all there)."""
    check_choice("--dataset", "dataset", name, DATASETS)
    storage = open_storage(dest)
    if storage.is_local:
        raise StudyError(f"data push: the destination is an s3://bucket/prefix URL (got {dest!r}); for a local "
                         f"folder copy the files")
    files = data_files(name, data_dir)
    manifest = {"dataset": name, "fingerprint": data_fingerprint(files),
                "files": {_layout_name(name, f): file_digest(f) for f in files}}
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
