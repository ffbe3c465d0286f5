"""The user's own data set -> uint8 arrays (N, 3, 32, 32) and int64 labels, decoded once and cached by name.

A folder in torchvision's ImageFolder layout is decoded with PIL (core.datasets.RESIZE_RULE: RGB, shorter side to 32,
centre crop); an .npz's arrays go through the same rule when they are not 3x32x32 already. The result is written to
`<cache>/datasets/<name>.npz` ($RESNET_STUDY_CACHE, else ~/.cache/resnet-study), the name carrying the content's
fingerprint, so a cell's other seeds, a resume and the next run read it back instead of decoding again; it is also
what `data push` uploads for a user data set (DECODED_KEYS, plus `classes` and `fingerprint`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import RetryLater, StudyError, settings
from .datasets import DatasetSpec, image_folder
from .storage import atomic_write

SIDE = 32
DECODED_KEYS = ("x_train", "y_train", "x_test", "y_test")
FINGERPRINTS: dict[str, str] = {}  # name -> data fingerprint of what this process loaded (the run records it)


def cache_dir() -> Path:
    base = settings.CACHE.get() or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnet-study"
    return Path(base) / "datasets"


def to_3x32(img: Image.Image) -> np.ndarray:
    """One image by the stated rule: RGB (alpha dropped, palette expanded, grey repeated), the shorter side to 32
    (bilinear, antialiased: PIL's resize), the centre 32x32. Returns uint8 (3, 32, 32)."""
    img = img.convert("RGB")
    w, h = img.size
    if (w, h) != (SIDE, SIDE):
        scale = SIDE / min(w, h)
        w, h = max(SIDE, round(w * scale)), max(SIDE, round(h * scale))
        img = img.resize((w, h), Image.BILINEAR)
        left, top = (w - SIDE) // 2, (h - SIDE) // 2
        img = img.crop((left, top, left + SIDE, top + SIDE))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def decode_folder(spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Every image of the folder, by the rule; labels are the class folders' positions in sorted train/ order."""
    root = spec.source
    splits = image_folder(root)
    index = {c: i for i, c in enumerate(splits["train"])}
    out = {}
    for split, classes in splits.items():
        images, labels = [], []
        for cls, files in classes.items():
            for f in files:
                try:
                    with Image.open(f) as img:
                        images.append(to_3x32(img))
                except (UnidentifiedImageError, OSError, ValueError) as e:
                    raise StudyError(f"--dataset {root}: PIL cannot open {f.relative_to(root)} ({e}); delete or "
                                     f"replace that file") from None
                labels.append(index[cls])
        out[f"x_{split}"] = np.stack(images)
        out[f"y_{split}"] = np.asarray(labels, dtype=np.int64)
    out["classes"] = np.asarray(list(splits["train"]))
    return out


def _images_to_3x32(x: np.ndarray, what: str, path: Path) -> np.ndarray:
    """An npz's NxHxW or NxHxWxC uint8 images -> (N, 3, 32, 32) by the same rule as a folder's."""
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3, 4)):
        raise StudyError(f"--dataset {path}: {what} is {x.dtype} {x.shape}; it must be uint8 NxHxW or NxHxWxC "
                         f"(C = 1, 3 or 4)")
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.shape[1:3] == (SIDE, SIDE) and x.ndim == 4 and x.shape[-1] == 3:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.shape[1:3] == (SIDE, SIDE) and x.ndim == 3:
        return np.ascontiguousarray(np.repeat(x[:, None], 3, axis=1))
    return np.stack([to_3x32(Image.fromarray(im)) for im in x])


def read_npz(spec: DatasetSpec) -> dict[str, np.ndarray]:
    path = spec.source
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # not a zip, truncated, pickled objects
        raise StudyError(f"--dataset {path}: cannot read it as an .npz ({type(e).__name__}: {e}); write it with "
                         f"numpy.savez(x_train=..., y_train=..., x_test=..., y_test=...)") from None
    missing = [k for k in DECODED_KEYS if k not in arrays]
    if missing:
        raise StudyError(f"--dataset {path}: no {', '.join(missing)} in it; an .npz needs x_train, y_train, x_test, "
                         f"y_test (and optionally classes)")
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != len(x):
            raise StudyError(f"--dataset {path}: y_{split} must be 1-D integer labels, one per image of x_{split} "
                             f"(got {y.dtype} {y.shape} for {len(x)} images)")
        out[f"x_{split}"], out[f"y_{split}"] = _images_to_3x32(x, f"x_{split}", path), y.astype(np.int64)
    k = int(out["y_train"].max()) + 1 if len(out["y_train"]) else 0
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else [str(i) for i in range(k)]
    for split in ("train", "test"):
        y = out[f"y_{split}"]
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise StudyError(f"--dataset {path}: y_{split} has label {int(y.min() if y.min() < 0 else y.max())}, "
                             f"outside 0..{len(classes) - 1} ({len(classes)} classes); fix the labels or the "
                             f"classes array")
    if len(classes) < 2:
        raise StudyError(f"--dataset {path}: {len(classes)} class; a classifier needs at least 2")
    absent = sorted(set(np.unique(out["y_test"]).tolist()) - set(np.unique(out["y_train"]).tolist()))
    if absent:
        raise StudyError(f"--dataset {path}: test class {classes[absent[0]]!r} (label {absent[0]}) has no training "
                         f"image; every test class must be trained on")
    out["classes"] = np.asarray(classes)
    return out


def write_decoded(path: Path, arrays: dict[str, np.ndarray], fingerprint: str) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays, fingerprint=np.asarray(fingerprint))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())


def read_decoded(path: Path) -> tuple[dict[str, np.ndarray], str]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in (*DECODED_KEYS, "classes")}
        return arrays, str(z["fingerprint"])


def load_user(spec: DatasetSpec, data_dir: Path | None) -> tuple[dict[str, np.ndarray], str]:
    """(arrays, fingerprint) of a user data set: from the cache, else decoded from its source (and cached), else
    (known by name only: a sweep's task, a pod) from `data_dir`, where `data push` put it."""
    arrays, fingerprint = _load_user(spec, data_dir)
    FINGERPRINTS[spec.name] = fingerprint
    return arrays, fingerprint


def _load_user(spec: DatasetSpec, data_dir: Path | None) -> tuple[dict[str, np.ndarray], str]:
    cached = cache_dir() / f"{spec.name}.npz"
    if cached.is_file():
        try:
            return read_decoded(cached)
        except Exception:  # a cache file cut short: decode again
            cached.unlink(missing_ok=True)
    if spec.source is not None:
        arrays = decode_folder(spec) if spec.source.is_dir() else read_npz(spec)
        try:
            write_decoded(cached, arrays, spec.fingerprint)
        except OSError:
            pass  # an unwritable cache costs a decode next time, nothing else
        return arrays, spec.fingerprint
    pushed = data_dir / f"{spec.name}.npz" if data_dir else None
    if pushed is not None and pushed.is_file():
        return read_decoded(pushed)
    raise RetryLater(f"data set {spec.name} is not on this machine (not decoded in {cache_dir()}, not in "
                     f"{data_dir}); pass its folder (--dataset PATH) or `resnet-study data push PATH s3://...` "
                     f"and --data-dir s3://...")
