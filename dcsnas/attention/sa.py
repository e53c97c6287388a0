"""SA: non-local self-attention (seed 001 §2.2, eqs. 1-2).

A = softmax(s * Q^T K) over keys, y = V A^T, with s = 1 as in the paper (``scale="1"``) or 1/sqrt(C')
(``scale="sqrt"``, C' per group). By default it runs through
:func:`torch.nn.functional.scaled_dot_product_attention`, whose fused kernels never store the n x n map.
The fused CPU and CUDA flash kernels need one head width for Q, K and V, so Q and K (C' channels) are
zero-padded to V's width: zero channels leave every dot product Q_i^T K_j unchanged. ``explicit=True``
computes softmax(Q^T K) as a tensor (the benchmark baseline; also used when the map is asked for).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from dcsnas.attention.base import AttentionBlock, AttentionKernel, option_error

SCALES = ("1", "sqrt")


def check_scale(scale) -> str:
    """Validate the ``scale`` option; the number 1 (from YAML) means ``"1"``."""
    if scale in SCALES:
        return scale
    if scale == 1 and not isinstance(scale, bool):
        return "1"
    raise option_error("scale", scale, "'1' (as in the paper) or 'sqrt' (1/sqrt(C'))")


def _tokens_first(t: Tensor, width: int) -> Tensor:
    """[N, c, n] -> contiguous [N, n, width], zero-padded (fused SDPA kernels need a unit last stride)."""
    t = t.transpose(1, 2)
    return F.pad(t, (0, width - t.shape[-1])) if t.shape[-1] < width else t.contiguous()


class SAKernel(AttentionKernel):
    """Softmax attention over all n positions; see :class:`~dcsnas.attention.base.AttentionKernel`."""

    def __init__(self, scale: str = "1", explicit: bool = False) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        self.explicit = bool(explicit)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, size: tuple[int, int], need_weights: bool = False
    ) -> tuple[Tensor, Optional[Tensor]]:
        scale = 1.0 if self.scale == "1" else 1.0 / math.sqrt(q.shape[1])
        if self.explicit or need_weights:
            logits = (q if scale == 1.0 else q * scale).transpose(1, 2) @ k  # [N, n, n]
            attn = torch.softmax(logits, dim=-1, dtype=torch.float32)
            y = v @ attn.transpose(1, 2).to(v.dtype)
            return y, attn if need_weights else None
        width = max(q.shape[1], v.shape[1])
        q, k, v_padded = (_tokens_first(t, width) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v_padded, scale=scale)  # [N, n, width]
        return y.transpose(1, 2)[:, : v.shape[1]], None

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}, explicit={self.explicit}"


class SelfAttention(AttentionBlock):
    """SA block: ``x + gamma * fuse(SA(x))`` on [B, C, H, W].

    Args:
        channels: C.
        scale: ``"1"`` (seed 001 eq. 1) or ``"sqrt"`` (1/sqrt(C')).
        explicit: compute the n x n map as a tensor instead of through SDPA.
        **common: ``groups``, ``qk_ratio``, ``return_attention``, ``keep_output`` (see ``AttentionBlock``).
    """

    def __init__(self, channels: int, scale: str = "1", explicit: bool = False, **common) -> None:
        super().__init__(channels, SAKernel(scale, explicit), **common)
