"""Landmark grids for the compressed attentions (CSA, CSALR).

Landmarks are given per group either as a count ``m`` or as a grid ``(H', W')``. A count is turned into
the grid ``H' x W' = m`` that fits the feature map: grids that divide ``H x W`` exactly come first (the
pooling of seed 001 §3.2 has kernel = stride = (H/H', W/W')), then the aspect ratio closest to H/W (in log
space), then the squarer grid; e.g. 96 landmarks on a 64x32 map give 12x8.

When the grid does not divide the map, pooling is adaptive (PyTorch's windows ``[floor(iH/H'),
ceil((i+1)H/H'))``) and each position belongs to the patch ``(floor(r H'/H), floor(c W'/W))``, which lies
inside that patch's pooling window.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional, Union

import torch
from torch import Tensor

from dcsnas.attention.base import AttentionKernel, check_scale, is_positive_int, option_error
from dcsnas.errors import ConfigError
from dcsnas.utils.pooling import adaptive_avg_pool2d

Landmarks = Union[int, tuple[int, int]]


def check_landmarks(landmarks: Landmarks) -> Landmarks:
    """Validate the ``landmarks`` option (count per group, or grid): a positive int or a pair of them."""
    if is_positive_int(landmarks):
        return landmarks
    if isinstance(landmarks, (tuple, list)) and len(landmarks) == 2 and all(map(is_positive_int, landmarks)):
        return (landmarks[0], landmarks[1])
    raise option_error(
        "landmarks", landmarks, "a positive int (landmarks per group) or a grid [H', W'] of positive ints"
    )


@lru_cache(maxsize=256)
def landmark_grid(landmarks: Landmarks, size: tuple[int, int]) -> tuple[int, int]:
    """The landmark grid ``(H', W')`` for a feature map of ``size = (H, W)``."""
    height, width = size
    if isinstance(landmarks, int):
        candidates = [
            (h, landmarks // h) for h in range(1, landmarks + 1)
            if landmarks % h == 0 and h <= height and landmarks // h <= width
        ]
        if not candidates:
            raise ConfigError(
                f"attention option 'landmarks' = {landmarks}: no grid H' x W' = {landmarks} fits in the "
                f"{height}x{width} feature map (need H' <= {height}, W' <= {width})"
            )
        target = math.log(height / width)
        return min(
            candidates,
            key=lambda g: (
                height % g[0] != 0 or width % g[1] != 0,
                round(abs(math.log(g[0] / g[1]) - target), 9),
                max(g),
            ),
        )
    if landmarks[0] > height or landmarks[1] > width:
        raise ConfigError(
            f"attention option 'landmarks' = {list(landmarks)}: the grid is larger than the "
            f"{height}x{width} feature map"
        )
    return landmarks


def pool_landmarks(t: Tensor, size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Average-pool ``t`` [N, c, H*W] to the landmark grid: [N, c, H'*W']."""
    return adaptive_avg_pool2d(t.unflatten(-1, size), grid).flatten(-2)


def _patch_index(size: tuple[int, int], grid: tuple[int, int], device: torch.device) -> Tensor:
    """The landmark of each position of an H x W map, row-major: [H*W] (int64). Built on the device at every
    call (no cache: a tensor cached while tracing or exporting would be a placeholder of that graph)."""
    rows = torch.arange(size[0], device=device) * grid[0] // size[0]
    cols = torch.arange(size[1], device=device) * grid[1] // size[1]
    return (rows[:, None] * grid[1] + cols).flatten()


def spread_to_patches(t: Tensor, dim: int, size: tuple[int, int], grid: tuple[int, int],
                      add_to: Optional[Tensor] = None) -> Tensor:
    """Copy each landmark's slice of ``t`` to every position of its patch: axis ``dim`` goes from H'*W' to H*W.

    Returns a new tensor, or with ``add_to`` (of the result's shape) adds the copy to it in place and returns
    it. Equals multiplying by the indicator 1(position i lies in landmark j's patch) along ``dim``, where
    position (r, c) lies in patch (floor(r H'/H), floor(c W'/W)), without a matrix product. When the grid
    divides the map, the patches are equal blocks and the copy is a broadcast (its gradient a sum over each
    block; added in place, the copy is never formed); otherwise, and while tracing or exporting (a broadcast
    would fix the traced batch size), one gather by the index of each position's patch (an operator every
    exporter has). While tracing, the sizes are 0-dim tensors; they are read as ints, so a traced or exported
    graph holds the index of its input size.
    """
    size = (int(size[0]), int(size[1]))
    dim = dim % t.dim()
    if size[0] % grid[0] or size[1] % grid[1] or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        spread = t.index_select(dim, _patch_index(size, grid, t.device))
        return spread if add_to is None else add_to.add_(spread)
    blocks = t.unflatten(dim, (grid[0], 1, grid[1], 1))  # [..., H', 1, W', 1, ...]
    kh, kw = size[0] // grid[0], size[1] // grid[1]
    if add_to is not None:
        add_to.unflatten(dim, (grid[0], kh, grid[1], kw)).add_(blocks)
        return add_to
    if (kh, kw) == (1, 1):
        return t.clone()  # a new tensor in every case
    shape = list(blocks.shape)
    shape[dim + 3] = kw
    rows = blocks.expand(shape).flatten(dim + 2, dim + 3)  # one row of each patch row: [..., H', 1, W, ...]
    shape = list(rows.shape)
    shape[dim + 1] = kh
    return rows.expand(shape).flatten(dim, dim + 2).contiguous()  # copied by rows of W values (a 1x1 grid: once)


class LandmarkKernel(AttentionKernel):
    """An attention kernel that pools ``landmarks`` per group (a count or a grid (H', W')), with logits
    scaled by ``scale`` (``"1"`` as in the papers, or ``"sqrt"``: 1/sqrt(C'))."""

    def __init__(self, landmarks: Landmarks = 96, scale: str = "1") -> None:
        super().__init__()
        self.landmarks = check_landmarks(landmarks)
        self.scale = check_scale(scale)

    def grid_for_flops(self, size: tuple[int, int]) -> tuple[int, int]:
        """:func:`landmark_grid` for a FLOPs formula: an unsupported map is a :class:`ConfigError` naming
        the kernel, the map and the limit."""
        try:
            return landmark_grid(self.landmarks, tuple(size))
        except ConfigError as exc:
            raise ConfigError(f"{type(self).__name__} FLOPs on a {size[0]}x{size[1]} map: {exc}") from None

    def extra_repr(self) -> str:
        return f"landmarks={self.landmarks!r}, scale={self.scale!r}"
