"""SA: non-local self-attention (seed 001 §2.2, eqs. 1-2).

A = softmax(s * Q^T K) over keys, y = V A^T, with s = 1 as in the paper (``scale="1"``) or 1/sqrt(C')
(``scale="sqrt"``, C' per group). Q and K have width C', V width C (C' = C/8 at ``qk_ratio`` 8). No path
stores the n x n map unless it is asked for:

- CUDA, where :func:`torch.backends.cuda.can_use_efficient_attention` accepts the shapes:
  :func:`torch.nn.functional.scaled_dot_product_attention` on Q, K and V at their own widths (the
  memory-efficient kernel takes unequal widths and keeps no map);
- otherwise (CPU, and CUDA shapes no fused kernel takes): :func:`query_chunked_attention`, exact attention
  over row chunks of queries. Each chunk's softmax runs over all n keys, so the result is the formula's,
  and the map held at once is N x chunk x n (:func:`~dcsnas.attention.base.chunk_rows`). It is written by
  hand because no torch kernel does this for unequal widths on the CPU: SDPA's fused CPU kernel needs one width
  and its reference path stores the map (and autograd keeps it for backward); zero-padding Q and K to V's
  width would multiply the Q^T K work by C/C'; ``torch.utils.checkpoint`` per chunk would also recompute
  V A^T in the backward pass. Its backward pass recomputes each chunk's map from Q and K (2 N chunk n C'
  FLOPs, C/C' times less than the forward's V A^T) and applies softmax's gradient to it;
- ``explicit=True`` or ``need_weights``: softmax(s Q^T K) as one tensor (the benchmark baseline; the map
  for visualisation). While tracing or exporting, SDPA (one fused graph node).

Every path does the products of the formula, 2 N n^2 (c' + c) FLOPs (:meth:`SAKernel.flops`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from dcsnas.attention.base import (
    AttentionBlock,
    AttentionKernel,
    check_scale,
    chunk_rows,
    compute_dtype,
    scale_factor,
)


def _chunk_weights(q_scaled: Tensor, k: Tensor, rows: slice) -> Tensor:
    """softmax(s Q_rows^T K) over keys, [N, rows, n], in :func:`compute_dtype`; ``q_scaled`` = s Q."""
    logits = q_scaled[:, :, rows].transpose(1, 2) @ k
    return torch.softmax(logits, dim=-1, dtype=compute_dtype(logits))


class _QueryChunkedAttention(torch.autograd.Function):
    """y = V softmax(s Q^T K)^T one chunk of query rows at a time; saves Q, K, V only (no map)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float, chunk: int) -> Tensor:
        q_scaled = q if scale == 1.0 else q * scale
        v_t = v.transpose(1, 2)
        y_t = v.new_empty(v.shape[0], q.shape[2], v.shape[1])  # y^T: [N, n, c], filled by row blocks
        for start in range(0, q.shape[2], chunk):
            rows = slice(start, start + chunk)
            y_t[:, rows] = _chunk_weights(q_scaled, k, rows).to(v.dtype) @ v_t
        ctx.save_for_backward(q, k, v)
        ctx.scale, ctx.chunk = scale, chunk
        return y_t.transpose(1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        """Per chunk, with P its weights: dV += dy P, dP = dy^T V, dS = P (dP - rowsum(P dP)) (softmax's
        gradient), dQ = s K dS^T, dK += s Q dS."""
        q, k, v = ctx.saved_tensors
        scale, chunk = ctx.scale, ctx.chunk
        q_scaled = q if scale == 1.0 else q * scale
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        dq = torch.empty_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dv = torch.zeros_like(v) if need_v else None
        for start in range(0, q.shape[2], chunk):
            rows = slice(start, start + chunk)
            p = _chunk_weights(q_scaled, k, rows)  # [N, r, n]
            dy_rows = dy[:, :, rows]
            if need_v:
                dv.baddbmm_(dy_rows, p.to(v.dtype))
            if not (need_q or need_k):
                continue
            ds = (dy_rows.transpose(1, 2) @ v).to(p.dtype)  # dP: [N, r, n]
            ds -= (ds * p).sum(-1, keepdim=True)
            ds *= p  # dS
            ds = ds.to(q.dtype)
            if need_q:
                dq[:, :, rows] = k @ ds.transpose(1, 2)
            if need_k:
                dk.baddbmm_(q_scaled[:, :, rows], ds)
        if need_q and scale != 1.0:
            dq *= scale
        return dq, dk, dv, None, None


def query_chunked_attention(q: Tensor, k: Tensor, v: Tensor, scale: float = 1.0,
                            chunk: Optional[int] = None) -> Tensor:
    """Exact softmax attention ``v`` softmax(s q^T k)^T for ``q``, ``k`` [N, c', n], ``v`` [N, c, n] -> [N, c, n],
    ``chunk`` query rows at a time (default: :func:`~dcsnas.attention.base.chunk_rows`): the weights held at
    once are [N, chunk, n], in forward and backward. Softmaxes in :func:`compute_dtype`, products with V in
    V's dtype."""
    chunk = chunk or chunk_rows(q.shape[2], k.shape[2], v.shape[1] * v.shape[2])
    return _QueryChunkedAttention.apply(q, k, v, float(scale), int(chunk))


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
