"""Exact softmax attention a block of query rows at a time, without keeping the weights for backward.

:func:`query_chunked_attention` computes y = V softmax(s Q^T K)^T for queries Q [N, c', r], keys K [N, c', n]
and values V [N, c, n]: each block of query rows gets its softmax over all n keys (so the result is the
formula's), and only that block of weights, [N, rows, n], exists at a time. Autograd would keep every
block's weights for the backward pass (the whole r x n map); the autograd function here saves Q, K and V
only and recomputes each block's weights in backward (2 N rows n c' FLOPs, c/c' times less than the
forward's V A^T), then applies softmax's gradient to them. It is written by hand because torch has no CPU
kernel for it (SDPA's fused CPU kernel needs Q, K and V of one width) and ``torch.utils.checkpoint`` per
block would also recompute the V A^T products. SA uses it with r = n; CSALR and CSA use it for their
landmark outputs (queries: landmarks) and for their outputs (keys: landmarks).

Softmaxes run in :func:`~dcsnas.attention.base.compute_dtype`, products with V in V's dtype.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dcsnas.attention.base import chunk_rows, compute_dtype


def _chunk_weights(q_scaled: Tensor, k: Tensor, rows: slice) -> Tensor:
    """softmax(s Q_rows^T K) over keys, [N, rows, n], in :func:`compute_dtype`; ``q_scaled`` = s Q."""
    logits = q_scaled[:, :, rows].transpose(1, 2) @ k
    return torch.softmax(logits, dim=-1, dtype=compute_dtype(logits))


def _attend(q: Tensor, k: Tensor, v: Tensor, scale: float, chunk: int) -> Tensor:
    """The forward pass: V softmax(s Q^T K)^T [N, c, r], one block of ``chunk`` query rows at a time."""
    q_scaled = q if scale == 1.0 else q * scale
    if chunk >= q.shape[2]:
        return v @ _chunk_weights(q_scaled, k, slice(None)).transpose(1, 2).to(v.dtype)
    y = v.new_empty(v.shape[0], v.shape[1], q.shape[2])  # filled by column blocks
    for start in range(0, q.shape[2], chunk):
        rows = slice(start, start + chunk)
        y[:, :, rows] = v @ _chunk_weights(q_scaled, k, rows).transpose(1, 2).to(v.dtype)
    return y


class _QueryChunkedAttention(torch.autograd.Function):
    """y = V softmax(s Q^T K)^T one chunk of query rows at a time; saves Q, K, V only (no map)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float, chunk: int) -> Tensor:
        ctx.save_for_backward(q, k, v)
        ctx.scale, ctx.chunk = scale, chunk
        return _attend(q, k, v, scale, chunk)

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
    """Exact softmax attention ``v`` softmax(s q^T k)^T for ``q`` [N, c', r], ``k`` [N, c', n], ``v`` [N, c, n]
    -> [N, c, r] (a new tensor), ``chunk`` query rows at a time (default: :func:`~dcsnas.attention.base.chunk_rows`
    of V's size): the weights held at once are [N, chunk, n], in forward and backward."""
    chunk = int(chunk or chunk_rows(q.shape[2], k.shape[2], v.shape[1] * v.shape[2]))
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if not needs_grad or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return _attend(q, k, v, float(scale), chunk)  # plain operators: nothing to save, and exportable
    return _QueryChunkedAttention.apply(q, k, v, float(scale), chunk)
