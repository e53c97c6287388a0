"""Adaptive average pooling that exports to ONNX at any output size.

ONNX's exporters turn ``adaptive_avg_pool2d`` into a fixed average pool, which exists only when the
output size divides the input size (PCB's 6 stripes of a 16-row map, 96 landmarks on a 32x16 map do not).
While exporting to ONNX, :func:`adaptive_avg_pool2d` computes the same windows as products with two
averaging matrices (rows [H', H], columns [W', W]; window i of n inputs to m outputs is
[floor(i n / m), ceil((i + 1) n / m)), PyTorch's definition); elsewhere it is PyTorch's function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _window_means(size: int, out: int) -> list[list[float]]:
    """[out][size]: row i averages the inputs of adaptive pooling window i."""
    rows = []
    for i in range(out):
        start, end = i * size // out, -(-(i + 1) * size // out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return rows


def adaptive_avg_pool2d(x: Tensor, output_size: tuple[int, int]) -> Tensor:
    """``F.adaptive_avg_pool2d(x, output_size)`` for ``x`` [..., H, W]; the matrix form while exporting to ONNX
    (the traced sizes are read as ints: an exported graph holds the windows of its input size)."""
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, output_size)
    rows = torch.tensor(_window_means(int(x.shape[-2]), int(output_size[0])), dtype=x.dtype, device=x.device)
    cols = torch.tensor(_window_means(int(x.shape[-1]), int(output_size[1])), dtype=x.dtype, device=x.device)
    return rows @ x @ cols.T
