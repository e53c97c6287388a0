"""A linear solve made of matrix products, for exporters that have no solve operator (ONNX has none).

:func:`solve_diagonally_dominant` solves ``A X = B`` by Gauss-Jordan elimination without pivoting, unrolled
over the m columns (2m steps of slices, products and concatenations: operators every ONNX runtime has). It
is written by hand because ``torch.linalg.solve`` pivots with data-dependent row swaps that an exported
graph cannot express. Without pivoting the elimination is only stable for matrices whose pivots stay
away from 0; a matrix strictly diagonally dominant by rows keeps that property through every step (the
Schur complements stay diagonally dominant), with growth factor at most 2. CSALR's A_mm = S + I with S
row-stochastic and positive is such a matrix: |1 + S_jj| > sum_{k != j} S_jk = 1 - S_jj.

Cost: m³ + m²r multiply-adds for m×m ``A`` and r right-hand sides, against 2m³/3 + 2m²r FLOPs for LU.
"""

from __future__ import annotations

import torch
from torch import Tensor


def solve_diagonally_dominant(a: Tensor, b: Tensor) -> Tensor:
    """``X`` [N, m, r] with ``A X = B`` for ``a`` [N, m, m] strictly diagonally dominant by rows, ``b``
    [N, m, r]; no pivoting, so other matrices may give inaccurate results (or inf/NaN for a zero pivot)."""
    m = a.shape[-1]
    rest = torch.cat([a, b], dim=-1)  # rows still to eliminate: [N, m - j, m + r]
    reduced = []  # row j scaled to a unit pivot, zeros left of column j: [N, 1, m + r]
    for j in range(m):
        pivot = rest[:, :1] / rest[:, :1, j : j + 1]
        reduced.append(pivot)
        rest = rest[:, 1:] - rest[:, 1:, j : j + 1] * pivot
    x = reduced[m - 1][:, :, m:]  # solved rows j .. m-1: [N, m - j, r]
    for j in range(m - 2, -1, -1):
        row = reduced[j]
        x = torch.cat([row[:, :, m:] - row[:, :, j + 1 : m] @ x, x], dim=1)
    return x
