"""The summary of an NNI experiment's trials (``dcsnas tune`` and the multi-trial ``search --strategy
nni:*``): every trial with its parameters and its metric, best first, as ``summary.json``, ``trials.csv`` and
``summary.md`` in the run directory. Does not import NNI."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Optional

from dcsnas.utils.io import atomic_write_json, atomic_write_text


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def write_summary(path: str | Path, trials: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Write ``summary.json``, ``trials.csv`` and ``summary.md`` into the folder ``path``.

    ``trials``: one mapping per trial with ``trial`` (its id), ``status``, ``params`` (the tuner's values
    or the sampled architecture), ``metric`` (final value, or None) and ``intermediate`` (values reported
    after each evaluation). Trials are sorted best first (higher is better); the summary's ``best`` is the
    first one with a final metric. Returns the summary.
    """
    path = Path(path)
    ranked = sorted(trials, key=lambda t: (_number(t.get("metric")) is None, -(_number(t.get("metric")) or 0.0)))
    best = next((t for t in ranked if _number(t.get("metric")) is not None), None)
    summary = {"metric": metric, "best": best, "num_trials": len(trials),
               "num_succeeded": sum(t.get("status") == "SUCCEEDED" for t in trials), "trials": ranked}
    atomic_write_json(path / "summary.json", summary)
    keys = sorted({k for t in ranked for k in t.get("params", {})})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "status", metric, *keys])
    for t in ranked:
        writer.writerow([t["trial"], t.get("status", ""), "" if t.get("metric") is None else t["metric"],
                         *(t.get("params", {}).get(k, "") for k in keys)])
    atomic_write_text(path / "trials.csv", buffer.getvalue())
    lines = [f"# {len(trials)} trials, best {metric}: "
             + ("none" if best is None else f"{best['metric']:.4f} (trial {best['trial']})"), "",
             "| " + " | ".join(["trial", "status", metric, *keys]) + " |",
             "|" + "---|" * (3 + len(keys))]
    for t in ranked:
        value = "" if _number(t.get("metric")) is None else f"{t['metric']:.4f}"
        lines.append("| " + " | ".join([str(t["trial"]), str(t.get("status", "")), value,
                                        *(str(t.get("params", {}).get(k, "")) for k in keys)]) + " |")
    atomic_write_text(path / "summary.md", "\n".join(lines) + "\n")
    return summary
