"""The comparison table: one row per run with its accuracy (from ``metrics.json``) and its cost (from
:mod:`dcsnas.bench.model`), printed as text and written as CSV.

Row keys and units: ``mAP``, ``rank-1/5/10``, ``mINP`` as fractions in [0, 1] (the test split, as in
metrics.json); ``params``: parameters the inference forward uses (identity classifiers excluded),
``params_total``: all; ``flops``: per image at the run's input size (one multiply-add = 2 FLOPs);
``<device>_latency_ms``: median forward time at batch 1; ``<device>_peak_memory_mb``: MiB of one forward
above the weights; ``train_time_s``: training wall time in seconds; ``pareto``: on the mAP-FLOPs front;
``ib``: whether the run trained with the Information-Bottleneck term (``off``, or η and the first term's
form, ``0.1:authors``), ``ib_start_epoch``: its first epoch (1-based; None when off); ``health``: ``ok``, or
the epoch the embedding collapsed (``collapse@E``) or CE stayed at uniform (``CE@E``), None for runs without
the record.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from dcsnas.compare.runs import CompareRun, health_label
from dcsnas.utils.io import atomic_write_text

RANKS = (1, 5, 10)


def ib_setting(run: CompareRun) -> tuple[str, Optional[int]]:
    """``("off", None)`` or ``("<η>:<ib_ixf>", first IB epoch, 1-based)`` of the run's loss config."""
    loss = run.config.loss
    if loss.ib_weight == 0:
        return "off", None
    return f"{loss.ib_weight:g}:{loss.ib_ixf}", loss.ib_start_epoch(run.config.optim.epochs) + 1


def build_row(run: CompareRun, costs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The row of ``run``; ``costs`` maps a device type (``cpu``, ``cuda``) to the run's profile on it."""
    test = run.metrics["test"]
    any_cost = next(iter(costs.values()))
    row: dict[str, Any] = {
        "run": run.name, "kind": run.kind, "backbone": run.config.model.backbone,
        "attention": "; ".join(f"{stage}:{label}" for stage, label in run.attentions()),
        "dataset": run.metrics["dataset"], "protocol": run.metrics["protocol"],
        "input": "x".join(map(str, run.input_size)), "epochs": run.metrics["epochs"],
        **dict(zip(("ib", "ib_start_epoch"), ib_setting(run))), "health": health_label(run.metrics),
        "mAP": test["mAP"], **{f"rank-{r}": test.get(f"rank-{r}") for r in RANKS}, "mINP": test["mINP"],
        "params": any_cost["params"], "params_total": any_cost["params_total"], "flops": any_cost["flops"],
    }
    for device, cost in costs.items():
        row[f"{device}_latency_ms"] = cost["latency_ms"]
        row[f"{device}_peak_memory_mb"] = cost["peak_memory_mb"]
    row.update(train_time_s=run.metrics["train_time_s"], pareto=False, path=str(run.path))
    return row


def si(value: float) -> str:
    """``value`` with 3 significant digits and a K/M/G suffix: ``8.11G``, ``241K``."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.2f}h"


def _columns(devices: Sequence[str]) -> list[tuple[str, str, Callable[[Any], str]]]:
    """(header, row key, formatter) of the printed table."""
    def percent(value: float) -> str:
        return f"{100 * value:.1f}"

    cols = [("run", "run", str), ("kind", "kind", str), ("input", "input", str), ("epochs", "epochs", str),
            ("IB", "ib", str), ("health", "health", str), ("mAP", "mAP", percent)]
    cols += [(f"R-{r}", f"rank-{r}", percent) for r in RANKS]
    cols += [("mINP", "mINP", percent), ("params", "params", si), ("FLOPs", "flops", si)]
    for device in devices:
        label = "GPU" if device == "cuda" else device.upper()
        cols += [(f"{label} ms", f"{device}_latency_ms", lambda v: f"{v:.2f}"),
                 (f"{label} MiB", f"{device}_peak_memory_mb", lambda v: f"{v:.3g}")]
    cols += [("train", "train_time_s", _duration), ("front", "pareto", lambda v: "*" if v else "")]
    return cols


def format_table(rows: Sequence[dict[str, Any]], devices: Sequence[str], repeats: Optional[int],
                 noisy: str = "") -> str:
    """The rows as an aligned text table (missing values: ``-``) with a legend of the columns.
    ``repeats``: forwards per latency median, ``None`` when latency was not measured; ``noisy``: why the
    CPU latency and memory are unreliable (the machine was busy), printed in the legend."""
    cols = _columns(devices)
    cells = [[header for header, _, _ in cols]]
    cells += [["-" if row.get(key) is None else fmt(row[key]) for _, key, fmt in cols] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    latency = f"median of {repeats} forwards at batch 1" if repeats else "not measured"
    lines.append(f"kind: fixed backbone or searched (built from an arch.json); input: height x width in pixels; "
                 f"IB: Information-Bottleneck loss weight:form (off: none); health: ok, or the epoch the embedding "
                 f"collapsed (collapse@E) or CE stayed at uniform (CE@E); accuracy in % (test split); params: "
                 f"those the inference network uses (classifiers excluded); FLOPs per image (multiply-add = 2); "
                 f"latency (ms): {latency}; memory: peak MiB of one forward above the weights; train: training "
                 f"time; front: on the mAP-FLOPs Pareto front")
    if noisy:
        lines.append(f"NOISY: CPU latency and memory were measured on a busy machine ({noisy}); "
                     "compare them only from a quiet machine")
    return "\n".join(lines)


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """The rows as CSV with every key as a column (missing values empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    atomic_write_text(path, buffer.getvalue())
