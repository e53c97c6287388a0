"""How well a latency lookup table (:mod:`dcsnas.nas.latency`) predicts whole networks; times in milliseconds.

:func:`check_table` draws architectures of the space uniformly (each choice's option independently, from a
seeded generator), sums the table's entries for each (the table's estimate, what the search optimises) and
times the derived network built standalone through :mod:`dcsnas.models` (``create_model("searched", …)`` from
its arch.json), in eval mode at the table's batch and input size, with the same timer as the table
(:func:`~dcsnas.nas.latency.time_module`): the whole Re-ID model (backbone, attentions, BNNeck head: what a
deployment runs) and its backbone alone (``forward_features``: the parts the table has entries for). The
relative error is (table − measured) / measured: negative where the table under-estimates. Beside the table's
sum, the architecture's own table modules are timed again right before its network (``parts_ms``): on a shared
machine the load drifts between the table's measurement and the check, and ``parts_ms`` against
``measured_ms`` separates the table's additivity error from that drift.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from dcsnas.models.arch import write_arch
from dcsnas.models.builder import create_model
from dcsnas.models.skeleton import SKELETONS
from dcsnas.nas.arch import derive_arch
from dcsnas.nas.cost import CostModel
from dcsnas.nas.latency import space_entries, time_module
from dcsnas.nas.paths import uniform_path
from dcsnas.nas.space import SearchSpace


class _Features(nn.Module):
    """A Re-ID model's backbone and attentions only (its ``forward_features``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)


def random_architectures(space: SearchSpace, count: int, seed: int = 0) -> list[dict[str, int]]:
    """``count`` architectures of ``space`` drawn by :func:`~dcsnas.nas.paths.uniform_path` from a generator
    seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    choices = {c.key: c for c in space.choices()}
    return [uniform_path(choices, generator) for _ in range(count)]


def check_table(space: SearchSpace, costs: CostModel, table: dict[str, Any], archs: int = 5, seed: int = 0,
                device: torch.device | str = "cpu", threads: Optional[int] = None, warmup: int = 5,
                repeats: int = 20, indices: Optional[list[dict[str, int]]] = None, rounds: int = 3) -> dict[str, Any]:
    """Table sum against measured latency for ``archs`` random architectures (or the given ``indices``), at the
    table's batch, input size and threads (unless ``threads``) (``costs``: the cost model with the table attached,
    :meth:`~dcsnas.nas.cost.CostModel.with_latency`; ``table``: its document). Every time is the median over
    ``rounds`` rounds that each time every architecture once (a burst of load from other processes falls on one
    round, not on one architecture). Returns a JSON-ready dict: per architecture its choices, ``table_ms``,
    ``parts_ms`` (its table modules timed again), ``measured_ms`` (whole model), ``measured_backbone_ms`` and the
    relative errors; then the mean and largest absolute relative errors."""
    device = torch.device(device)
    threads = threads or table["threads"]
    batch, size = table["batch"], tuple(table["input_size"])
    entries = space_entries(space, size, SKELETONS[space.skeleton].fixed(space))
    choices = indices if indices is not None else random_architectures(space, archs, seed)
    labels = [{c.key: c.labels[choice[c.key]] for c in space.choices()} for choice in choices]
    times: list[dict[str, list[float]]] = [{"parts": [], "model": [], "backbone": []} for _ in choices]
    with tempfile.TemporaryDirectory() as folder:
        models = []
        for i, choice in enumerate(choices):
            path = Path(folder) / f"arch_{i}.json"
            write_arch(path, derive_arch(space, choice, costs, {}))
            models.append(create_model("searched", 751, arch=str(path)))
        for _ in range(rounds):
            for model, label, into in zip(models, labels, times):
                into["parts"].append(sum(
                    time_module(e.spec.build(), (batch, *e.spec.shape[1:]), device, threads, warmup, repeats)
                    for e in entries if e.spec is not None and all(label[k] == v for k, v in e.options.items())))
                into["model"].append(time_module(model, (batch, 3, *size), device, threads, warmup, repeats))
                into["backbone"].append(time_module(_Features(model), (batch, 3, *size), device, threads, warmup,
                                                    repeats))
    rows = []
    for choice, label, timed in zip(choices, labels, times):
        parts, measured, backbone = (statistics.median(timed[k]) for k in ("parts", "model", "backbone"))
        predicted = costs.value(choice, "latency")
        rows.append({"choices": {c.key: label[c.key] for c in space.choices() if c.searchable},
                     "mflops": costs.exact(choice, "flops") / 1e6,
                     "table_ms": round(predicted, 4), "measured_ms": round(measured, 4),
                     "relative_error": round((predicted - measured) / measured, 4),
                     "parts_ms": round(parts, 4), "relative_error_parts": round((parts - measured) / measured, 4),
                     "measured_backbone_ms": round(backbone, 4),
                     "relative_error_backbone": round((predicted - backbone) / backbone, 4)})
    errors = [abs(r["relative_error"]) for r in rows]
    backbone_errors = [abs(r["relative_error_backbone"]) for r in rows]
    return {
        "space": space.name, "table": {k: table.get(k) for k in ("device", "device_name", "torch", "batch",
                                                                 "input_size", "threads", "warmup", "repeats")},
        "measured": {"device": str(device), "threads": threads, "warmup": warmup, "repeats": repeats,
                     "rounds": rounds, "torch": torch.__version__},
        "architectures": rows,
        "mean_abs_relative_error": round(statistics.mean(errors), 4),
        "max_abs_relative_error": round(max(errors), 4),
        "mean_abs_relative_error_backbone": round(statistics.mean(backbone_errors), 4),
        "mean_abs_relative_error_parts": round(statistics.mean(abs(r["relative_error_parts"]) for r in rows), 4),
        "mean_relative_error": round(statistics.mean(r["relative_error"] for r in rows), 4),
    }
