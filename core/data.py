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
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import StudyError
from . import augment as aug
from .vocab import CLASS_NAMES, DATASETS, check_choice

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
FASHION_MNIST_STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                       "t10k-labels-idx1-ubyte"]


def default_data_dir() -> Path:
    return Path(os.environ.get("RESNET_STUDY_DATA") or "data")


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, 3, 32, 32)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, k: int | None) -> "Split":
        return self if k is None else Split(self.images[:k], self.labels[:k])

    def take(self, idx: torch.Tensor) -> "Split":
        return Split(self.images[idx], self.labels[idx])

    def to(self, device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


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
        raise StudyError(
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
        raise StudyError(
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


def data_files(name: str, data_dir: Path | None = None) -> list[Path]:
    """The files `load(name, data_dir)` reads: what a run's data fingerprint is computed over."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    if name == "fashion-mnist":
        return fashion_mnist_files(data_dir)
    root = data_dir / "cifar-10-batches-py"
    return [root / f for f in CIFAR10_FILES + ["batches.meta"] if (root / f).is_file()]


def load(name: str, data_dir: Path | None = None, download: bool = False) -> tuple[Split, Split, list[str]]:
    check_choice("--dataset", "dataset", name, DATASETS)
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    try:
        return LOADERS[name](data_dir)
    except StudyError:
        if not download:
            raise
    _download(name, data_dir)
    return LOADERS[name](data_dir)


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
    train, test = train.head(train_limit), test.head(test_limit)
    val = None
    if val_split:
        if val_split >= len(train):
            raise StudyError(
                f"--val-split {val_split} leaves no training images ({len(train)} available); use a smaller split"
            )
        tr_idx, val_idx = stratified_split(train.labels, val_split, seed)
        train, val = train.take(tr_idx), train.take(val_idx)
    return DataSet(name, classes, train, test, val)


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over a uint8 split, as fractions of 255.

    Exact: from a 256-bin histogram per channel (integer counts, chunked), so no float copy of the split is made."""
    counts = torch.zeros(images.shape[1], 256, dtype=torch.float64)
    for chunk in images.split(8192):
        for c in range(images.shape[1]):
            counts[c] += torch.bincount(chunk[:, c].reshape(-1), minlength=256).cpu().double()
    values = torch.arange(256, dtype=torch.float64) / 255
    total = counts.sum(1)
    mean = (counts * values).sum(1) / total
    var = (counts * values.square()).sum(1) / total - mean.square()
    return mean.float(), var.clamp_min(1e-12).sqrt().float()


class DeviceLoader:
    """Batches of one split, resident on `device`: shuffled and augmented (training) or in order and untouched.

    Yields (normalised float32 images in channels_last, int64 labels). All randomness comes from `generator`, which
    lives on the device, so a checkpoint of its state resumes the exact sequence. Nothing here synchronises with
    the device: the order, the gather, the augmentation and the normalisation are all queued device ops.
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

    def __iter__(self):
        n = len(self.split)
        order = (torch.randperm(n, device=self.device, generator=self.generator) if self.shuffle
                 else torch.arange(n, device=self.device))
        for idx in order.split(self.batch_size):
            x = aug.apply(self.augment, self.split.images[idx], self.generator)
            yield self.normalise(x), self.split.labels[idx]
