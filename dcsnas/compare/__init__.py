"""``dcsnas compare``: trained Re-ID runs side by side, accuracy against cost.

:func:`compare_runs` reads the runs (:mod:`~dcsnas.compare.runs`: one data set and protocol), rebuilds each
model from its config (no checkpoint: costs do not depend on the weights) and profiles it at batch 1 and
the run's input size (:mod:`dcsnas.engine.profile`), builds the table (:mod:`~dcsnas.compare.table`) and
the mAP-FLOPs Pareto front (:mod:`~dcsnas.compare.pareto`), and with ``out`` writes ``compare.csv``,
``compare.json`` and the figures (:mod:`~dcsnas.compare.plots`): ``map_vs_flops.png``, ``cmc.png`` and
``arch_<run>.png`` per searched run.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

from dcsnas.compare.pareto import pareto_front
from dcsnas.compare.runs import CompareRun, load_run, load_runs
from dcsnas.compare.table import build_row, format_table, write_csv

__all__ = ["CompareRun", "compare_runs", "format_table", "load_run", "load_runs", "pareto_front", "profile_runs"]


def profile_runs(runs: Sequence[CompareRun], device: str = "cpu", repeats: int = 20, warmup: int = 3,
                 latency: bool = True) -> list[dict[str, Any]]:
    """:func:`~dcsnas.engine.profile.profile_models` of the runs' models (built from their configs without
    ImageNet weights) at batch 1 and each run's input size."""
    from dcsnas.engine.profile import profile_models
    from dcsnas.models.builder import create_model

    models = [create_model(replace(r.model_config(), pretrained=False), r.metrics["num_classes"]) for r in runs]
    shapes = [(1, 3, *r.input_size) for r in runs]
    return profile_models(models, shapes, device, repeats, warmup, latency)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def compare_runs(paths: Sequence[str | Path], out: Optional[str | Path] = None, devices: Sequence[str] = ("cpu",),
                 repeats: int = 20, warmup: int = 3, latency: bool = True) -> dict[str, Any]:
    """Compare the runs in ``paths``; ``devices``: where cost is profiled (``cpu``, ``cuda``, ``cuda:N``).

    Returns the report: ``dataset``, ``protocol``, ``profile`` (settings, GPU names, the 1-minute load
    average before profiling: CPU latencies are only comparable on a quiet machine), ``rows``
    (:func:`~dcsnas.compare.table.build_row`), ``pareto_front`` (run names by increasing FLOPs), ``cmc``
    (run name → CMC list), ``table`` (the text to print; not in compare.json) and, with ``out``, ``files``
    (paths written).
    """
    import torch

    from dcsnas.compare.plots import plot_arch, plot_cmc, plot_pareto
    from dcsnas.utils.io import atomic_write_json

    runs = load_runs(paths)
    device_types = [torch.device(d).type for d in devices]
    load_before = os.getloadavg()[0]
    costs = {t: profile_runs(runs, d, repeats, warmup, latency) for d, t in zip(devices, device_types)}
    rows = [build_row(run, {t: costs[t][i] for t in device_types}) for i, run in enumerate(runs)]
    front = pareto_front([(r["flops"], r["mAP"]) for r in rows])
    for i in front:
        rows[i]["pareto"] = True
    dataset, protocol = runs[0].metrics["dataset"], runs[0].metrics["protocol"]
    report: dict[str, Any] = {
        "dataset": dataset, "protocol": protocol,
        "profile": {"devices": list(devices), "batch": 1, "repeats": repeats if latency else 0, "warmup": warmup,
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "gpu": {d: torch.cuda.get_device_name(d) for d, t in zip(devices, device_types) if t == "cuda"},
                    "load_average_before": load_before,
                    "memory_method": {t: costs[t][0]["memory_method"] for t in device_types}},
        "rows": rows, "pareto_front": [rows[i]["run"] for i in front],
        "cmc": {run.name: run.metrics["test"]["cmc"] for run in runs},
        "table": format_table(rows, device_types, repeats if latency else None),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        title = f"{dataset} ({protocol} protocol)"
        files = {"csv": out / "compare.csv", "json": out / "compare.json", "map_vs_flops": out / "map_vs_flops.png",
                 "cmc": out / "cmc.png"}
        plot_pareto(rows, front, files["map_vs_flops"], f"mAP against FLOPs: {title}")
        plot_cmc(report["cmc"], files["cmc"], f"CMC: {title}")
        for run in runs:
            if run.kind == "searched":
                files[f"arch:{run.name}"] = out / f"arch_{_file_name(run.name)}.png"
                plot_arch(run.arch(), files[f"arch:{run.name}"], f"{run.name} (arch: {run.arch_path})")
        write_csv(files["csv"], rows)
        report["files"] = {k: str(v) for k, v in files.items()}
        atomic_write_json(files["json"], {k: v for k, v in report.items() if k != "table"})
    return report
