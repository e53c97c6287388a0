"""SA: non-local self-attention (seed 001 §2.2, eqs. 1-2).

A = softmax(s * Q^T K) over keys, y = V A^T, with s = 1 as in the paper (``scale="1"``) or 1/sqrt(C')
(``scale="sqrt"``, C' per group). By default it runs through
:func:`torch.nn.functional.scaled_dot_product_attention` on Q, K of width C' and V of width C as they are:
a backend that takes unequal head widths (CUDA's memory-efficient kernel) never stores the n x n map, and
where none does (the fused CPU and flash kernels need one width) SDPA falls back to its reference
computation, which does the same products as the explicit path. Zero-padding Q and K to V's width, the
alternative that keeps the fused kernels, would multiply the Q^T K work by C/C' (8 at ``qk_ratio`` 8), so it
is not done. ``explicit=True`` computes softmax(s Q^T K) as a tensor (the benchmark baseline; also used when
the map is asked for). Both paths cost 2 N n^2 (c' + c) FLOPs (:meth:`SAKernel.flops`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from dcsnas.attention.base import AttentionBlock, AttentionKernel, check_scale, compute_dtype, scale_factor


class SAKernel(AttentionKernel):
    """Softmax attention over all n positions; see :class:`~dcsnas.attention.base.AttentionKernel`."""

    def __init__(self, scale: str = "1", explicit: bool = False) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        self.explicit = bool(explicit)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, size: tuple[int, int], need_weights: bool = False
    ) -> tuple[Tensor, Optional[Tensor]]:
        scale = scale_factor(self.scale, q.shape[1])
        if self.explicit or need_weights:
            logits = (q if scale == 1.0 else q * scale).transpose(1, 2) @ k  # [N, n, n]
            attn = torch.softmax(logits, dim=-1, dtype=compute_dtype(logits))
            y = v @ attn.transpose(1, 2).to(v.dtype)
            return y, attn if need_weights else None
        q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # [N, n, c]: unit last stride
        return F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2), None

    def flops(self, batch: int, qk_channels: int, channels: int, size: tuple[int, int],
              need_weights: bool = False) -> int:
        """Q^T K: 2 N n^2 c'; A V: 2 N n^2 c (either path; the map adds no products)."""
        n = size[0] * size[1]
        return 2 * batch * n * n * (qk_channels + channels)

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}, explicit={self.explicit}"


class SelfAttention(AttentionBlock):
    """SA block: ``x + gamma * fuse(SA(x))`` on [B, C, H, W].

    Args:
        channels: C.
        scale: ``"1"`` (seed 001 eq. 1) or ``"sqrt"`` (1/sqrt(C')).
        explicit: compute the n x n map as a tensor instead of through SDPA.
        **common: ``groups``, ``qk_ratio``, ``return_attention`` (see ``AttentionBlock``).
    """

    def __init__(self, channels: int, scale: str = "1", explicit: bool = False, **common) -> None:
        super().__init__(channels, SAKernel(scale, explicit), **common)
