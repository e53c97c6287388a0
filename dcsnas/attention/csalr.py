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

All three logits are multiplied by ``scale`` (1 as in the paper, or 1/sqrt(C')), i.e. Q is scaled before pooling.

**Precision.** Softmaxes and the solve run in ``promote_types(dtype, float32)`` (float64 stays float64,
half precision and autocast are raised to float32); products with V run in V's dtype.

**Singular and ill-conditioned A_mm.** A_mm is invertible in exact arithmetic, but saturated logits (scale 1
and large activations) bring S near a permutation with a 2-cycle, i.e. S + I near singularity: with two
landmarks S = [[s, 1 - s], [1 - s, s]] has the eigenvalue 2s - 1, kappa(A_mm) = 1/s grows as e^(logit gap),
and W = A_nm A_mm^-1 gets entries of the same order (logits +-2500 give A_mm = [[1, 1], [1, 1]] in floating
point). The exact formula then multiplies V by up to kappa: in a DCS-DNAS search it multiplied the
activations after an attention by ~1e11 until the next softmax overflowed and the loss became NaN.
:func:`solve_landmarks` therefore checks ``solve_ex``'s ``info``, finiteness and a lower bound of the
condition number, ||A|| ||Z|| / ||E|| (max norms), and for the items where it exceeds 1/sqrt(eps) (half the
working digits lost) takes the Tikhonov-regularised least-squares solution (A^T A + lambda I)^-1 A^T E with
lambda = sqrt(eps): bounded (|Z| <= |E| / (2 lambda^(1/2)), below 30 |E| in float32), differentiable, and
tending to the minimum-norm solution pinv(A) E where A_mm Z = E has none; it never returns NaN for finite
inputs. Below that bound the output is the paper's formula (``tests/test_attention.py`` checks both against
a hand calculation). This departs from eq. 14 only where the formula amplifies by more than 1/sqrt(eps)
(2900 in float32), as Nystromformer replaces A_mm^-1 by a bounded pseudo-inverse. The check reads ``info``
(one device synchronisation per call on CUDA).

Cost O(n m (C' + C) + m^3): the n x n map is only formed when asked for (W B, for visualisation);
:meth:`CSALRKernel.flops` states it exactly (the fallback, data-dependent and degenerate, is not counted).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from dcsnas.attention.base import AttentionBlock, chunk_rows, compute_dtype, no_autocast, scale_factor
from dcsnas.attention.chunked import query_chunked_attention
from dcsnas.attention.landmarks import (
    LandmarkKernel,
    Landmarks,
    landmark_grid,
    pool_landmarks,
    spread_to_patches,
)
from dcsnas.attention.linalg import solve_diagonally_dominant


def solve_landmarks(a: Tensor, rhs: Tensor) -> Tensor:
    """A^-1 rhs for ``a`` [N, m, m], ``rhs`` [N, m, r] by LU; items whose LU fails (``info`` != 0), gives
    non-finite values or shows kappa(A) > 1/sqrt(eps) get the regularised least-squares solution of the
    module docstring instead. While exporting or tracing (no solve operator in ONNX, no data-dependent
    branch in a graph): elimination without pivoting, stable for this diagonally dominant A_mm
    (:mod:`dcsnas.attention.linalg`)."""
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return solve_diagonally_dominant(a, rhs)
    z, info = torch.linalg.solve_ex(a, rhs)
    if z.device.type == "meta":  # shapes only: there is no info to read
        return z
    # ||A||·||z|| / ||rhs|| (max norms) is a lower bound on kappa(A): beyond 1/sqrt(eps) the item is ill-conditioned
    growth = a.abs().sum(-1).amax(-1) * z.abs().flatten(1).amax(1)
    ill = growth > rhs.abs().flatten(1).amax(1) / torch.finfo(a.dtype).eps ** 0.5
    bad = (info != 0) | ~torch.isfinite(z).flatten(1).all(1) | ill
    if not bool(bad.any()):
        return z
    keep = ~bad[:, None, None]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    ridge = torch.finfo(a.dtype).eps ** 0.5
    least_squares = torch.linalg.solve(a.mT @ a + ridge * eye, a.mT @ rhs)
    return torch.where(keep, torch.linalg.solve(torch.where(keep, a, eye), rhs), least_squares)


class CSALRKernel(LandmarkKernel):
    """Low-rank attention ``W B`` with landmarks per group; see :class:`~dcsnas.attention.base.AttentionKernel`.

    Args:
        landmarks: m landmarks per group (grid fitted to the map) or a grid (H', W').
        scale: ``"1"`` (seed 001) or ``"sqrt"`` (1/sqrt(C')).
    """

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, size: tuple[int, int], need_weights: bool = False
    ) -> tuple[Tensor, Optional[Tensor]]:
        grid = landmark_grid(self.landmarks, size)
        scale = scale_factor(self.scale, q.shape[1])
        q = q if scale == 1.0 else q * scale
        q_land, k_land = pool_landmarks(q, size, grid), pool_landmarks(k, size, grid)  # [N, c', m]
        q_land_t, dtype = q_land.transpose(1, 2), compute_dtype(q)
        m, n = q_land.shape[2], q.shape[2]
        a_mm = torch.softmax(q_land_t @ k_land, dim=-1, dtype=dtype)
        a_mm = a_mm + torch.eye(m, dtype=dtype, device=q.device)  # A_mm: [N, m, m]
        e_t = query_chunked_attention(q_land, k, v)  # E^T = V B^T: [N, c, m], B by blocks of landmark rows
        with no_autocast(q):
            z_t = solve_landmarks(a_mm, e_t.transpose(1, 2).to(dtype)).transpose(1, 2).to(v.dtype)  # Z^T: [N, c, m]
        # (S_nm Z)^T by blocks of positions, plus (1(Q_i, K'_j) Z)^T
        y = query_chunked_attention(q, k_land, z_t, chunk=chunk_rows(n, m, v.shape[1] * n))
        spread_to_patches(z_t, -1, size, grid, add_to=y)
        if not need_weights:
            return y, None  # (A_nm Z)^T: [N, c, n]
        b = torch.softmax(q_land_t @ k, dim=-1, dtype=dtype)  # B: [N, m, n]
        s_nm = torch.softmax(q.transpose(1, 2) @ k_land, dim=-1, dtype=dtype)  # A_nm - 1: [N, n, m]
        with no_autocast(q):
            z_b = solve_landmarks(a_mm, b)  # A_mm^-1 B: [N, m, n]
            return y, torch.baddbmm(spread_to_patches(z_b, 1, size, grid), s_nm, z_b)  # W B: [N, n, n]

    def flops(self, batch: int, qk_channels: int, channels: int, size: tuple[int, int],
              need_weights: bool = False) -> int:
        """Per (sample, group): Q'^T K and Q^T K' 2 m n c' each, Q'^T K' 2 m^2 c', E = B V^T 2 m n c, the LU
        solve with c right-hand sides 2m^3/3 + 2 m^2 c, A_nm Z 2 n m c; the map adds a second solve with n
        right-hand sides and S_nm (A_mm^-1 B), 2 n^2 m. The LU count is rounded per system."""
        grid = self.grid_for_flops(size)
        n, m, c1, c = size[0] * size[1], grid[0] * grid[1], qk_channels, channels
        lu = round(2 * m ** 3 / 3)
        total = 4 * m * n * c1 + 2 * m * m * c1 + 2 * m * n * c + lu + 2 * m * m * c + 2 * n * m * c
        if need_weights:
            total += lu + 2 * m * m * n + 2 * n * n * m
        return batch * total


class CSALRAttention(AttentionBlock):
    """CSALR block: ``x + gamma * fuse(CSALR(x))`` on [B, C, H, W].

    Args:
        channels: C.
        landmarks: per group, a count m (default 96, seed 001 §4.2) or a grid (H', W').
        groups: G (default 2, seed 001 §4.2).
        scale: ``"1"`` (seed 001) or ``"sqrt"`` (1/sqrt(C')).
        **common: ``qk_ratio``, ``return_attention`` (see ``AttentionBlock``).
    """

    def __init__(self, channels: int, landmarks: Landmarks = 96, groups: int = 2, scale: str = "1",
                 **common) -> None:
        super().__init__(channels, CSALRKernel(landmarks, scale), groups=groups, **common)
