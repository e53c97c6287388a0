"""SA: non-local self-attention (seed 001 §2.2, eqs. 1-2).

A = softmax(s * Q^T K) over keys, y = V A^T, with s = 1 as in the paper (``scale="1"``) or 1/sqrt(C')
(``scale="sqrt"``, C' per group). Q and K have width C', V width C (C' = C/8 at ``qk_ratio`` 8). No path
stores the n x n map unless it is asked for:

- CUDA, where :func:`torch.backends.cuda.can_use_efficient_attention` accepts the shapes:
  :func:`torch.nn.functional.scaled_dot_product_attention` on Q, K and V at their own widths (the
  memory-efficient kernel takes unequal widths and keeps no map);
- otherwise (CPU, and CUDA shapes no fused kernel takes):
  :func:`~dcsnas.attention.chunked.query_chunked_attention`, exact attention over row chunks of queries
  (each chunk's softmax runs over all n keys, so the result is the formula's), which keeps no map for
  backward and holds one chunk of it at a time. No torch kernel does this for unequal widths on the CPU:
  SDPA's fused CPU kernel needs one width and its reference path stores the map; zero-padding Q and K to
  V's width would multiply the Q^T K work by C/C';
- ``explicit=True`` or ``need_weights``: softmax(s Q^T K) as one tensor (the benchmark baseline; the map
  for visualisation). While tracing or exporting, SDPA (one fused graph node).

Every path does the products of the formula, 2 N n^2 (c' + c) FLOPs (:meth:`SAKernel.flops`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from dcsnas.attention.base import AttentionBlock, AttentionKernel, check_scale, compute_dtype, scale_factor
from dcsnas.attention.chunked import query_chunked_attention


def _efficient_sdpa_applies(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether CUDA's memory-efficient SDPA kernel (no stored map) takes these [N, n, c] CUDA tensors."""
    params = torch.backends.cuda.SDPAParams(q[:, None], k[:, None], v[:, None], None, 0.0, False, False)
    return torch.backends.cuda.can_use_efficient_attention(params, False)


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
        if q.is_cuda or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            q_t, k_t, v_t = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # [N, n, c]: unit last stride
            if not q.is_cuda or _efficient_sdpa_applies(q_t, k_t, v_t):
                return F.scaled_dot_product_attention(q_t, k_t, v_t, scale=scale).transpose(1, 2), None
        return query_chunked_attention(q, k, v, scale), None

    def flops(self, batch: int, qk_channels: int, channels: int, size: tuple[int, int],
              need_weights: bool = False) -> int:
        """Q^T K: 2 N n^2 c'; A V: 2 N n^2 c (every path; the map adds no products)."""
        n = size[0] * size[1]
        return 2 * batch * n * n * (qk_channels + channels)

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}, explicit={self.explicit}"


class SelfAttention(AttentionBlock):
    """SA block: ``x + gamma * fuse(SA(x))`` on [B, C, H, W].

    Args:
        channels: C.
        scale: ``"1"`` (seed 001 eq. 1) or ``"sqrt"`` (1/sqrt(C')).
        explicit: compute the n x n map as one tensor (the benchmark baseline).
        **common: ``groups``, ``qk_ratio``, ``return_attention`` (see ``AttentionBlock``).
    """

    def __init__(self, channels: int, scale: str = "1", explicit: bool = False, **common) -> None:
        super().__init__(channels, SAKernel(scale, explicit), **common)
