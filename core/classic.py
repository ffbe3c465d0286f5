"""The classic pipeline, as the original study and most reproductions write it: the scientific control that this
project's fast loop (core.train) is checked against (tests/test_fast_vs_classic.py) and benchmarked beside
(`resnet-study bench train`, pipeline (c)).

A torchvision data set of PIL images, per-sample torchvision transforms, DataLoader worker processes, the default
memory format, fp32, the optimizer's default implementation and `loss.item()` every step. The model, its initial
weights, the recipe (RunConfig), the subsets and the normalisation are the fast loop's; only the data
pipeline and the step code differ.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from . import augment as aug
from . import data, datasets
from .config import RunConfig
from .model import resnet
from .train import EVAL_BATCH, resolve_device, synchronize


@contextmanager
def torchvision_root(dataset: str, data_dir: Path | None):
    """A folder torchvision's data set class reads without downloading: for Fashion-MNIST, FashionMNIST/raw/ with the
    decompressed idx files (Debian's .gz files decompress to exactly what torchvision downloads)."""
    tmp = Path(tempfile.mkdtemp(prefix="resnet-study-classic-"))
    try:
        base = Path(data_dir) if data_dir else data.default_data_dir()
        if dataset == "fashion-mnist":
            raw = tmp / "FashionMNIST" / "raw"
            raw.mkdir(parents=True)
            for src, stem in zip(data.fashion_mnist_files(base), datasets.BUILTINS["fashion-mnist"].files):
                with (gzip.open(src, "rb") if src.suffix == ".gz" else open(src, "rb")) as f_in, \
                        open(raw / stem, "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out)
        elif (base / "cifar-10-batches-py").is_dir():
            (tmp / "cifar-10-batches-py").symlink_to((base / "cifar-10-batches-py").resolve())
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class PILImages(torch.utils.data.Dataset):
    """uint8 (N, 3, H, W) arrays served as PIL images one by one, exactly as torchvision's CIFAR10.__getitem__ does
    (used where torchvision's class refuses the files: generated CIFAR-10-shaped data fails its md5 check)."""

    def __init__(self, split: data.Split, transform):
        self.images = split.images.permute(0, 2, 3, 1).contiguous().numpy()  # HWC, as CIFAR10 stores them
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def classic_transform(dataset: str, augment: str, mean: torch.Tensor, std: torch.Tensor):
    """torchvision transforms, per sample on PIL images: the same presets as core.augment, the classic way."""
    import torchvision.transforms as T

    prefix = [T.Pad(2), T.Grayscale(num_output_channels=3)] if dataset == "fashion-mnist" else []  # = data._to_3x32
    return T.Compose(prefix + CLASSIC_PRESETS[augment](T) + [T.ToTensor(), T.Normalize(mean.tolist(), std.tolist())])


# core.augment's presets as torchvision transforms (given the module, imported only when used); keyed by
# core.vocab.AUGMENTS (tests/test_layout.py holds the keys to it).
CLASSIC_PRESETS = {
    "paper": lambda T: [T.RandomCrop(32, padding=aug.PAD), T.RandomHorizontalFlip()],
    "report": lambda T: [T.RandomRotation(aug.MAX_ROTATION_DEG), T.RandomHorizontalFlip(),
                         T.ColorJitter(aug.JITTER, aug.JITTER, aug.JITTER),
                         T.RandomAdjustSharpness(aug.SHARPNESS_FACTOR)],
    "none": lambda T: [],
}


def classic_dataset(dataset: str, root: Path, split: data.Split, train: bool, transform):
    """torchvision's own data set class over `root` where it accepts the files, else the same arrays (`split`)
    through the same per-item code path."""
    import torchvision

    if dataset == "fashion-mnist":
        return torchvision.datasets.FashionMNIST(str(root), train=train, transform=transform, download=False)
    try:
        return torchvision.datasets.CIFAR10(str(root), train=train, transform=transform, download=False)
    except RuntimeError:  # absent, or files that fail torchvision's md5 check (generated data)
        return PILImages(split, transform)


def classic_loader(dataset, batch_size: int, workers: int, device: torch.device, shuffle: bool, seed: int = 0):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, pin_memory=device.type == "cuda",
        drop_last=False, persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed),
    )


def classic_optimizer(model, cfg: RunConfig) -> torch.optim.Optimizer:
    """The recipe's SGD in the optimizer's default implementation (core.train.make_optimizer uses the fused one)."""
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def classic_train_steps(model, batches, optimizer, device) -> tuple[float, float, float, int]:
    """Returns (mean loss, error fraction, seconds, images), like core.train.train_one_epoch."""
    model.train()
    running_loss, correct, seen = 0.0, 0, 0
    synchronize(device)
    start = time.perf_counter()
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
        seen += len(y)
    synchronize(device)
    return running_loss / seen, 1 - correct / seen, time.perf_counter() - start, seen


@torch.no_grad()
def classic_evaluate(model, loader, device) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        out = model(x.to(device))
        correct += (out.argmax(1) == y.to(device)).sum().item()
        total += len(y)
    return 1 - correct / total


def classic_train(cfg: RunConfig, *, data_dir: Path | None = None, device: str = "cpu",
                  workers: int = 2) -> dict:
    """Train `cfg` with the classic pipeline; returns {"test_error", "train_seconds"}.

    The same model, initial weights (torch.manual_seed(cfg.seed) before building it, as core.train.Run), recipe
    (cfg.lr_at per epoch), train/test subsets (first train_limit / test_limit images) and normalisation as
    core.train.Run. No validation split."""
    dev = resolve_device(device)
    train, test, _ = data.load(cfg.dataset, data_dir)
    train, test = train.head(cfg.train_limit), test.head(cfg.test_limit)
    mean, std = data.channel_stats(train.images)
    torch.manual_seed(cfg.seed)
    model = resnet(cfg.n, cfg.shortcut).to(dev)
    optimizer = classic_optimizer(model, cfg)
    with torchvision_root(cfg.dataset, data_dir) as root:
        train_ds = classic_dataset(cfg.dataset, root, train, True, classic_transform(cfg.dataset, cfg.augment, mean,
                                                                                      std))
        test_ds = classic_dataset(cfg.dataset, root, test, False, classic_transform(cfg.dataset, "none", mean, std))
        train_ds = torch.utils.data.Subset(train_ds, range(len(train)))
        test_ds = torch.utils.data.Subset(test_ds, range(len(test)))
        train_loader = classic_loader(train_ds, cfg.batch_size, workers, dev, shuffle=True, seed=cfg.seed)
        test_loader = classic_loader(test_ds, EVAL_BATCH, workers, dev, shuffle=False)
        seconds = 0.0
        for epoch in range(1, cfg.epochs + 1):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_at(epoch)
            seconds += classic_train_steps(model, train_loader, optimizer, dev)[2]
        return {"test_error": classic_evaluate(model, test_loader, dev), "train_seconds": seconds}
