"""``tiny_fpn``'s body: a small GroupNorm CNN both engines put under their own FPN.

Plain torch: the torchvision engine wraps it with torchvision's ``FeaturePyramidNetwork``, the
detectron2 engine as a ``Backbone`` under detectron2's ``FPN``. One definition, so both engines
train the same network.

A ResNet-18 is the smallest backbone the engines build otherwise, and its forward pass alone
takes about a second per batch of four 160 px images on a shared CPU core; this one is ~10x
cheaper and trains the synthetic demo from scratch in minutes.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

__all__ = ["TINY_STRIDES", "TINY_WIDTHS", "TinyBody", "group_norm"]

TINY_WIDTHS = (32, 64, 96, 128)  # channels of res2..res5
TINY_STRIDES = (4, 8, 16, 32)  # their strides in input pixels


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 16 groups (trains from scratch at any batch size, unlike BatchNorm)."""
    return nn.GroupNorm(math.gcd(channels, 16), channels)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), group_norm(cout), nn.ReLU(inplace=True)
    )


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            group_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu(x + self.body(x))


class TinyBody(nn.Module):
    """A 4-stage GroupNorm CNN: ``(B, C, H, W)`` float → ``{"res2": .., "res5": ..}``.

    Stage ``res{i+2}`` has :data:`TINY_WIDTHS` ``[i]`` channels at stride :data:`TINY_STRIDES`
    ``[i]`` (a 4x stem, then one strided conv and one residual block per stage). The output is
    an ordered dict, finest level first, as both engines' FPNs expect.
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = TINY_WIDTHS) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.strides = tuple(4 * 2**i for i in range(len(widths)))
        self.names = tuple(f"res{i + 2}" for i in range(len(widths)))
        self.stem = nn.Sequential(_conv(in_channels, 24, 2), _conv(24, widths[0], 2))
        cin = widths[0]
        for i, (name, width) in enumerate(zip(self.names, widths, strict=True)):
            self.add_module(
                name, nn.Sequential(_conv(cin, width, 1 if i == 0 else 2), _Residual(width))
            )
            cin = width

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        for name in self.names:
            x = getattr(self, name)(x)
            out[name] = x
        return out
