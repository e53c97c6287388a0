"""The contract shared by every attention module (DESIGN §3).

An :class:`AttentionBlock` maps ``x`` [B, C, H, W] to ``x + gamma * fuse(attend(Q, K, V))``:

- Q, K = 1x1 convs to C' = C / qk_ratio channels, V = 1x1 conv to C channels. With ``groups`` = G the
  feature map is split into G channel groups and attention runs in each group independently (seed 001
  §3.2, multi-head form), so the projections are grouped 1x1 convs and the groups are fused by a 1x1 conv
  (no fusion conv when G = 1, as in seed 001 eq. 2). The three projections are one grouped 1x1 conv,
  ``qkv``, whose output channels are, group after group, the group's Q, K and V channels (one pass over x
  and one input gradient instead of three). State dicts of the former layout, three convs ``query``,
  ``key`` and ``value``, load into it (:meth:`AttentionBlock._load_from_state_dict`).
- ``gamma`` is a learnable scalar initialised to 0: the block is the identity at initialisation.
- The attention itself is an :class:`AttentionKernel`: a parameter-free functional core that takes Q, K,
  V of every (sample, group) pair, so DCS can gate Q and K and reuse any kernel (SA, CSA, CSALR).

**Memory.** No kernel forms an n x n map unless it is asked for; weights of n x n (SA) or n x m (CSALR) per
item are formed :func:`chunk_rows` rows at a time, so that without gradients the peak holds one chunk.

**Precision.** Kernels compute softmaxes and solves in ``promote_types(dtype, float32)`` (:func:`compute_dtype`):
float64 stays float64, half precision (also under autocast) is raised to float32.

**FLOPs** (:meth:`AttentionKernel.forward_flops`, :meth:`AttentionBlock.flops`): analytic formulas of the
shapes, in the convention ``torch.utils.flop_counter`` applies to the rest of the network, so that
attention and convolutions are charged alike: 2 FLOPs per multiply-add of a matrix product or convolution
(biases excluded); an LU solve of an m x m system with r right-hand sides 2m^3/3 + 2m^2 r; elementwise
work (softmax, scaling, masking, pooling, the indicator and identity additions, the residual) is free,
like BatchNorm and activations elsewhere. :func:`dcsnas.utils.flops.count_flops` uses the kernels'
formulas instead of the counter, whose count of fused attention kernels depends on device and torch.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from dcsnas.errors import ConfigError

Shape = Sequence[int]


SCALES = ("1", "sqrt")

MIN_CHUNK_ROWS = 8
"""The fewest rows :func:`chunk_rows` gives a block (fewer would make many small products)."""


def chunk_rows(rows: int, row_length: int, value_elements: int) -> int:
    """Rows per block of a weight tensor [N, rows, row_length] formed a block at a time: as many as keep a
    block within a quarter of V's size per item (``value_elements`` = c n), at least :data:`MIN_CHUNK_ROWS`,
    at most ``rows``. A block and its logits then add half of V's size to the memory, whatever the batch and
    the groups."""
    return min(rows, max(MIN_CHUNK_ROWS, value_elements // (4 * row_length)))


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def option_error(name: str, value: Any, allowed: str) -> ConfigError:
    """A :class:`ConfigError` naming an attention option, its value and what is allowed."""
    return ConfigError(f"attention option '{name}' = {value!r}: expected {allowed}")


def check_scale(scale: Any) -> str:
    """Validate the ``scale`` option of the logits; the number 1 (from YAML) means ``"1"``."""
    if scale in SCALES:
        return scale
    if scale == 1 and not isinstance(scale, bool):
        return "1"
    raise option_error("scale", scale, "'1' (as in the papers) or 'sqrt' (1/sqrt(C'), C' per group)")


def scale_factor(scale: str, qk_channels: int) -> float:
    """The factor s of the logits s * Q^T K: 1, or 1/sqrt(C') with C' = ``qk_channels`` per group."""
    return 1.0 if scale == "1" else 1.0 / math.sqrt(qk_channels)


def compute_dtype(t: Tensor) -> torch.dtype:
    """The dtype of softmaxes and solves: ``promote_types(t.dtype, float32)``."""
    return torch.promote_types(t.dtype, torch.float32)


def no_autocast(t: Tensor):
    """A context that disables autocast on ``t``'s device (``meta`` has no autocast: a null context)."""
    return contextlib.nullcontext() if t.device.type == "meta" else torch.autocast(t.device.type, enabled=False)


def _fuse_rows(parts: Sequence[Tensor], groups: int) -> Tensor:
    """Output-channel tensors (weights or biases) of grouped convs fused into one grouped conv's: group g
    of the result holds group g of every part, in order."""
    return torch.cat([p.unflatten(0, (groups, -1)) for p in parts], 1).flatten(0, 1)


def _fused_projection(channels: int, groups: int, out_channels: Sequence[int]) -> nn.Conv2d:
    """The grouped 1x1 conv of Q, K and V (``out_channels`` = C', C', C), initialised with the values that
    three separate convs built in that order draw: the same distribution (each has fan-in C/G) and the same
    random stream, so a seed gives the initial weights it gave to the former three-conv layout."""
    parts = [nn.Conv2d(channels, n, 1, groups=groups) for n in out_channels]
    fused = nn.utils.skip_init(nn.Conv2d, channels, sum(out_channels), 1, groups=groups,
                               device=parts[0].weight.device, dtype=parts[0].weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(_fuse_rows([p.weight for p in parts], groups))
        fused.bias.copy_(_fuse_rows([p.bias for p in parts], groups))
    return fused


class AttentionKernel(nn.Module, ABC):
    """Parameter-free attention core on per-group tensors, channels first.

    Args of ``forward``: ``q``, ``k`` [N, c', n]; ``v`` [N, c, n] with N = B*G and n = H*W; ``size`` = (H, W);
    ``need_weights``. Returns ``y`` [N, c, n] and, if ``need_weights``, the (reconstructed) attention map
    [N, n, n] in :func:`compute_dtype` (row i = weights of position i over all positions), else ``None``.
    """

    @abstractmethod
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, size: tuple[int, int], need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        ...

    def forward_flops(self, q: Shape, k: Shape, v: Shape, size: tuple[int, int], need_weights: bool = False) -> int:
        """FLOPs of ``forward`` on tensors of these shapes (module docstring's convention); shapes it cannot
        take are a :class:`ConfigError` naming the kernel, the shapes and the limit."""
        q, k, v, size = tuple(q), tuple(k), tuple(v), tuple(size)
        if not (len(q) == len(k) == len(v) == 3 and len(size) == 2) or q != k or q[0] != v[0] or q[2] != v[2] \
                or q[2] != size[0] * size[1] or min(*q, *v) < 1:
            raise ConfigError(
                f"{type(self).__name__} FLOPs: shapes q {list(q)}, k {list(k)}, v {list(v)} on a map {list(size)}: "
                "expected q = k = [N, c', n], v = [N, c, n] with n = H*W and positive sizes")
        return int(self.flops(q[0], q[1], v[1], size, bool(need_weights)))

    @abstractmethod
    def flops(self, batch: int, qk_channels: int, channels: int, size: tuple[int, int],
              need_weights: bool = False) -> int:
        """FLOPs of ``forward`` for N = ``batch`` (sample, group) pairs, c' = ``qk_channels`` and c = ``channels``
        per group, on a map of ``size`` = (H, W)."""


class Attended(NamedTuple):
    """Everything an :class:`AttentionBlock` computes on ``x`` [B, C, H, W] (:meth:`AttentionBlock.attend`)."""

    out: Tensor
    """x + gamma * branch, [B, C, H, W]."""
    weights: Tensor | None
    """The attention map [B, G, n, n] when asked for, else ``None``."""
    branch: Tensor
    """fuse(attend(Q, K, V)), the attention output before gamma and the residual, [B, C, H, W] (the input of a
    deep-supervision head, seed 001 §3.3)."""
    dcs_kept: Tensor | None
    """DCS blocks: the fraction of query/key channels the gate kept (0-dim); ``None`` for the others."""


class AttentionBlock(nn.Module):
    """Gated residual attention block on [B, C, H, W].

    ``forward(x, need_weights=None)`` returns ``(out, weights)`` as :class:`torch.nn.MultiheadAttention`
    does: ``out`` [B, C, H, W] and the map [B, G, n, n], or ``None`` unless asked for. A network that needs
    more of the block (the branch of deep supervision, DCS statistics) calls :meth:`attend`.

    Args:
        channels: C, input and output channels.
        kernel: the attention core.
        groups: G channel groups (heads), attended independently and fused by a 1x1 conv.
        qk_ratio: C' = C / qk_ratio query/key channels (C'/G per group, at least 1).
        return_attention: the default of ``need_weights`` (visualisation only: it materialises the n x n map).
    """

    def __init__(
        self,
        channels: int,
        kernel: AttentionKernel,
        groups: int = 1,
        qk_ratio: float = 8,
        return_attention: bool = False,
    ) -> None:
        super().__init__()
        if not is_positive_int(channels):
            raise option_error("channels", channels, "a positive int")
        if not is_positive_int(groups) or channels % groups:
            raise option_error("groups", groups, f"a positive int that divides channels = {channels}")
        if isinstance(qk_ratio, bool) or not isinstance(qk_ratio, (int, float)) or qk_ratio <= 0:
            raise option_error("qk_ratio", qk_ratio, "a positive number (C' = C / qk_ratio)")
        qk_per_group = int(channels // groups / qk_ratio)
        if qk_per_group < 1:
            raise option_error(
                "qk_ratio", qk_ratio,
                f"a value giving C' >= 1 query/key channel per group (channels = {channels}, groups = {groups}: "
                f"qk_ratio <= {channels // groups})",
            )
        self.channels = channels
        self.groups = groups
        self.qk_channels = qk_per_group * groups
        self.return_attention = bool(return_attention)
        self.qkv = _fused_projection(channels, groups, (self.qk_channels, self.qk_channels, channels))
        self.kernel = kernel
        self.fuse = nn.Conv2d(channels, channels, 1) if groups > 1 else nn.Identity()
        self.gamma = nn.Parameter(torch.zeros(1))

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Q, K [B*G, C'/G, n] and V [B*G, C/G, n] of ``x`` [B, C, H, W].

        The ``qkv`` conv is applied as one batched product per (sample, group), bias included: the same sums
        as the grouped 1x1 conv, which on the CPU ran group by group and concatenated the results."""
        batch, channels, height, width = x.shape
        g = self.groups
        weight = self.qkv.weight.view(1, g, -1, channels // g).expand(batch, -1, -1, -1).flatten(0, 1)
        bias = self.qkv.bias.view(1, g, -1, 1).expand(batch, -1, -1, -1).flatten(0, 1)
        qkv = torch.baddbmm(bias, weight, x.reshape(batch * g, channels // g, height * width))
        qk = self.qk_channels // g
        return qkv.split((qk, qk, channels // g), dim=1)  # one gradient buffer for the three, not three

    def select_channels(self, x: Tensor, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Q and K [B*G, C'/G, n] as the kernel gets them, and the fraction of their channels kept (0-dim;
        ``None``: no selection). The base block keeps them all; DCS gates them."""
        return q, k, None

    def attend(self, x: Tensor, need_weights: bool | None = None) -> Attended:
        """``x`` [B, C, H, W] -> :class:`Attended`; ``need_weights`` (``None``: ``return_attention``) asks for
        the map."""
        need_weights = self.return_attention if need_weights is None else need_weights
        batch, channels, height, width = x.shape
        q, k, v = self.project(x)
        q, k, kept = self.select_channels(x, q, k)
        y, attn = self.kernel(q, k, v, (height, width), need_weights)
        del q, k, v  # freed before the fusion conv
        y = self.fuse(y.reshape(batch, channels, height, width))
        weights = attn.unflatten(0, (batch, self.groups)) if need_weights else None
        return Attended(torch.addcmul(x, self.gamma, y), weights, y, kept)

    def forward(self, x: Tensor, need_weights: bool | None = None) -> tuple[Tensor, Tensor | None]:
        """``x`` [B, C, H, W] -> ``(out, weights)``: out = x + gamma * fuse(attend(Q, K, V)) [B, C, H, W], and
        the map [B, G, n, n] when ``need_weights`` (``None``: ``return_attention``), else ``None``."""
        attended = self.attend(x, need_weights)
        return attended.out, attended.weights

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Also loads the former layout: ``query``, ``key``, ``value`` convs fused into ``qkv`` (per group:
        Q, K, V rows)."""
        old = [f"{prefix}{name}.{kind}" for kind in ("weight", "bias") for name in ("query", "key", "value")]
        if f"{prefix}qkv.weight" not in state_dict and all(key in state_dict for key in old):
            for kind in ("weight", "bias"):
                parts = [state_dict.pop(f"{prefix}{name}.{kind}") for name in ("query", "key", "value")]
                state_dict[f"{prefix}qkv.{kind}"] = _fuse_rows(parts, self.groups)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def flops(self, input_shape: Shape) -> int:
        """Forward FLOPs on an input of ``input_shape`` = (B, C, H, W): the projections, the kernel
        (:meth:`AttentionKernel.flops`, with the map if ``return_attention``) and the fusion conv, in the module
        docstring's convention."""
        batch, channels, height, width = input_shape
        if channels != self.channels:
            raise ConfigError(f"{type(self).__name__} FLOPs: input shape {list(input_shape)} has {channels} "
                              f"channels, the module expects {self.channels}")
        n, g = height * width, self.groups
        projections = 2 * batch * n * (channels // g) * (2 * self.qk_channels + channels)
        fuse = 2 * batch * n * channels * channels if g > 1 else 0
        qk = (batch * g, self.qk_channels // g, n)
        kernel = self.kernel.forward_flops(qk, qk, (batch * g, channels // g, n), (height, width),
                                           self.return_attention)
        return projections + kernel + fuse

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, qk_channels={self.qk_channels}"
