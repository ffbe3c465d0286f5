"""The data sets, declared once: the built-ins (title, class names, split sizes, on-disk layout, reader) and the
user's own (a folder of images or an .npz, named by its content). The CLI's choices, the run record, the tables,
figure titles, `data push` / `fetch`, the fetch-data Job and docs/datasets.md all come from here. No torch, numpy or
PIL: the CLI and the results service load this in milliseconds (the readers are core.data's).

    --dataset cifar10              a bare word: a built-in (BUILTINS)
    --dataset ./my-images          a path: the user's folder (PATH/train/<class>/*, PATH/test/<class>/*) or .npz
    --dataset my-images@3fa2c1d0   the name a user data set is stored under (folder name + content hash)

A user data set's name is its folder's (or file's) name plus the first 8 hex digits of its data fingerprint (a
SHA-256 over every image file's path and bytes), so two different folders never share a run id, and an edited
folder is another data set: the same command then trains a new run, never resumes one onto other data.
Every image becomes uint8 3x32x32 by one rule (RESIZE_RULE); the decoded arrays are cached by that name.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import RetryLater, StudyError

NORMALISATION = "per-channel mean and std of the run's own training split (core.data.channel_stats)"
RESIZE_RULE = ("user images: converted to RGB (grayscale repeated, alpha dropped, palettes expanded), the shorter "
               "side resized to 32 (bilinear, antialiased), then the centre 32x32 cropped")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}@[0-9a-f]{8}")
DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(@[0-9a-f]{8})?$"  # a built-in's name, or a user data set's


@dataclass(frozen=True)
class DatasetSpec:
    """One data set. Built-ins read torchvision's on-disk layout under --data-dir (`folder`/`files`) with the
    reader `loader` of core.data; user data sets come from `source` (a folder or .npz) or, by name, from the
    decoded cache or a data dir that `data push` filled."""

    name: str  # the `dataset` of RunConfig, the runs table, the API
    title: str  # tables and figure titles
    classes: tuple[str, ...]
    train_images: int  # the full training split
    test_images: int
    folder: str  # under --data-dir ("" = the data dir itself)
    files: tuple[str, ...]  # what the reader reads, under `folder`
    loader: str  # core.data.READERS key: cifar-pickle, idx, svhn-mat, arrays
    channels: int  # channels on disk (1: repeated to 3x32x32)
    torchvision: str | None = None  # the torchvision.datasets class `--download` uses
    normalisation: str = NORMALISATION
    source: Path | None = field(default=None, compare=False)  # user data: the folder or .npz given
    fingerprint: str | None = None  # user data: 16 hex digits over the content

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def builtin(self) -> bool:
        return self.name in BUILTINS


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR100_CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm".split())
DIGITS = tuple(str(d) for d in range(10))

BUILTINS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("cifar10", "CIFAR-10",
                ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
                50_000, 10_000, "cifar-10-batches-py",
                tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"), "cifar-pickle", 3,
                "CIFAR10"),
    DatasetSpec("fashion-mnist", "Fashion-MNIST",
                ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"), 60_000, 10_000, "FashionMNIST/raw", _IDX, "idx", 1, "FashionMNIST"),
    DatasetSpec("cifar100", "CIFAR-100", CIFAR100_CLASSES, 50_000, 10_000, "cifar-100-python",
                ("train", "test", "meta"), "cifar-pickle", 3, "CIFAR100"),
    DatasetSpec("mnist", "MNIST", DIGITS, 60_000, 10_000, "MNIST/raw", _IDX, "idx", 1, "MNIST"),
    DatasetSpec("svhn", "SVHN", DIGITS, 73_257, 26_032, "", ("train_32x32.mat", "test_32x32.mat"), "svhn-mat", 3,
                "SVHN"),
)}
DATASET_HELP = (f"A built-in ({', '.join(BUILTINS)}) or a path (with a /, or ending in .npz) to your own: a folder "
                f"PATH/train/<class>/*, PATH/test/<class>/* of PNG/JPEG images, or an .npz with x_train, y_train, "
                f"x_test, y_test [, classes]. Images become 3x32x32: the shorter side resized to 32, centre crop.")

_SOURCES: dict[str, DatasetSpec] = {}  # user data sets resolved from a path in this process, by name


def is_path(text: str) -> bool:
    """A path names the user's data set, a bare word a built-in (or a stored user name)."""
    return "/" in text or os.sep in text or text.endswith(".npz")


def title(name: str) -> str:
    """What tables and figures call a data set: the built-in's title, a user data set's stored name."""
    return BUILTINS[name].title if name in BUILTINS else name


def class_names(name: str) -> tuple[str, ...] | None:
    return BUILTINS[name].classes if name in BUILTINS else None


def check_name(text: str) -> str:
    """The stored name `text` resolves to: a built-in, a user data set's name (as is), or a path's name (the
    folder or file is scanned and fingerprinted here; bad input is one line)."""
    if text in BUILTINS or USER_NAME.fullmatch(text):
        return text
    if is_path(text):
        return user_dataset(Path(text)).name
    hint = f" (for the folder ./{text}, write --dataset ./{text})" if Path(text).exists() else ""
    raise StudyError(f"--dataset: unknown dataset {text!r}{hint}; use {', '.join(BUILTINS)} or a path to a folder "
                     f"or .npz of your own")


def get(name: str) -> DatasetSpec:
    """The spec of a stored name (a built-in, or a user data set resolved in this process or known by name only)."""
    if name in BUILTINS:
        return BUILTINS[name]
    if name in _SOURCES:
        return _SOURCES[name]
    if USER_NAME.fullmatch(name):
        return DatasetSpec(name, name, (), 0, 0, "", (f"{name}.npz",), "arrays", 3)
    return BUILTINS[check_name(name)]  # raises: not a data set


# ---------------------------------------------------------------- the user's own data: scan and fingerprint


def _stem(path: Path) -> str:
    base = path.name[:-4] if path.name.endswith(".npz") else path.name
    return re.sub(r"[^A-Za-z0-9._-]", "-", base).lstrip("._-")[:55] or "data"


def image_folder(root: Path) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: [image files, sorted]}} of an ImageFolder-layout folder, checked: train/ and test/ there,
    at least 2 classes, no empty class, no test class absent from training."""
    splits = {}
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise StudyError(f"--dataset {root}: no {split}/ folder; lay images out as {root}/train/<class>/*.png "
                             f"and {root}/test/<class>/*.png (or pass an .npz)")
        classes = {}
        for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
            images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise StudyError(f"--dataset {root}: class folder {split}/{d.name} has no PNG or JPEG image; add "
                                 f"images or remove the folder")
            classes[d.name] = images
        splits[split] = classes
    train, test = splits["train"], splits["test"]
    if len(train) < 2:
        raise StudyError(f"--dataset {root}: train/ has {len(train)} class folder(s); a classifier needs at least 2 "
                         f"(one folder per class: train/<class>/*)")
    absent = sorted(set(test) - set(train))
    if absent:
        raise StudyError(f"--dataset {root}: test class {absent[0]!r} has no folder in train/; every test class "
                         f"must be trained on (rename or add train/{absent[0]}/)")
    return splits


def folder_fingerprint(root: Path, splits: dict[str, dict[str, list[Path]]]) -> str:
    """16 hex digits over every image's path under `root` (split/class/file) and its bytes: a moved, added,
    removed or edited image changes it."""
    h = hashlib.sha256()
    for split, classes in splits.items():
        for cls, files in classes.items():
            for f in files:
                h.update(f"{f.relative_to(root).as_posix()}\0{hashlib.sha256(f.read_bytes()).hexdigest()}\0".encode())
    return h.hexdigest()[:16]


def npz_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def user_dataset(path: Path) -> DatasetSpec:
    """The spec of the user's folder or .npz at `path`, named `<name>@<fingerprint[:8]>`, registered for this
    process. Classes and sizes of a folder come from its layout; an .npz's once it is read (core.data)."""
    if not path.exists():
        raise RetryLater(f"--dataset {path}: no such file or folder; check the path (a mounted volume may still be "
                         f"on its way)")
    if path.is_dir():
        splits = image_folder(path)
        fingerprint = folder_fingerprint(path, splits)
        classes = tuple(splits["train"])
        sizes = tuple(sum(len(v) for v in splits[s].values()) for s in ("train", "test"))
    elif path.suffix == ".npz":
        fingerprint, classes, sizes = npz_fingerprint(path), (), (0, 0)
    else:
        raise StudyError(f"--dataset {path}: not a folder or an .npz file; pass a folder with train/ and test/, or "
                         f"an .npz with x_train, y_train, x_test, y_test")
    name = f"{_stem(path.resolve())}@{fingerprint[:8]}"
    spec = DatasetSpec(name, name, classes, *sizes, "", (f"{name}.npz",), "arrays", 3, source=path.resolve(),
                       fingerprint=fingerprint)
    _SOURCES[name] = spec
    return spec
