"""ResNet-(6n+2) for 32x32 images, as in He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2.

    3x3 conv, 16 filters                              (1 layer)
    stack 1: n blocks of two 3x3 convs, 16 filters    (2n layers, 32x32)
    stack 2: n blocks, 32 filters, first stride 2     (2n layers, 16x16)
    stack 3: n blocks, 64 filters, first stride 2     (2n layers, 8x8)
    global average pool, 10-way linear                (1 layer)

Shortcuts where the shape changes (paper §3.3): option A = identity, subsampled by 2 and zero-padded to the new
channel count (no parameters); option B = 1x1 conv projection + BN; "none" = the plain net (same layers, no
shortcuts). Weights: Kaiming-normal (He et al. 2015), as the paper.

| model      | n   | layers | params (A) | paper test error (Table 6) |
|------------|-----|--------|------------|----------------------------|
| ResNet-20  | 3   | 20     | 0.27 M     | 8.75 %                     |
| ResNet-32  | 5   | 32     | 0.46 M     | 7.51 %                     |
| ResNet-44  | 7   | 44     | 0.66 M     | 7.17 %                     |
| ResNet-56  | 9   | 56     | 0.85 M     | 6.97 %                     |
| ResNet-110 | 18  | 110    | 1.7 M      | 6.43 %                     |

`resnet-study model --n N --shortcut S` prints these counts from the code below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vocab import SHORTCUTS

STACK_WIDTHS = (16, 32, 64)


class PadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels (parameter-free)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; relu(F(x) + shortcut(x)), or relu(F(x)) for the plain net."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.residual = shortcut != "none"
        self.shortcut: nn.Module = nn.Identity()
        if self.residual and (stride != 1 or in_planes != planes):
            if shortcut == "A":
                self.shortcut = PadShortcut(planes - in_planes)
            else:  # "B": projection only where the shape changes, identity elsewhere
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, n: int, shortcut: str = "A", num_classes: int = 10):
        super().__init__()
        if n < 1:
            raise ValueError(f"n must be >= 1 (got {n})")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {', '.join(SHORTCUTS)} (got {shortcut!r})")
        self.n, self.shortcut = n, shortcut
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stacks, in_planes = [], 16
        for i, planes in enumerate(STACK_WIDTHS):
            stacks.append(self._make_stack(in_planes, planes, n, stride=1 if i == 0 else 2, shortcut=shortcut))
            in_planes = planes
        self.stack1, self.stack2, self.stack3 = stacks
        self.fc = nn.Linear(64, num_classes)
        self.apply(_kaiming_init)

    @staticmethod
    def _make_stack(in_planes: int, planes: int, n: int, stride: int, shortcut: str) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride, shortcut)]
        blocks += [BasicBlock(planes, planes, 1, shortcut) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stack3(self.stack2(self.stack1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def _kaiming_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, mode="fan_out" if isinstance(m, nn.Conv2d) else "fan_in", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resnet(n: int, shortcut: str = "A", num_classes: int = 10) -> ResNet:
    """ResNet-(6n+2) with `shortcut` A, B or none (the plain net)."""
    return ResNet(n, shortcut, num_classes)
