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


def _uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def random_flip(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.rand(x.shape[0], generator=g, device=x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x), mask


def random_crop(x: torch.Tensor, g: torch.Generator, pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad by `pad`, then cut a per-sample random window of the original size (index arithmetic, one gather)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=g, device=x.device)
    rows = (offsets[:, 0:1] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (offsets[:, 1:2] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols], offsets


def random_rotation(x: torch.Tensor, g: torch.Generator, max_deg: float = MAX_ROTATION_DEG):
    """Rotate each image about its centre by its own angle in [-max_deg, max_deg]; corners fill with zeros."""
    n = x.shape[0]
    angles = _uniform(n, -max_deg, max_deg, g, x.device)
    rad = angles * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False), angles


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_GRAY, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x * w).sum(1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor[:, None, None, None] * a + (1 - factor[:, None, None, None]) * b).clamp_(0, 1)


def color_jitter(x: torch.Tensor, g: torch.Generator, strength: float = JITTER) -> torch.Tensor:
    n = x.shape[0]
    lo, hi = 1 - strength, 1 + strength
    x = _blend(x, torch.zeros_like(x), _uniform(n, lo, hi, g, x.device))  # brightness
    mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    x = _blend(x, mean.expand_as(x), _uniform(n, lo, hi, g, x.device))  # contrast
    return _blend(x, _grayscale(x).expand_as(x), _uniform(n, lo, hi, g, x.device))  # saturation


def random_sharpness(x: torch.Tensor, g: torch.Generator, factor: float = SHARPNESS_FACTOR, p: float = 0.5):
    """torchvision's adjust_sharpness per sample: blend with a 3x3 smoothed image (borders kept), with prob. p."""
    c = x.shape[1]
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device, dtype=x.dtype) / 13
    smooth = F.conv2d(x, kernel.expand(c, 1, 3, 3), groups=c)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    apply = torch.rand(x.shape[0], generator=g, device=x.device) < p
    factors = torch.where(apply, torch.full_like(apply, factor, dtype=x.dtype), torch.ones_like(apply, dtype=x.dtype))
    return _blend(x, degenerate, factors)


def paper(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x, _ = random_crop(x, g)
    x, _ = random_flip(x, g)
    return x.float().div_(255)


def report(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x = x.float().div_(255)
    x, _ = random_rotation(x, g)
    x, _ = random_flip(x, g)
    x = color_jitter(x, g)
    return random_sharpness(x, g)


def none(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x.float().div_(255)


PRESETS = {"paper": paper, "report": report, "none": none}


def apply(preset: str, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return PRESETS[preset](x, g)
