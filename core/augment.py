"""Augmentation presets, applied to whole uint8 batches on the training device with per-sample randomness.

torchvision.transforms.v2 applied to a batch tensor draws ONE set of parameters for the whole batch (every image
rotated by the same angle, all flipped or none), so these presets are written with plain tensor ops instead: each
image gets its own crop offset, flip, angle and jitter factors. Only the training split is ever augmented; the
evaluation path (`core.data.DeviceLoader(..., augment="none")`) never calls this module.

- `paper` (He et al. §4.2): zero-pad 4 pixels on each side, random 32x32 crop, horizontal flip with p = 0.5.
- `report` (what the original study's report describes): random rotation within ±40°, horizontal flip p = 0.5,
  brightness / contrast / saturation jitter (factors uniform in [0.8, 1.2]), and sharpness adjustment (factor 2,
  p = 0.5), the torchvision semantics of RandomRotation(40), RandomHorizontalFlip(), ColorJitter(0.2, 0.2, 0.2) and
  RandomAdjustSharpness(2).
- `none`: the images as they are.

Every function maps a uint8 (N, C, H, W) batch to float32 in [0, 1]; normalisation comes after, in core.data.
Pass a dict as `record` to get the per-sample parameters that were drawn (tests check the outputs against an
independent per-image torchvision reference built from them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PAD = 4
MAX_ROTATION_DEG = 40.0
JITTER = 0.2  # brightness, contrast, saturation factors in [1 - JITTER, 1 + JITTER]
SHARPNESS_FACTOR = 2.0
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def _uniform(shape, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=device) * (high - low) + low


def _flip_mask(n: int, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) < 0.5


def random_crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = PAD):
    """Zero-pad by `pad`, cut a per-sample random window of the original size, flip it with p = 0.5: one gather on
    flat indices, where a flipped image simply reads its window's columns right to left.

    Returns (images, per-sample (row, col) offsets into the padded image, each in [0, 2 * pad], flip mask)."""
    n, c, h, w = x.shape
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = F.pad(x, (pad, pad, pad, pad)).view(n, c, hp * wp)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=g, device=x.device)
    flipped = _flip_mask(n, g, x.device)
    cols = torch.arange(w, device=x.device)
    cols = torch.where(flipped[:, None], w - 1 - cols, cols) + offsets[:, 1:2]  # (N, W)
    rows = (torch.arange(h, device=x.device) + offsets[:, 0:1]) * wp  # (N, H)
    index = (rows[:, :, None] + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.gather(2, index).view(n, c, h, w), offsets, flipped


def _rotate(x: torch.Tensor, angles: torch.Tensor, flipped: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate each image about its centre by its angle in degrees (counter-clockwise positive), nearest-neighbour,
    corners filled with zeros; then mirror the images in `flipped`, folded into the same sampling grid."""
    rad = angles * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    # affine_grid maps output pixel -> input pixel: the inverse rotation, which for (x right, y down) is this matrix.
    # Mirroring the output reads output column x from -x: the grid's x column changes sign.
    sign = torch.where(flipped, -1.0, 1.0).to(cos.dtype) if flipped is not None else torch.ones_like(cos)
    theta = torch.stack([torch.stack([cos * sign, -sin, zero], 1), torch.stack([sin * sign, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, gr, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * gr + _GRAY[2] * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * a + (1 - factor) * b, clamped to [0, 1]: torchvision's _blend with a per-sample factor."""
    f = factor.view(-1, 1, 1, 1)
    return (b + f * (a - b)).clamp_(0, 1)


BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2


def color_jitter(x: torch.Tensor, g: torch.Generator, strength: float = JITTER):
    """ColorJitter(strength, strength, strength) per sample: three factors in [1 - s, 1 + s], applied in a random
    order per image (torchvision draws the order too). Each op blends the image with a degenerate image: black
    (brightness), the grey mean (contrast), the greyscale image (saturation); one blend per stage, where each image
    picks its own op. Returns (images, factors (N, 3) in B, C, S order, order (N, 3) of op indices)."""
    n = x.shape[0]
    factors = _uniform((n, 3), 1 - strength, 1 + strength, g, x.device)
    order = torch.rand((n, 3), generator=g, device=x.device).argsort(1)
    for stage in range(3):
        op = order[:, stage]
        gray = _grayscale(x)
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        degenerate = torch.where((op == CONTRAST).view(-1, 1, 1, 1), mean, gray)
        degenerate = degenerate.masked_fill((op == BRIGHTNESS).view(-1, 1, 1, 1), 0)
        x = _blend(x, degenerate, factors.gather(1, op[:, None]).squeeze(1))
    return x, factors, order


def random_sharpness(x: torch.Tensor, g: torch.Generator, factor: float = SHARPNESS_FACTOR, p: float = 0.5):
    """torchvision's adjust_sharpness per sample, with prob. p: blend with the image smoothed by the 3x3 kernel
    [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 (PIL's SMOOTH; border pixels kept). The kernel is a 3x3 box sum plus 4x
    the centre, computed as shifted-slice sums (cheaper on CPU than a depthwise conv). Returns (images, applied)."""
    box = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    box = box[..., :-2] + box[..., 1:-1] + box[..., 2:]
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = (box + 4 * x[..., 1:-1, 1:-1]) / 13
    applied = torch.rand(x.shape[0], generator=g, device=x.device) < p
    factors = torch.where(applied, factor, 1.0).to(x.dtype)
    return _blend(x, degenerate, factors), applied


def paper(x: torch.Tensor, g: torch.Generator, record: dict | None = None) -> torch.Tensor:
    x, offsets, flipped = random_crop_flip(x, g)
    if record is not None:
        record.update(offsets=offsets - PAD, flipped=flipped)  # offsets as shifts in [-PAD, PAD]
    return x.float().div_(255)


def report(x: torch.Tensor, g: torch.Generator, record: dict | None = None) -> torch.Tensor:
    x = x.float().div_(255)
    angles = _uniform(x.shape[0], -MAX_ROTATION_DEG, MAX_ROTATION_DEG, g, x.device)
    flipped = _flip_mask(x.shape[0], g, x.device)
    x = _rotate(x, angles, flipped)  # the rotation, then the flip, in one grid_sample
    x, factors, order = color_jitter(x, g)
    x, sharpened = random_sharpness(x, g)
    if record is not None:
        record.update(angles=angles, flipped=flipped, jitter_factors=factors, jitter_order=order, sharpened=sharpened)
    return x


def none(x: torch.Tensor, g: torch.Generator, record: dict | None = None) -> torch.Tensor:
    return x.float().div_(255)


PRESETS = {"paper": paper, "report": report, "none": none}


def apply(preset: str, x: torch.Tensor, g: torch.Generator, record: dict | None = None) -> torch.Tensor:
    return PRESETS[preset](x, g, record)
