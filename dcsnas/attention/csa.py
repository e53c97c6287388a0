"""CSA: compressed self-attention (seed 000, Chen et al., AAAI 2020; DESIGN §3).

M base vectors b_m by average pooling K to an H' x W' grid (M = H'W'), then

- base attention maps   alpha_m(j) = softmax_j(b_m^T K_j)          [M, n]
- base outputs          o_m = sum_j alpha_m(j) V_j                  [M, C]
- outputs               y_i = sum_m softmax_m(Q_i^T b_m) o_m        [n, C]

so the reconstructed map is A = S alpha with S_im = softmax_m(Q_i^T b_m): a product of two row-stochastic
matrices, whose rows sum to 1. Cost O(n M (C' + C)). The formulas use pooled K only (the base vectors);
V enters through the base outputs, so V itself is not pooled. Softmaxes run in fp32.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from dcsnas.attention.base import AttentionBlock
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
    """

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, size: tuple[int, int], need_weights: bool = False
    ) -> tuple[Tensor, Optional[Tensor]]:
        base = pool_landmarks(k, size, landmark_grid(self.landmarks, size))  # [N, c', M]
        alpha = torch.softmax(base.transpose(1, 2) @ k, dim=-1, dtype=torch.float32)  # [N, M, n]
        weights = torch.softmax(q.transpose(1, 2) @ base, dim=-1, dtype=torch.float32)  # [N, n, M]
        base_out = v @ alpha.transpose(1, 2).to(v.dtype)  # o^T: [N, c, M]
        y = base_out @ weights.transpose(1, 2).to(v.dtype)  # [N, c, n]
        return y, (weights @ alpha if need_weights else None)


class CompressedSelfAttention(AttentionBlock):
    """CSA block: ``x + gamma * fuse(CSA(x))`` on [B, C, H, W].

    Args:
        channels: C.
        landmarks: base vectors per group, a count M (default 96) or a grid (H', W').
        **common: ``groups``, ``qk_ratio``, ``return_attention``, ``keep_output`` (see ``AttentionBlock``).
    """

    def __init__(self, channels: int, landmarks: Landmarks = 96, **common) -> None:
        super().__init__(channels, CSAKernel(landmarks), **common)
