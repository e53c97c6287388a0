"""The Pareto front of (cost, accuracy) points: lower cost and higher accuracy are better."""

from __future__ import annotations

from typing import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` = (cost, accuracy) is at least as good as ``b`` on both and strictly better on one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point dominates, by increasing cost (ties: input order).

    Equal points do not dominate each other, so all of them are on the front; of points with equal cost
    only the most accurate ones are, and of points with equal accuracy only the cheapest ones."""
    front = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda i: points[i][0])
