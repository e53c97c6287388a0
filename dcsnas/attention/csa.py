"""CSA: compressed self-attention (seed 000, Chen et al., AAAI 2020; DESIGN §3).

M base vectors b_m by average pooling K to an H' x W' grid (M = H'W'), then

- base attention maps   alpha_m(j) = softmax_j(b_m^T K_j)          [M, n]
- base outputs          o_m = sum_j alpha_m(j) V_j                  [M, C]
- outputs               y_i = sum_m softmax_m(Q_i^T b_m) o_m        [n, C]

so the reconstructed map is A = S alpha with S_im = softmax_m(Q_i^T b_m): a product of two row-stochastic
matrices, whose rows sum to 1. Both logits are multiplied by ``scale`` (1 as in the papers, or 1/sqrt(C')).

Base vectors come from pooled K only, and V is not pooled. DESIGN §3 says "average-pooling K (and V)";
seed 000 says only that a few base attention maps are computed for a few base feature vectors and that
each output is a weighted average of the outputs computed from those maps. The base vectors are what the
maps are computed *for*, and a map alpha_m(j) over the n positions must be applied to the n values V_j
(o_m = sum_j alpha_m(j) V_j, DESIGN's own formula): pooled V would be the base output of a uniform map,
not of alpha_m. So V enters, unpooled, through the base outputs; pooling it would change the formula.

Cost O(n M (C' + C)); softmaxes in ``promote_types(dtype, float32)``, products with V in V's dtype. Both
products are softmax attentions (o^T = V alpha^T with the base vectors as queries; y = o^T S^T with them as
keys), computed by :func:`~dcsnas.attention.chunked.query_chunked_attention`: alpha and S are formed a
block of rows at a time and not kept for backward, so their memory does not grow with the groups.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from dcsnas.attention.base import AttentionBlock, chunk_rows, compute_dtype, scale_factor
from dcsnas.attention.chunked import query_chunked_attention
from dcsnas.attention.landmarks import (
    LandmarkKernel,
    Landmarks,
    landmark_grid,
    pool_landmarks,
)


class CSAKernel(LandmarkKernel):
    """Attention through M pooled base vectors; see :class:`~dcsnas.attention.base.AttentionKernel`.

    Args:
        landmarks: M base vectors per group (grid fitted to the map) or a grid (H', W').
        scale: ``"1"`` or ``"sqrt"`` (1/sqrt(C')).
    """

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, size: tuple[int, int], need_weights: bool = False
    ) -> tuple[Tensor, Optional[Tensor]]:
        base = pool_landmarks(k, size, landmark_grid(self.landmarks, size))  # [N, c', M]
        scale = scale_factor(self.scale, q.shape[1])
        base = base if scale == 1.0 else base * scale  # s b_m enters both logits
        base_out_t = query_chunked_attention(base, k, v)  # o^T = V alpha^T: [N, c, M], alpha by blocks of rows
        step = chunk_rows(q.shape[2], base.shape[2], v.shape[1] * q.shape[2])
        y = query_chunked_attention(q, base, base_out_t, chunk=step)  # o^T S^T: [N, c, n], S by blocks
        if not need_weights:
            return y, None
        dtype = compute_dtype(q)
        alpha = torch.softmax(base.transpose(1, 2) @ k, dim=-1, dtype=dtype)
        return y, torch.softmax(q.transpose(1, 2) @ base, dim=-1, dtype=dtype) @ alpha

    def flops(self, batch: int, qk_channels: int, channels: int, size: tuple[int, int],
              need_weights: bool = False) -> int:
        """b^T K and Q^T b: 2 N M n c' each; V alpha^T and o S^T: 2 N M n c each; the map S alpha: 2 N n^2 M."""
        grid = self.grid_for_flops(size)
        n, m = size[0] * size[1], grid[0] * grid[1]
        return 4 * batch * m * n * (qk_channels + channels) + (2 * batch * n * n * m if need_weights else 0)


class CompressedSelfAttention(AttentionBlock):
    """CSA block: ``x + gamma * fuse(CSA(x))`` on [B, C, H, W].

    Args:
        channels: C.
        landmarks: base vectors per group, a count M (default 96) or a grid (H', W').
        scale: ``"1"`` (as in the papers) or ``"sqrt"`` (1/sqrt(C')).
        **common: ``groups``, ``qk_ratio``, ``return_attention`` (see ``AttentionBlock``).
    """

    def __init__(self, channels: int, landmarks: Landmarks = 96, scale: str = "1", **common) -> None:
        super().__init__(channels, CSAKernel(landmarks, scale), **common)
