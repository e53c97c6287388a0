"""Cost model of a search space: FLOPs and parameters per candidate, their expectation (differentiable in
the architecture logits), and the cost term of the architecture step.

**Table.** Every part of the network (stem, each block, each attention, the head conv; the fixed
ResNet-50 stages) is a :class:`CostTerm` over the choices it depends on (a block: its op, its input width
and its output width), with one entry per combination, measured once by building the candidate from
:mod:`dcsnas.models.blocks` / :mod:`dcsnas.attention` exactly as the derived network does, on the ``meta``
device, and counting it with :func:`dcsnas.utils.flops.count_flops` at its input resolution (batch 1): the
counter for convolutions, the attention kernels' analytic formulas for attention. A derived network's FLOPs
and parameters are therefore the sums of its table entries, exactly, on any device and torch.

**Cache** (:func:`cached_costs`): plain tensors, strings and lists, read with ``weights_only=True``.

**Expectation.** With independent choices and weights w_c (p_c = softmax(α_c), or the Gumbel-softmax sample
of the step), E[cost] = Σ_terms Σ_{i,j,…} w_a(i) w_b(j) … T[i, j, …], linear in each w_c.

**Loss** (:class:`CostLoss`): FBNet's multiplicative form L = L_task · (a · log(F / unit))^b, or a
two-sided hinge L = L_task + λ · max(0, |F / T − 1| − tolerance) around a FLOPs target T.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import torch
from torch import Tensor, nn

from dcsnas.attention import create_attention
from dcsnas.config import config_hash, ranged
from dcsnas.errors import ConfigError
from dcsnas.models.arch import CONV_HEAD, STEM
from dcsnas.models.blocks import build_op, conv_head, conv_output_size, stem
from dcsnas.models.skeleton import SKELETONS, Choice, Part
from dcsnas.nas.distribution import ArchDistribution
from dcsnas.nas.space import SearchSpace
from dcsnas.utils.flops import count_flops, count_params
from dcsnas.utils.io import atomic_torch_save


@dataclass
class CostTerm:
    """One part of the network: ``name``, the choice ``keys`` it depends on, and ``flops``/``params``
    tables (float64) of shape ``[n_k for k in keys]`` (0-dim for a fixed part)."""

    name: str
    keys: tuple[str, ...]
    flops: Tensor
    params: Tensor


class CostModel:
    """The cost table of a space at one input size; see the module docstring."""

    def __init__(self, terms: list[CostTerm], choices: list[Choice], input_size: tuple[int, int]):
        self.terms, self.input_size = terms, tuple(input_size)
        self.sizes = {c.key: len(c.options) for c in choices}

    def expected(self, weights: dict[str, Tensor], metric: str = "flops") -> Tensor:
        """Σ_terms of the table contracted with the per-choice weights ``[n_c]``: a 0-dim tensor (float32)."""
        total = 0.0
        for term in self.terms:
            table = getattr(term, metric)
            if not term.keys:
                total = total + float(table)
                continue
            ref = weights[term.keys[0]]
            letters = "abcdefgh"[:len(term.keys)]
            spec = ",".join(letters) + "," + letters + "->"
            total = total + torch.einsum(spec, *(weights[k] for k in term.keys),
                                         table.to(device=ref.device, dtype=ref.dtype))
        return total if isinstance(total, Tensor) else torch.tensor(total)

    def exact(self, indices: dict[str, int], metric: str = "flops") -> int:
        """The cost of the architecture that takes option ``indices[key]`` of every choice."""
        return int(round(sum(float(getattr(t, metric)[tuple(indices[k] for k in t.keys)]) for t in self.terms)))

    def bounds(self, metric: str = "flops") -> tuple[int, int]:
        """(smallest, largest) cost of any architecture of the space."""
        smallest, largest = self.extremes(metric)
        return self.exact(smallest, metric), self.exact(largest, metric)

    def extremes(self, metric: str = "flops") -> tuple[dict[str, int], dict[str, int]]:
        """The option indices of the cheapest and of the costliest architecture of the space: choices shared by
        several terms (the widths) are enumerated, those private to one term are minimised/maximised inside
        it."""
        counts: dict[str, int] = {}
        for t in self.terms:
            for k in t.keys:
                counts[k] = counts.get(k, 0) + 1
        shared = [k for k, n in counts.items() if n > 1 and self.sizes[k] > 1]
        best: list[tuple[float, float, dict[str, int]]] = []
        for combo in itertools.product(*(range(self.sizes[k]) for k in shared)):
            fixed = dict(zip(shared, combo))
            for sign in (1.0, -1.0):  # 1: the cheapest, -1: the costliest
                indices = {k: 0 for k in self.sizes} | fixed
                total = 0.0
                for t in self.terms:
                    table = getattr(t, metric)[tuple(fixed.get(k, slice(None)) for k in t.keys)]
                    flat = int((sign * table).argmin()) if table.dim() else 0
                    free = [k for k in t.keys if k not in fixed]
                    for k, i in zip(free, torch.unravel_index(torch.tensor(flat), table.shape) if free else ()):
                        indices[k] = int(i)
                    total += sign * float(table.reshape(-1)[flat])
                best.append((total, sign, indices))
        cheapest = min((b for b in best if b[1] > 0), key=lambda b: b[0])[2]
        costliest = min((b for b in best if b[1] < 0), key=lambda b: b[0])[2]
        return cheapest, costliest


class _Meter:
    """FLOPs/params of modules at input shapes, cached by a description of the module, counted on the
    ``meta`` device (shapes only, no arithmetic)."""

    def __init__(self) -> None:
        self.cache: dict[tuple, tuple[int, int]] = {}

    def __call__(self, key: tuple, build: Callable[[], nn.Module], shape: tuple[int, ...]) -> tuple[int, int]:
        if key + shape not in self.cache:
            with torch.device("meta"):
                module = build()
            self.cache[key + shape] = (count_flops(module, shape, "meta"), count_params(module))
        return self.cache[key + shape]


def _term(name: str, choices: list[Choice], measure: Callable[..., tuple[int, int]]) -> CostTerm:
    """Measure ``measure(*options)`` for every combination of the ``choices``' options (duplicates merged)."""
    unique = list({c.key: c for c in choices}.values())
    shape = [len(c.options) for c in unique]
    flops, params = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
    for index in itertools.product(*(range(n) for n in shape)):
        option = {c.key: c.options[i] for c, i in zip(unique, index)}
        flops[index], params[index] = measure(*(option[c.key] for c in choices))
    return CostTerm(name, tuple(c.key for c in unique), flops, params)


def _attention_cost(meter: _Meter, candidate, channels: int, size: tuple[int, int]) -> tuple[int, int]:
    if candidate is None:
        return 0, 0
    key = ("attention", candidate.label, tuple(sorted(candidate.options.items(), key=str)), channels)
    try:
        return meter(key, lambda: create_attention(candidate.name, channels, **candidate.options),
                     (1, channels, *size))
    except ConfigError as exc:
        raise ConfigError(f"attention candidate {candidate.label} with {channels} channels on a "
                          f"{size[0]}×{size[1]} map: {exc}") from None


def _part_term(meter: _Meter, part: Part, in_size: tuple[int, int], size: tuple[int, int],
               fixed: dict[str, nn.Module]) -> CostTerm:
    """The cost term of one part, whose input map is ``in_size`` and output ``size`` (``fixed``: the modules of
    the fixed stages, on the ``meta`` device)."""
    if part.kind == "stage":
        module, shape = fixed[part.stage], (1, part.width_in, *in_size)
        return _term(part.stage, [], lambda: (count_flops(module, shape, "meta"), count_params(module)))
    if part.kind == "stem":
        c, s = part.width_out.options[0], part.stride
        return _term(STEM, [], lambda: meter(("stem", c, s), lambda: stem(c, s), (1, 3, *in_size)))
    if part.kind == "block":
        return _term(f"{part.stage}/{part.index}", [part.payload, part.width_in, part.width_out],
                     lambda op, c_in, c_out: meter(("op", op, c_in, c_out, part.stride),
                                                   lambda: build_op(op, c_in, c_out, part.stride), (1, c_in, *in_size)))
    if part.kind == "attention":
        name, width = f"{part.stage}/attention", part.width_out
        if isinstance(width, int):  # a fixed width (a fixed stage's channels)
            return _term(name, [part.payload], lambda a: _attention_cost(meter, a, width, size))
        return _term(name, [part.payload, width], lambda a, c: _attention_cost(meter, a, c, size))
    out = part.width_out
    return _term(CONV_HEAD, [part.width_in], lambda c: meter(("head", c, out), lambda: conv_head(c, out),
                                                             (1, c, *size)))


def measure_costs(space: SearchSpace, input_size: tuple[int, int]) -> CostModel:
    """The cost table of ``space`` for inputs of ``input_size`` = (height, width) pixels: one term per part of
    its skeleton (:meth:`~dcsnas.models.skeleton.Skeleton.parts`)."""
    meter = _Meter()
    with torch.device("meta"):
        fixed = {name: module.eval() for name, module in SKELETONS[space.skeleton].fixed(space).items()}
    terms: list[CostTerm] = []
    size = tuple(input_size)
    for part in space.parts():
        in_size, size = size, conv_output_size(size, part.stride)
        terms.append(_part_term(meter, part, in_size, size, fixed))
    return CostModel(terms, space.choices(), input_size)


@dataclass
class CostConfig:
    """The ``search.cost`` section: the cost term of the architecture step.

    ``kind``: ``none``; ``fbnet``: L = L_task · (a · log(F / unit))^b (FBNet: a = 0.2, b = 0.6; F in units
    of ``unit`` FLOPs, so log F > 0 is required); ``hinge``: L = L_task + weight · max(0, |F/T − 1| − tolerance)
    with T = ``target_mflops``·10⁶.

    ``estimate``, the FLOPs F used: ``sampled``, those of the step's Gumbel sample relaxed by its weights
    (FBNet); ``expected``, the expectation under p = softmax(α); ``argmax``, those of the current argmax
    architecture (the one ``derive`` writes) with the gradient of the expectation (straight-through). The
    gradient of any of them moves every choice towards its cheaper (or dearer) options together, so only the
    task loss tells choices apart; a target is met by the derived architecture only with ``argmax``, which
    stops pushing once that architecture is within the tolerance. Default (null): ``sampled`` for ``fbnet``,
    ``argmax`` for ``hinge``.
    """

    kind: Literal["none", "fbnet", "hinge"] = "fbnet"
    estimate: Optional[Literal["sampled", "expected", "argmax"]] = None
    a: float = ranged(0.2, gt=0)
    b: float = ranged(0.6, gt=0)
    unit: float = ranged(1e6, gt=0)
    target_mflops: Optional[float] = ranged(None, gt=0)
    weight: float = 1.0
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.a <= 0 or self.b <= 0 or self.unit <= 0 or self.weight < 0 or self.tolerance < 0:
            raise ValueError("a, b, unit must be > 0 and weight, tolerance >= 0")
        if self.kind == "hinge" and (self.target_mflops is None or self.target_mflops <= 0):
            raise ValueError("kind = 'hinge' needs target_mflops > 0")
        if self.estimate is None:
            self.estimate = "argmax" if self.kind == "hinge" else "sampled"


class CostLoss:
    """``loss(task, distribution, sampled)`` → (architecture-step loss, the FLOPs F it used); see
    :class:`CostConfig`. ``sampled``: the weights of the step's forward pass. The space's FLOPs range is
    checked against the config on construction (errors name the key)."""

    def __init__(self, cfg: CostConfig, costs: CostModel):
        self.cfg, self.costs = cfg, costs
        low, high = costs.bounds("flops")
        size = "×".join(map(str, costs.input_size))
        if cfg.kind == "hinge" and not low <= cfg.target_mflops * 1e6 <= high:
            raise ConfigError(f"search.cost.target_mflops = {cfg.target_mflops:g} is outside the FLOPs of the "
                              f"search space at {size}: expected a value in [{low / 1e6:.3f}, {high / 1e6:.3f}] "
                              "MFLOPs (smallest, largest architecture)")
        if cfg.kind == "fbnet" and low <= cfg.unit:
            raise ConfigError(f"search.cost.unit = {cfg.unit:g}: the smallest architecture has {low} FLOPs, so "
                              f"log(F / unit) would not be positive; use a unit below {low}")

    def __call__(self, task: Tensor, distribution: ArchDistribution,
                 sampled: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        weights = {"sampled": lambda: sampled, "expected": distribution.probabilities,
                   "argmax": distribution.straight_through_argmax}[cfg.estimate]()
        flops = self.costs.expected(weights, "flops")
        if cfg.kind == "fbnet":
            return task * (cfg.a * torch.log(flops / cfg.unit)) ** cfg.b, flops
        if cfg.kind == "hinge":
            ratio = flops / (cfg.target_mflops * 1e6)
            return task + cfg.weight * torch.relu((ratio - 1).abs() - cfg.tolerance), flops
        return task, flops


def _stored_terms(stored: object, key: dict, space: SearchSpace) -> Optional[list[CostTerm]]:
    """The cost terms of a loaded cache file; ``None`` if it is the table of another space or input size;
    ``ValueError`` if it is no cost table of this format."""
    if not isinstance(stored, dict) or not isinstance(stored.get("terms"), list):
        raise ValueError("not a dict with a list of 'terms'")
    if stored.get("key") != key:
        return None
    sizes, terms = {c.key: len(c.options) for c in space.choices()}, []
    for t in stored["terms"]:
        if not (isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("keys"), list)
                and all(isinstance(k, str) for k in t["keys"]) and isinstance(t.get("flops"), Tensor)
                and isinstance(t.get("params"), Tensor) and t["flops"].shape == t["params"].shape
                and tuple(t["flops"].shape) == tuple(sizes.get(k, -1) for k in t["keys"])):
            raise ValueError(f"malformed term {str(t)[:100]}")
        terms.append(CostTerm(t["name"], tuple(t["keys"]), t["flops"].double(), t["params"].double()))
    return terms


def cached_costs(space: SearchSpace, input_size: tuple[int, int], path: str | Path) -> CostModel:
    """:func:`measure_costs`, stored in ``path`` and read from there when space and input size match (a
    search, its resume and ``dcsnas derive`` measure the table once). The file holds plain tensors, strings
    and lists and is read with ``weights_only=True``: a file that is not such a table (another format,
    damaged, or crafted to run code) is measured again, with a warning, and overwritten."""
    key = {"space": config_hash(space), "input_size": [int(s) for s in input_size]}
    path = Path(path)
    if path.is_file():
        try:
            terms = _stored_terms(torch.load(path, map_location="cpu", weights_only=True), key, space)
        except Exception as exc:  # torch.load raises many types on a bad file (UnpicklingError, RuntimeError, …)
            warnings.warn(f"cost table '{path}' is not a readable cost table ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); measuring it again")
            terms = None
        if terms is not None:
            return CostModel(terms, space.choices(), input_size)
    costs = measure_costs(space, input_size)
    atomic_torch_save({"key": key, "terms": [{"name": t.name, "keys": list(t.keys), "flops": t.flops,
                                              "params": t.params} for t in costs.terms]}, path)
    return costs
