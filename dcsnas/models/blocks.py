"""Building blocks shared by the DCS-DNAS supernet (:mod:`dcsnas.nas`) and the networks derived from it
(:mod:`dcsnas.models.searched`): a MobileNetV2-like skeleton of a stem conv, stages of candidate ops and a
1×1 head conv.

Candidate ops are named ``ir_k{k}_e{e}`` (MobileNetV2 inverted residual with a k×k depthwise kernel and
expansion e) and ``skip`` (the identity, only where the input and output shapes agree).

A slot of a network holds a fixed module or a :class:`Mixed` one (a choice of the supernet): the model runs
both (:class:`Stage`, :class:`~dcsnas.models.builder.ReIDModel`), and :func:`child_of` asks each slot for the
module of an architecture, with its weights, so the derived network's weights come from the slots.
"""

from __future__ import annotations

import copy
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Optional

import torch
import torch.nn.functional as F
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

    def leading(self, x: torch.Tensor, in_channels: int, channels: int, kernel: int | None = None) -> torch.Tensor:
        """The layer with only its first ``channels`` filters, reading the ``in_channels`` channels of ``x`` (the
        leading ones of its input), and with the centre ``kernel``×``kernel`` of its kernel (``None``: all of
        it; padding kernel//2); BN statistics update the same leading entries. (Channel counts are arguments,
        not read from ``x.shape``, so the forward traces.)"""
        conv, bn = self[0], self[1]
        groups = channels if conv.groups > 1 else 1  # depthwise stays depthwise
        weight = conv.weight[:channels, :in_channels // groups]
        padding = conv.padding
        if kernel is not None and kernel != conv.kernel_size[0]:
            start = (conv.kernel_size[0] - kernel) // 2
            weight, padding = weight[:, :, start:start + kernel, start:start + kernel], kernel // 2
        y = F.conv2d(x, weight, None, conv.stride, padding, 1, groups)
        momentum = 0.0
        if bn.training:  # as nn.BatchNorm2d: momentum None is the cumulative average
            bn.num_batches_tracked.add_(1)
            momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        y = F.batch_norm(y, bn.running_mean[:channels], bn.running_var[:channels], bn.weight[:channels],
                         bn.bias[:channels], bn.training, momentum, bn.eps)
        return F.relu6(y) if len(self) > 2 else y


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


class Mixed(nn.Module, ABC):
    """A slot that holds a choice. ``forward(x, weights, single_path)``: ``weights`` maps every choice key to its
    ``[n]`` architecture weights of the pass, ``single_path`` says they are one-hot (only the chosen candidates
    run). :meth:`child` gives the module of one architecture."""

    @abstractmethod
    def child(self, indices: Mapping[str, int]) -> Optional[nn.Module]:
        """The module this slot is in the architecture taking option ``indices[key]`` of every choice, with its
        weights (a copy); ``None``: no module (e.g. no attention)."""


def child_of(module: nn.Module, indices: Mapping[str, int]) -> Optional[nn.Module]:
    """The module of a slot in the architecture ``indices``: a :class:`Mixed` slot's :meth:`~Mixed.child`, a copy
    of a fixed one."""
    return module.child(indices) if isinstance(module, Mixed) else copy.deepcopy(module)


class Stage(nn.Sequential, Mixed):
    """A stage whose slots may be mixed: ``forward(x, weights, single_path)`` hands the architecture weights to
    the mixed slots and ``x`` alone to the fixed ones; its child is the ``nn.Sequential`` of its slots'
    children (the state-dict keys are those of the slots' positions in both)."""

    def forward(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor], single_path: bool) -> torch.Tensor:
        for module in self:
            x = module(x, weights, single_path) if isinstance(module, Mixed) else module(x)
        return x

    def child(self, indices: Mapping[str, int]) -> nn.Sequential:
        return nn.Sequential(*(child_of(module, indices) for module in self))


def with_leading_weights(child: nn.Module, source: nn.Module) -> nn.Module:
    """``child`` holding the leading slices of ``source``'s tensors of the same names (a copy): the weights of a
    narrower module cut from a wider one built alike (width masks keep the leading channels). The spatial
    dimensions of conv kernels (dims 2 and 3 of a 4-D tensor) take the centre instead: a k×k kernel cut from
    a larger one, as :meth:`ConvBNAct.leading` runs it."""
    state = source.state_dict()

    def cut(have: torch.Tensor, want: torch.Size) -> torch.Tensor:
        index = [slice(0, n) for n in want]
        if have.dim() == 4:
            for d in (2, 3):
                start = (have.shape[d] - want[d]) // 2
                index[d] = slice(start, start + want[d])
        return have[tuple(index)].clone()

    child.load_state_dict({name: cut(state[name], value.shape) for name, value in child.state_dict().items()},
                          assign=True)
    return child
