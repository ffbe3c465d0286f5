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


def random_flip(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.rand(x.shape[0], generator=g, device=x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x), mask


def random_crop(x: torch.Tensor, g: torch.Generator, pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad by `pad`, then cut a per-sample random window of the original size (one gather on flat indices).

    Returns the crops and the per-sample (row, col) offsets into the padded image, each in [0, 2 * pad]."""
    n, c, h, w = x.shape
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = F.pad(x, (pad, pad, pad, pad)).view(n, c, hp * wp)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=g, device=x.device)
    window = (torch.arange(h, device=x.device)[:, None] * wp + torch.arange(w, device=x.device)).view(1, 1, h * w)
    start = (offsets[:, 0] * wp + offsets[:, 1]).view(n, 1, 1)
    return padded.gather(2, (start + window).expand(n, c, h * w)).view(n, c, h, w), offsets


def random_rotation(x: torch.Tensor, g: torch.Generator, max_deg: float = MAX_ROTATION_DEG):
    """Rotate each image about its centre by its own angle in [-max_deg, max_deg] (counter-clockwise positive),
    nearest-neighbour, corners filled with zeros: torchvision's RandomRotation(max_deg) on each image."""
    n = x.shape[0]
    angles = _uniform(n, -max_deg, max_deg, g, x.device)
    rad = angles * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    # affine_grid maps output pixel -> input pixel: the inverse rotation, which for (x right, y down) is this matrix.
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False), angles


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
    """torchvision's adjust_sharpness per sample: blend with a 3x3 smoothed image (borders kept), with prob. p.
    Returns (images, applied mask)."""
    c = x.shape[1]
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device, dtype=x.dtype) / 13
    smooth = F.conv2d(x, kernel.expand(c, 1, 3, 3), groups=c)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    applied = torch.rand(x.shape[0], generator=g, device=x.device) < p
    factors = torch.where(applied, factor, 1.0).to(x.dtype)
    return _blend(x, degenerate, factors), applied


def paper(x: torch.Tensor, g: torch.Generator, record: dict | None = None) -> torch.Tensor:
    x, offsets = random_crop(x, g)
    x, flipped = random_flip(x, g)
    if record is not None:
        record.update(offsets=offsets - PAD, flipped=flipped)  # offsets as shifts in [-PAD, PAD]
    return x.float().div_(255)


def report(x: torch.Tensor, g: torch.Generator, record: dict | None = None) -> torch.Tensor:
    x = x.float().div_(255)
    x, angles = random_rotation(x, g)
    x, flipped = random_flip(x, g)
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
