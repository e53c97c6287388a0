"""Vectorised helpers for ragged index lists: segments of a flat array given by starts and lengths."""

from __future__ import annotations

import numpy as np


def expand_segments(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten segments ``[starts[s], starts[s] + counts[s])``.

    Returns ``(segment, position)``, both (sum(counts),) int64: the segment each element comes from and the
    element's position in the flat array, segments in order.
    """
    counts = np.asarray(counts, dtype=np.int64)
    segment = np.repeat(np.arange(len(counts)), counts)
    offsets = np.cumsum(counts) - counts
    position = np.arange(int(counts.sum())) - offsets[segment] + np.asarray(starts, dtype=np.int64)[segment]
    return segment, position


def segment_starts(sorted_ids: np.ndarray, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """For ids sorted ascending in ``[0, num_segments)``: (num_segments,) start offsets and lengths."""
    counts = np.bincount(sorted_ids, minlength=num_segments)
    return np.cumsum(counts) - counts, counts
