"""``dcsnas compare``: trained Re-ID runs side by side, accuracy against cost.

:func:`compare_runs` reads the runs (:mod:`~dcsnas.compare.runs`: one data set and protocol), rebuilds each
model from its config (no checkpoint: costs do not depend on the weights) and profiles it at batch 1 and
the run's input size (:mod:`dcsnas.bench.model`), builds the table (:mod:`~dcsnas.compare.table`) and
the mAP-FLOPs Pareto front (:mod:`~dcsnas.compare.pareto`), and with ``out`` writes ``compare.csv``,
``compare.json`` and the figures (:mod:`~dcsnas.compare.plots`): ``map_vs_flops.png``, ``cmc.png`` and
``arch_<run>.png`` per searched run.

Runs whose configs differ only in ``seed`` form a group (:mod:`~dcsnas.compare.seeds`): every metric as
mean ± std over its seeds with their number; when a group has several seeds the mAP-FLOPs figure shows
the groups' means with error bars and the front on the means, and ``paired`` compares each group seed by
seed with a reference run's group.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from dcsnas.bench.model import profile_models
from dcsnas.compare.pareto import pareto_front
from dcsnas.compare.plots import plot_arch, plot_cmc, plot_pareto
from dcsnas.compare.runs import CompareRun, load_run, load_runs, setting
from dcsnas.compare.seeds import (
    ACCURACY,
    CONFIDENCE,
    format_groups,
    format_paired,
    paired_differences,
    seed_free_hash,
    summarize_over_seeds,
)
from dcsnas.compare.table import build_row, format_table, write_csv
from dcsnas.errors import ConfigError
from dcsnas.models.builder import create_model
from dcsnas.utils.io import atomic_write_json

__all__ = ["CompareRun", "compare_runs", "format_table", "load_run", "load_runs", "pareto_front", "profile_runs",
           "summarize_over_seeds"]

LOADAVG = Path("/proc/loadavg")  # Linux: its 4th field counts the runnable tasks now
GROUP_CONSTANT = ("kind", "backbone", "attention", "input", "epochs", "setting", "params", "flops")


def profile_runs(runs: Sequence[CompareRun], device: str = "cpu", repeats: int = 20, warmup: int = 3,
                 latency: bool = True) -> list[dict[str, Any]]:
    """:func:`~dcsnas.bench.model.profile_models` of the runs' models (built from their configs without
    ImageNet weights) at batch 1 and each run's input size."""
    models = [create_model(replace(r.model_config(), pretrained=False), r.metrics["num_classes"]) for r in runs]
    shapes = [(1, 3, *r.input_size) for r in runs]
    return profile_models(models, shapes, device, repeats, warmup, latency)


def other_runnable(samples: int = 20, interval_s: float = 0.05) -> float:
    """The mean number of runnable tasks of other processes over ``samples`` reads of ``/proc/loadavg`` (its
    running-tasks field, minus this reading thread); the 1-minute load average where that file is missing."""
    if not LOADAVG.is_file():
        return os.getloadavg()[0]
    counts = []
    for _ in range(samples):
        counts.append(int(LOADAVG.read_text().split()[3].split("/")[0]) - 1)
        time.sleep(interval_s)
    return sum(counts) / len(counts)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def _reference(runs: Sequence[CompareRun], rows: Sequence[dict[str, Any]], paired: str) -> str:
    """The seed group of the run ``paired`` names (its directory name or path)."""
    for run, row in zip(runs, rows):
        if paired in (run.name, str(run.path)) or Path(paired).resolve() == run.path.resolve():
            return row["seed_group"]
    raise ConfigError(f"--paired {paired!r} is none of the compared runs: {', '.join(r.name for r in runs)}")


def compare_runs(paths: Sequence[str | Path], out: Optional[str | Path] = None, devices: Sequence[str] = ("cpu",),
                 repeats: int = 20, warmup: int = 3, latency: bool = True,
                 paired: Optional[str] = None) -> dict[str, Any]:
    """Compare the runs in ``paths``; ``devices``: where cost is profiled (``cpu``, ``cuda``, ``cuda:N``);
    ``paired``: a run whose seed group is the reference of the paired view.

    Returns the report: ``dataset``, ``protocol``, ``profile`` (settings, GPU names, the 1-minute load
    average before profiling, :func:`other_runnable` after, and ``noisy``: why CPU latencies are unreliable,
    empty on a quiet machine), ``rows``
    (:func:`~dcsnas.compare.table.build_row`), ``pareto_front`` (run names by increasing FLOPs), ``cmc``
    (run name → CMC list), ``groups`` (:func:`~dcsnas.compare.seeds.summarize_over_seeds` of the rows,
    ``pareto`` on the means), ``paired`` (with ``paired``: :func:`~dcsnas.compare.seeds.paired_differences`),
    ``table`` (the text to print; not in compare.json) and, with ``out``, ``files`` (paths written).
    """
    runs = load_runs(paths)
    device_types = [torch.device(d).type for d in devices]
    load_before = os.getloadavg()[0]  # recorded; includes this process's own recent work (a demo's trainings)
    costs = {t: profile_runs(runs, d, repeats, warmup, latency) for d, t in zip(devices, device_types)}
    rows = [build_row(run, {t: costs[t][i] for t in device_types}) for i, run in enumerate(runs)]
    for run, row in zip(runs, rows):
        row.update(seed=run.config.seed, seed_group=seed_free_hash(run.config), setting=setting(run))
    front = pareto_front([(r["flops"], r["mAP"]) for r in rows])
    for i in front:
        rows[i]["pareto"] = True
    metrics = [*ACCURACY, "train_time_s", *(f"{t}_{k}" for t in device_types for k in ("latency_ms", "peak_memory_mb"))]
    groups = summarize_over_seeds(rows, "seed_group", metrics, constant=GROUP_CONSTANT)
    group_front = pareto_front([(g["flops"], g["mAP"]) for g in groups])
    for i, group in enumerate(groups):
        group["pareto"] = i in group_front
    repeated = any(g["n"] > 1 for g in groups)
    cores, others = os.cpu_count() or 1, other_runnable()
    noisy = (f"{others:.1f} other runnable tasks on {cores} cores" if latency and others > 0.5 * cores else "")
    dataset, protocol = runs[0].metrics["dataset"], runs[0].metrics["protocol"]
    report: dict[str, Any] = {
        "dataset": dataset, "protocol": protocol,
        "profile": {"devices": list(devices), "batch": 1, "repeats": repeats if latency else 0, "warmup": warmup,
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "gpu": {d: torch.cuda.get_device_name(d) for d, t in zip(devices, device_types) if t == "cuda"},
                    "load_average_before": load_before,
                    "other_runnable_tasks": others, "noisy": noisy,
                    "memory_method": {t: costs[t][0]["memory_method"] for t in device_types}},
        "rows": rows, "pareto_front": [rows[i]["run"] for i in front],
        "cmc": {run.name: run.metrics["test"]["cmc"] for run in runs},
        "groups": groups, "groups_pareto_front": [groups[i]["group"] for i in group_front],
        "table": format_table(rows, device_types, repeats if latency else None, noisy),
    }
    if repeated:
        report["table"] += "\n\n" + format_groups(groups)
    if paired is not None:
        reference = _reference(runs, rows, paired)
        names = {g["seed_group"]: g["group"] for g in groups}
        pairs = paired_differences(rows, "seed_group", reference, ACCURACY)
        for pair in pairs:
            pair["group"] = names[pair["seed_group"]]
        report["paired"] = {"reference": names[reference], "confidence": CONFIDENCE, "groups": pairs}
        report["table"] += "\n\n" + format_paired(pairs, "group", names[reference])
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        title = f"{dataset} ({protocol} protocol)"
        files = {"csv": out / "compare.csv", "json": out / "compare.json", "map_vs_flops": out / "map_vs_flops.png",
                 "cmc": out / "cmc.png"}
        if repeated:  # one point per group: the mean over seeds, error bars of one std
            points = [{**g, "run": f"{g['group']} (n={g['n']})"} for g in groups]
            plot_pareto(points, group_front, files["map_vs_flops"], f"mAP against FLOPs over seeds: {title}",
                        errors=[g["mAP_std"] for g in groups])
        else:
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
