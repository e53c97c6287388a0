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

**Latency** (``search.cost.metric: latency``): a term may also hold a ``latency`` table of the same shape, in
milliseconds per forward of the part alone at one batch size on one device (FBNet's lookup table,
:mod:`dcsnas.nas.latency`); the expectation below is the same with that table.

**Expectation** (:func:`expectation`). With independent choices and weights w_c (p_c = softmax(α_c), or the
Gumbel-softmax sample of the step), E[cost] = Σ_terms Σ_{i,j,…} w_a(i) w_b(j) … T[i, j, …], linear in each w_c.

**Loss** (:class:`CostLoss`): FBNet's multiplicative form L = L_task · (a · log(F / unit))^b, or a
two-sided hinge L = L_task + λ · max(0, |F / T − 1| − tolerance) around a target T (FLOPs, or ms).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional

import torch
from torch import Tensor, nn

from dcsnas.attention import create_attention
from dcsnas.config import added_key, config_hash, ranged
from dcsnas.errors import ConfigError
from dcsnas.models.arch import CONV_HEAD, STEM
from dcsnas.models.blocks import build_op, conv_head, conv_output_size, stem
from dcsnas.models.skeleton import SKELETONS, Choice, Part
from dcsnas.nas.distribution import ArchDistribution
from dcsnas.nas.space import SearchSpace
from dcsnas.utils.flops import count_flops, count_params
from dcsnas.utils.io import atomic_torch_save

Metric = Literal["flops", "params", "latency"]


@dataclass
class CostTerm:
    """One part of the network: ``name``, the choice ``keys`` it depends on, and ``flops``/``params``
    tables (float64) of shape ``[n_k for k in keys]`` (0-dim for a fixed part); ``latency``: the same shape in
    ms, when a latency table is attached (:meth:`CostModel.with_latency`)."""

    name: str
    keys: tuple[str, ...]
    flops: Tensor
    params: Tensor
    latency: Optional[Tensor] = None

    def table(self, metric: Metric) -> Tensor:
        """The table of ``metric``; a :class:`ConfigError` for ``latency`` when none is attached."""
        table = getattr(self, metric)
        if table is None:
            raise ConfigError(f"cost term '{self.name}' has no {metric} table (search.cost.metric: latency needs a "
                              "latency table)")
        return table


def expectation(tables: Iterable[tuple[tuple[str, ...], Tensor]], weights: dict[str, Tensor]) -> Tensor:
    """Σ over ``(keys, table)`` of Σ_{i,j,…} w_a(i) w_b(j) … table[i, j, …] (``keys`` = (a, b, …), ``weights[k]``:
    the ``[n_k]`` weights of choice k; a 0-dim table is a constant): a 0-dim tensor in the weights' dtype,
    differentiable in them. FLOPs and latency are both this sum, with their own tables."""
    total = 0.0
    for keys, table in tables:
        if not keys:
            total = total + float(table)
            continue
        ref = weights[keys[0]]
        letters = "abcdefgh"[:len(keys)]
        spec = ",".join(letters) + "," + letters + "->"
        total = total + torch.einsum(spec, *(weights[k] for k in keys), table.to(device=ref.device, dtype=ref.dtype))
    return total if isinstance(total, Tensor) else torch.tensor(total)


class CostModel:
    """The cost table of a space at one input size; see the module docstring."""

    def __init__(self, terms: list[CostTerm], choices: list[Choice], input_size: tuple[int, int]):
        self.terms, self.input_size = terms, tuple(input_size)
        self.choices = choices
        self.sizes = {c.key: len(c.options) for c in choices}

    @property
    def has_latency(self) -> bool:
        return all(t.latency is not None for t in self.terms)

    def with_latency(self, latency: dict[str, Tensor]) -> CostModel:
        """This model with the latency table (ms) ``latency[term name]`` (each of its term's shape) attached."""
        terms = []
        for t in self.terms:
            table = latency[t.name].double()
            if tuple(table.shape) != tuple(t.flops.shape):
                raise ValueError(f"latency table of '{t.name}': shape {tuple(table.shape)}, expected "
                                 f"{tuple(t.flops.shape)}")
            terms.append(CostTerm(t.name, t.keys, t.flops, t.params, table))
        return CostModel(terms, self.choices, self.input_size)

    def expected(self, weights: dict[str, Tensor], metric: Metric = "flops") -> Tensor:
        """Σ_terms of the table contracted with the per-choice weights ``[n_c]``: a 0-dim tensor (float32)."""
        return expectation(((t.keys, t.table(metric)) for t in self.terms), weights)

    def value(self, indices: dict[str, int], metric: Metric = "flops") -> float:
        """The cost of the architecture that takes option ``indices[key]`` of every choice."""
        return sum(float(t.table(metric)[tuple(indices[k] for k in t.keys)]) for t in self.terms)

    def exact(self, indices: dict[str, int], metric: Metric = "flops") -> int:
        """:meth:`value` rounded to an int (FLOPs and parameters are counts)."""
        return int(round(self.value(indices, metric)))

    def span(self, metric: Metric = "flops") -> tuple[float, float]:
        """(smallest, largest) cost of any architecture of the space."""
        cheapest, costliest = self.extremes(metric)
        return self.value(cheapest, metric), self.value(costliest, metric)

    def bounds(self, metric: Metric = "flops") -> tuple[int, int]:
        """:meth:`span` rounded to ints (FLOPs, parameters)."""
        low, high = self.span(metric)
        return int(round(low)), int(round(high))

    def extremes(self, metric: Metric = "flops") -> tuple[dict[str, int], dict[str, int]]:
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
                    table = t.table(metric)[tuple(fixed.get(k, slice(None)) for k in t.keys)]
                    flat = int((sign * table).argmin()) if table.dim() else 0
                    free = [k for k in t.keys if k not in fixed]
                    for k, i in zip(free, torch.unravel_index(torch.tensor(flat), table.shape) if free else ()):
                        indices[k] = int(i)
                    total += sign * float(table.reshape(-1)[flat])
                best.append((total, sign, indices))
        cheapest = min((b for b in best if b[1] > 0), key=lambda b: b[0])[2]
        costliest = min((b for b in best if b[1] < 0), key=lambda b: b[0])[2]
        return cheapest, costliest


@dataclass(frozen=True)
class ModuleSpec:
    """A part's module under one combination of options: ``key`` identifies it (equal keys, equal modules),
    ``text`` describes it, ``build()`` makes it, ``shape`` is its input at batch 1 (``[1, C, H, W]``)."""

    key: tuple
    text: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]

    def describe(self, batch: int = 1) -> str:
        """E.g. ``ir_k3_e3 8→12 stride 2 on [1, 8, 32, 16]``: the module and its input shape at ``batch``."""
        return f"{self.text} on {[batch, *self.shape[1:]]}"


PartSpecs = Callable[..., Optional[ModuleSpec]]  # (*options of the term's choices) -> the module (None: nothing runs)


def _attention_spec(candidate, channels: int, size: tuple[int, int]) -> Optional[ModuleSpec]:
    if candidate is None:
        return None
    options = ", ".join(f"{k}={v}" for k, v in sorted(candidate.options.items(), key=str))
    return ModuleSpec(("attention", candidate.label, options, channels),
                      f"attention {candidate.name} ({options}) at {channels} channels",
                      lambda: create_attention(candidate.name, channels, **candidate.options), (1, channels, *size))


def part_specs(part: Part, in_size: tuple[int, int], size: tuple[int, int],
               fixed: dict[str, nn.Module]) -> tuple[str, list[Choice], PartSpecs]:
    """The cost term's name of one part (input map ``in_size``, output ``size``), the choices it depends on, and
    its module per combination of their options (``fixed``: the modules of the fixed stages). The FLOPs table
    and the latency table both measure these modules."""
    if part.kind == "stage":
        module = fixed[part.stage]
        return part.stage, [], lambda: ModuleSpec(("stage", part.stage), f"fixed stage {part.stage}", lambda: module,
                                                  (1, part.width_in, *in_size))
    if part.kind == "stem":
        c, s = part.width_out.options[0], part.stride
        return STEM, [], lambda: ModuleSpec(("stem", c, s), f"stem 3→{c} stride {s}", lambda: stem(c, s),
                                            (1, 3, *in_size))
    if part.kind == "block":
        stride = part.stride
        return (f"{part.stage}/{part.index}", [part.payload, part.width_in, part.width_out],
                lambda op, c_in, c_out: ModuleSpec(("op", op, c_in, c_out, stride),
                                                   f"{op} {c_in}→{c_out} stride {stride}",
                                                   lambda: build_op(op, c_in, c_out, stride), (1, c_in, *in_size)))
    if part.kind == "attention":
        name, width = f"{part.stage}/attention", part.width_out
        if isinstance(width, int):  # a fixed width (a fixed stage's channels)
            return name, [part.payload], lambda a: _attention_spec(a, width, size)
        return name, [part.payload, width], lambda a, c: _attention_spec(a, c, size)
    out = part.width_out
    return CONV_HEAD, [part.width_in], lambda c: ModuleSpec(("head", c, out), f"conv_head {c}→{out}",
                                                            lambda: conv_head(c, out), (1, c, *size))


def space_specs(space: SearchSpace, input_size: tuple[int, int],
                fixed: dict[str, nn.Module]) -> list[tuple[str, list[Choice], PartSpecs]]:
    """:func:`part_specs` of every part of ``space``'s skeleton (:meth:`~dcsnas.models.skeleton.Skeleton.parts`)
    for images of ``input_size`` = (height, width) pixels, in the order the network runs them."""
    out, size = [], tuple(input_size)
    for part in space.parts():
        in_size, size = size, conv_output_size(size, part.stride)
        out.append(part_specs(part, in_size, size, fixed))
    return out


def term_options(choices: list[Choice]) -> tuple[list[Choice], list[tuple[int, ...]]]:
    """The distinct choices of a term (a choice listed twice is one key) and every index combination of
    their options, in row-major order."""
    unique = list({c.key: c for c in choices}.values())
    return unique, list(itertools.product(*(range(len(c.options)) for c in unique)))


def _measure_flops(specs: PartSpecs, choices: list[Choice], name: str,
                   cache: dict[tuple, tuple[int, int]]) -> CostTerm:
    """FLOPs/params of the term's module for every combination of its choices' options, counted on the
    ``meta`` device (shapes only, no arithmetic), cached by the modules' keys."""
    unique, combos = term_options(choices)
    shape = [len(c.options) for c in unique]
    flops, params = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
    for index in combos:
        option = {c.key: c.options[i] for c, i in zip(unique, index)}
        spec = specs(*(option[c.key] for c in choices))
        if spec is None:
            continue
        if spec.key + spec.shape not in cache:
            try:
                with torch.device("meta"):
                    module = spec.build()
                cache[spec.key + spec.shape] = (count_flops(module, spec.shape, "meta"), count_params(module))
            except ConfigError as exc:
                raise ConfigError(f"{spec.describe()}: {exc}") from None
        flops[index], params[index] = cache[spec.key + spec.shape]
    return CostTerm(name, tuple(c.key for c in unique), flops, params)


def measure_costs(space: SearchSpace, input_size: tuple[int, int]) -> CostModel:
    """The cost table of ``space`` for inputs of ``input_size`` = (height, width) pixels: one term per part of
    its skeleton (:meth:`~dcsnas.models.skeleton.Skeleton.parts`)."""
    with torch.device("meta"):
        fixed = {name: module.eval() for name, module in SKELETONS[space.skeleton].fixed(space).items()}
    cache: dict[tuple, tuple[int, int]] = {}
    terms = [_measure_flops(specs, choices, name, cache) for name, choices, specs in space_specs(space, input_size,
                                                                                                 fixed)]
    return CostModel(terms, space.choices(), input_size)


@dataclass
class CostConfig:
    """The ``search.cost`` section: the cost term of the architecture step.

    ``metric``: what F is, ``flops`` (the FLOPs table) or ``latency`` (ms of a forward at batch ``batch`` on the
    table's device, from the latency lookup table ``table``: a JSON file of ``dcsnas bench latency-table``; null:
    measured at the start of the search on its device; either way kept in the run directory as
    ``latency_table.json``, :mod:`dcsnas.nas.latency`).

    ``kind``: ``none``; ``fbnet``: L = L_task · (a · log(F / unit))^b (FBNet: a = 0.2, b = 0.6; F in units
    of ``unit`` FLOPs, or of ``unit_ms`` ms for latency (FBNet: µs), so log F > 0 is required); ``hinge``:
    L = L_task + weight · max(0, |F/T − 1| − tolerance) with T = ``target_mflops``·10⁶ FLOPs, or T =
    ``target_ms`` ms for latency.

    ``estimate``, the F used: ``sampled``, that of the step's Gumbel sample relaxed by its weights
    (FBNet); ``expected``, the expectation under p = softmax(α); ``argmax``, that of the current argmax
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
    metric: Literal["flops", "latency"] = added_key("flops")
    table: Optional[str] = added_key(None)
    batch: int = added_key(1, ge=1, le=4096)
    target_ms: Optional[float] = added_key(None, gt=0)
    unit_ms: float = added_key(1e-3, gt=0)

    def __post_init__(self) -> None:
        if self.a <= 0 or self.b <= 0 or self.unit <= 0 or self.weight < 0 or self.tolerance < 0:
            raise ValueError("a, b, unit must be > 0 and weight, tolerance >= 0")
        target = "target_ms" if self.metric == "latency" else "target_mflops"
        other = "target_mflops" if self.metric == "latency" else "target_ms"
        if getattr(self, other) is not None:
            raise ValueError(f"{other} is a target of metric = {'flops' if other == 'target_mflops' else 'latency'!r}"
                             f"; with metric = {self.metric!r} set {target}")
        if self.kind == "hinge" and (getattr(self, target) is None or getattr(self, target) <= 0):
            raise ValueError(f"kind = 'hinge' needs {target} > 0")
        if self.metric == "flops" and self.table is not None:
            raise ValueError("table is the latency table of metric = 'latency'; with metric = 'flops' leave it null")
        if self.estimate is None:
            self.estimate = "argmax" if self.kind == "hinge" else "sampled"


class CostLoss:
    """``loss(task, distribution, sampled)`` → (architecture-step loss, the cost F it used: FLOPs, or ms for
    ``metric: latency``); see :class:`CostConfig`. ``sampled``: the weights of the step's forward pass. The
    space's cost range is checked against the config on construction (errors name the key)."""

    def __init__(self, cfg: CostConfig, costs: CostModel):
        self.cfg, self.costs = cfg, costs
        latency = cfg.metric == "latency"
        # the target and the unit in the table's unit (FLOPs or ms), with their keys and how to print them
        self.target = cfg.target_ms if latency else None if cfg.target_mflops is None else cfg.target_mflops * 1e6
        self.unit = cfg.unit_ms if latency else cfg.unit
        scale, unit_name, target_key, unit_key = (1.0, "ms", "target_ms", "unit_ms") if latency else (
            1e6, "MFLOPs", "target_mflops", "unit")
        low, high = costs.span(cfg.metric)
        size = "×".join(map(str, costs.input_size))
        if cfg.kind == "hinge" and not low <= self.target <= high:
            raise ConfigError(f"search.cost.{target_key} = {self.target / scale:g} is outside the "
                              f"{'latency' if latency else 'FLOPs'} of the search space at {size}: expected a value "
                              f"in [{low / scale:.3f}, {high / scale:.3f}] {unit_name} (smallest, largest "
                              "architecture)")
        if cfg.kind == "fbnet" and low <= self.unit:
            smallest = f"{low:g}" if latency else str(int(round(low)))
            raise ConfigError(f"search.cost.{unit_key} = {self.unit:g}: the smallest architecture has {smallest} "
                              f"{'ms' if latency else 'FLOPs'}, so log(F / {unit_key}) would not be positive; use a "
                              f"{unit_key} below {smallest}")

    def __call__(self, task: Tensor, distribution: ArchDistribution,
                 sampled: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        weights = {"sampled": lambda: sampled, "expected": distribution.probabilities,
                   "argmax": distribution.straight_through_argmax}[cfg.estimate]()
        cost = self.costs.expected(weights, cfg.metric)
        if cfg.kind == "fbnet":
            return task * (cfg.a * torch.log(cost / self.unit)) ** cfg.b, cost
        if cfg.kind == "hinge":
            ratio = cost / self.target
            return task + cfg.weight * torch.relu((ratio - 1).abs() - cfg.tolerance), cost
        return task, cost


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
