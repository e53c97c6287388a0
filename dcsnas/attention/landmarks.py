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
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

from dcsnas.attention.base import AttentionKernel, is_positive_int, option_error
from dcsnas.errors import ConfigError

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
    return F.adaptive_avg_pool2d(t.unflatten(-1, size), grid).flatten(-2)


@lru_cache(maxsize=64)
def _patch_sizes(size: tuple[int, int], grid: tuple[int, int], device: torch.device) -> tuple[Tensor, Tensor]:
    rows = torch.bincount(torch.arange(size[0]) * grid[0] // size[0], minlength=grid[0])
    cols = torch.bincount(torch.arange(size[1]) * grid[1] // size[1], minlength=grid[1])
    return rows.to(device), cols.to(device)


def spread_to_patches(t: Tensor, dim: int, size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Copy each landmark's slice of ``t`` to every position of its patch: axis ``dim`` goes from H'*W' to H*W.

    Equals multiplying by the indicator 1(position i lies in landmark j's patch) along ``dim``, where
    position (r, c) lies in patch (floor(r H'/H), floor(c W'/W)), without a matrix product.
    """
    dim = dim % t.dim()
    rows, cols = _patch_sizes(size, grid, t.device)
    t = t.unflatten(dim, grid)
    t = t.repeat_interleave(rows, dim=dim, output_size=size[0])
    return t.repeat_interleave(cols, dim=dim + 1, output_size=size[1]).flatten(dim, dim + 1)


class LandmarkKernel(AttentionKernel):
    """An attention kernel that pools ``landmarks`` per group (a count or a grid (H', W'))."""

    def __init__(self, landmarks: Landmarks = 96) -> None:
        super().__init__()
        self.landmarks = check_landmarks(landmarks)

    def extra_repr(self) -> str:
        return f"landmarks={self.landmarks!r}"
