"""Random architectures of a search space at a FLOPs budget, and rank statistics (DESIGN §6, Evidence).

:func:`sample_in_band` draws architectures uniformly from the set of architectures of a space whose
FLOPs lie within ``±band`` of a target: every choice uniformly and independently, rejected until the
FLOPs fit (rejection sampling keeps the uniform distribution restricted to the band; the cost table makes
a draw a table look-up); a derived architecture (arch.json) maps back to its choice indices through its
skeleton (:meth:`~dcsnas.models.skeleton.Skeleton.indices`). :func:`rank_among` places one value among
others, :func:`kendall_tau` is SciPy's τ-b (the benchmark's means and standard
deviations come from :mod:`dcsnas.compare.seeds`, as in ``dcsnas compare``).
"""

from __future__ import annotations

import random
from typing import Optional, Sequence

from scipy import stats

from dcsnas.errors import ConfigError
from dcsnas.nas.cost import CostModel
from dcsnas.nas.space import SearchSpace


def random_indices(space: SearchSpace, rng: random.Random) -> dict[str, int]:
    """One option index per choice of ``space``, each uniform (fixed choices: 0)."""
    return {c.key: rng.randrange(len(c.options)) for c in space.choices()}


def in_band(flops: float, target: float, band: float) -> bool:
    """Whether ``flops`` lies in [target·(1 − band), target·(1 + band)]."""
    return abs(flops / target - 1) <= band


def sample_in_band(space: SearchSpace, costs: CostModel, target_flops: float, count: int, rng: random.Random,
                   band: float = 0.05, exclude: Sequence[dict[str, int]] = (),
                   max_draws: int = 1_000_000) -> list[dict[str, int]]:
    """``count`` distinct architectures (choice indices) drawn uniformly among those of ``space`` with
    FLOPs within ``±band`` of ``target_flops`` (at the cost table's input size), none of them in
    ``exclude``; a :class:`ConfigError` when ``max_draws`` uniform draws of the space do not find them."""
    if target_flops <= 0 or not 0 < band < 1 or count < 0:
        raise ConfigError(f"target FLOPs = {target_flops:g}, band = {band:g}, count = {count}: expected a "
                          "positive target, a band in (0, 1) and a count >= 0")
    seen = {_key(e) for e in exclude}
    found: list[dict[str, int]] = []
    for _ in range(max_draws):
        if len(found) == count:
            return found
        indices = random_indices(space, rng)
        if _key(indices) not in seen and in_band(costs.exact(indices, "flops"), target_flops, band):
            seen.add(_key(indices))
            found.append(indices)
    if len(found) == count:
        return found
    low, high = costs.bounds("flops")
    raise ConfigError(f"only {len(found)} of {count} architectures of space '{space.name}' within ±{100 * band:g}% "
                      f"of {target_flops / 1e6:.3f} MFLOPs in {max_draws} draws (the space spans "
                      f"{low / 1e6:.3f}–{high / 1e6:.3f} MFLOPs); widen the band or change the target")


def _key(indices: dict[str, int]) -> tuple:
    return tuple(sorted(indices.items()))


def rank_among(value: float, others: Sequence[float]) -> int:
    """1 + the number of ``others`` strictly above ``value``: 1 = best (ties share the better rank)."""
    return 1 + sum(o > value for o in others)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> dict[str, Optional[float]]:
    """Kendall's τ-b of two rankings (:func:`scipy.stats.kendalltau`) with its two-sided p-value and n;
    τ is None for fewer than two pairs or a constant sequence."""
    if len(x) != len(y):
        raise ValueError(f"kendall_tau: {len(x)} and {len(y)} values")
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return {"tau": None, "p": None, "n": len(x)}
    tau, p = stats.kendalltau(x, y)
    return {"tau": float(tau), "p": float(p), "n": len(x)}
