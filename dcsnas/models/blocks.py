"""Building blocks shared by the DCS-DNAS supernet (:mod:`dcsnas.nas`) and the networks derived from it
(:mod:`dcsnas.models.searched`): a MobileNetV2-like skeleton of a stem conv, stages of candidate ops and a
1×1 head conv.

Candidate ops are named ``ir_k{k}_e{e}`` (MobileNetV2 inverted residual with a k×k depthwise kernel and
expansion e) and ``skip`` (the identity, only where the input and output shapes agree).
"""

from __future__ import annotations

import re

import torch
from torch import nn

SKIP = "skip"
_IR = re.compile(r"ir_k(\d+)_e(\d+)")


class ConvBNAct(nn.Sequential):
    """k×k conv (no bias, padding k//2) → BatchNorm → ReLU6 (``act=False``: no activation).
    ``[B, C_in, H, W]`` → ``[B, C_out, ⌊(H-1)/s⌋+1, ⌊(W-1)/s⌋+1]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True):
        layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(out_channels)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al. 2018): 1×1 expand to e·C_in (absent when e = 1) → k×k depthwise
    with stride s → 1×1 linear projection to C_out; plus the input when s = 1 and C_in = C_out.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        stride: s of the depthwise conv.
        kernel: k (odd).
        expansion: e, hidden channels e·C_in.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = ConvBNAct(in_channels, hidden) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBNAct(hidden, out_channels, act=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


def parse_op(name: str) -> tuple[int, int] | None:
    """``'ir_k5_e6'`` → ``(5, 6)`` (kernel, expansion); ``'skip'`` → ``None``. Raises ``ValueError`` for
    any other name, an even kernel or an expansion below 1."""
    if name == SKIP:
        return None
    match = _IR.fullmatch(name)
    if match is None:
        raise ValueError(f"unknown op {name!r}; expected 'skip' or 'ir_k<kernel>_e<expansion>' (e.g. ir_k3_e6)")
    kernel, expansion = int(match[1]), int(match[2])
    if kernel % 2 == 0 or expansion < 1:
        raise ValueError(f"op {name!r}: the kernel must be odd and the expansion >= 1")
    return kernel, expansion


def skip_allowed(in_channels: int, out_channels: int, stride: int) -> bool:
    return stride == 1 and in_channels == out_channels


def build_op(name: str, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The candidate op ``name`` (see :func:`parse_op`) as a standalone module."""
    spec = parse_op(name)
    if spec is None:
        if not skip_allowed(in_channels, out_channels, stride):
            raise ValueError(f"op 'skip' needs stride 1 and equal widths, got {in_channels}→{out_channels}, "
                             f"stride {stride}")
        return nn.Identity()
    return InvertedResidual(in_channels, out_channels, stride, *spec)


def stem(channels: int, stride: int) -> ConvBNAct:
    """3×3 conv from RGB to ``channels``."""
    return ConvBNAct(3, channels, 3, stride)


def conv_head(in_channels: int, out_channels: int) -> ConvBNAct:
    """The final 1×1 conv (MobileNetV2's 1280-channel layer)."""
    return ConvBNAct(in_channels, out_channels)


def conv_output_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Spatial size after a conv with padding k//2 and ``stride``: ``⌊(n-1)/s⌋+1`` per side."""
    return tuple((n - 1) // stride + 1 for n in size)
