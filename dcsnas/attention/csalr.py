"""CSALR: compressed self-attention with low-rank approximation (seed 001 §3.2, eqs. 10-17).

With m landmarks Q', K' (average pooling of Q, K over the patches of an H' x W' grid, m = H'W'):

- B = A_mn = softmax over the n positions of Q'^T K                         (eq. 13)   [m, n]
- A_nm = softmax over the m landmarks of Q^T K' + 1(i in patch j)           (eq. 15)   [n, m]
- A_mm = softmax over the m landmarks of Q'^T K' + I                        (eq. 16)   [m, m]
- W = A_nm A_mm^-1                                                         (eq. 14)   [n, m]
- y = W E with the landmark outputs E = B V^T                               (eq. 17)   [n, C]

The output is evaluated as y = A_nm Z with Z = A_mm^-1 E: E first (m x C), then one LU solve with C
right-hand sides (never an inverse), then A_nm Z (n x C). This is W E by associativity, but the solve has
C/G right-hand sides instead of the n of W A_mm = A_nm (on CPU that solve was the most expensive step).
A_nm is kept as its softmax part S_nm: A_nm Z = S_nm Z + 1 Z, and 1 Z copies row j of Z to the positions
of patch j (:func:`spread_to_patches`), so no second n x m matrix is stored for the backward pass and
FLOP counters see only the products of eq. 17. The reconstructed map, for visualisation
only, is W B = A_nm (A_mm^-1 B), formed the same way.

Eq. 15 and 16 add the indicator *after* the softmax: the bracket holds the normalised exponential plus
1(Q_i, K'_j), so the softmax is normalised over the m landmarks alone and each row of A_nm and A_mm sums
to 2. It follows that A_mm 1 = 2 * 1 and W 1 = 1: every row of the reconstruction W B sums to 1, like SA's.
A_mm = S + I with S row-stochastic and positive has no eigenvalue -1, so it is always invertible (eq. 16).
With one landmark per position (H' x W' = H x W) A_nm = A_mm, W = I and y equals SA's output.

Cost O(n m (C' + C) + m^3): the n x n map is only formed when asked for (W B, for visualisation).
Softmaxes and the solve run in fp32 (also under autocast); products with V run in V's dtype.
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
    spread_to_patches,
)


class CSALRKernel(LandmarkKernel):
    """Low-rank attention ``W B`` with landmarks per group; see :class:`~dcsnas.attention.base.AttentionKernel`.

    Args:
        landmarks: m landmarks per group (grid fitted to the map) or a grid (H', W').
    """

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, size: tuple[int, int], need_weights: bool = False
    ) -> tuple[Tensor, Optional[Tensor]]:
        grid = landmark_grid(self.landmarks, size)
        q_land, k_land = pool_landmarks(q, size, grid), pool_landmarks(k, size, grid)  # [N, c', m]
        q_land_t = q_land.transpose(1, 2)
        b = torch.softmax(q_land_t @ k, dim=-1, dtype=torch.float32)  # B: [N, m, n]
        s_nm = torch.softmax(q.transpose(1, 2) @ k_land, dim=-1, dtype=torch.float32)  # A_nm - 1: [N, n, m]
        a_mm = torch.softmax(q_land_t @ k_land, dim=-1, dtype=torch.float32)
        a_mm = a_mm + torch.eye(a_mm.shape[-1], device=q.device)  # A_mm: [N, m, m]
        e = b.to(v.dtype) @ v.transpose(1, 2)  # landmark outputs E = B V^T: [N, m, c]
        with torch.autocast(q.device.type, enabled=False):
            z_t = torch.linalg.solve_ex(a_mm, e.float())[0].transpose(1, 2).to(v.dtype)  # Z^T = (A_mm^-1 E)^T
            y = torch.baddbmm(spread_to_patches(z_t, -1, size, grid), z_t, s_nm.transpose(1, 2).to(v.dtype))
            if not need_weights:
                return y, None  # (A_nm Z)^T: [N, c, n]
            z_b = torch.linalg.solve_ex(a_mm, b)[0]  # A_mm^-1 B: [N, m, n]
            return y, torch.baddbmm(spread_to_patches(z_b, 1, size, grid), s_nm, z_b)  # W B: [N, n, n]


class CSALRAttention(AttentionBlock):
    """CSALR block: ``x + gamma * fuse(CSALR(x))`` on [B, C, H, W].

    Args:
        channels: C.
        landmarks: per group, a count m (default 96, seed 001 §4.2) or a grid (H', W').
        groups: G (default 2, seed 001 §4.2).
        **common: ``qk_ratio``, ``return_attention``, ``keep_output`` (see ``AttentionBlock``).
    """

    def __init__(self, channels: int, landmarks: Landmarks = 96, groups: int = 2, **common) -> None:
        super().__init__(channels, CSALRKernel(landmarks), groups=groups, **common)
