"""The run's text log: what a run prints on stderr, also appended to ``<run>/log.txt`` (no bar frames).

A run prints a start-up block (run directory, versions, device and threads, the data set table, the
model's size), one line per epoch (the epoch's scalars as the loop logs them to TensorBoard, images/s,
time, and the evaluation when there was one) and a results block. Hand-written: Python's ``logging``
adds nothing here but configuration (one file, one stream, no levels).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch

import dcsnas

LOG_FILE = "log.txt"
EVAL_KEYS = (("mAP", "mAP"), ("rank-1", "R1"), ("rank-5", "R5"), ("rank-10", "R10"), ("mINP", "mINP"))


class Console:
    """Lines to ``stream`` (default: stderr) and appended to ``path`` (opened per line: nothing stays open);
    silent when ``enabled`` is False (non-main DDP ranks)."""

    def __init__(self, path: str | Path | None, enabled: bool = True, stream: TextIO | None = None):
        self.enabled, self.path, self.stream = enabled, path, stream

    def print(self, text: str = "") -> None:
        if not self.enabled:
            return
        text = text.rstrip("\n") + "\n"
        stream = self.stream or sys.stderr
        stream.write(text)
        stream.flush()
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as log:
                log.write(text)


def aligned(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows of cells as text lines, columns padded (the first left-aligned, the others right-aligned)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            .rstrip() for row in rows]


def number(value: float) -> str:
    """4 significant digits (``1.234``, ``0.0001``, ``1.5e-05``)."""
    return f"{value:.4g}"


def threads_line(device: torch.device) -> str:
    """Device, torch CPU threads, the cores this process may use, the OpenMP wait policy and the machine's
    load (a note when other processes hold the cores: timings are then slow and noisy)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    line = (f"device: {device} · CPU threads: {torch.get_num_threads()} (this process may use {cores} cores) · "
            f"OpenMP wait policy: {os.environ.get('OMP_WAIT_POLICY', 'default (active)')}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > (os.cpu_count() or 1) * 0.75:
        line += f" · the machine is busy (load {load:.1f} on {os.cpu_count()} cores): timings will be slower"
    return line


def startup_block(command: str, run_path: Path, device: torch.device, dataset_stats: dict, model: str) -> list[str]:
    """The start-up block: versions, run directory, device and threads, the data set table, ``model`` (one
    line naming the network and its size)."""
    rows = [["split", "identities", "images", "cameras"]]
    rows += [[split, str(s["identities"]), str(s["images"]), str(s["cameras"])]
             for split in ("train", "query", "gallery") for s in [dataset_stats[split]]]
    return [f"dcsnas {dcsnas.__version__} {command} · torch {torch.__version__} · python "
            f"{sys.version.split()[0]}",
            f"run directory: {run_path}", threads_line(device),
            f"data set: {dataset_stats['name']} at {dataset_stats['root']}", *aligned(rows), model]


def eval_text(split: str, result: dict) -> str:
    """``test mAP 12.3% R1 20.1% R5 … R10 … mINP …`` (accuracies in %; CMC ranks 1, 5, 10)."""
    return f"{split} " + " ".join(f"{label} {100 * result[k]:.1f}%" for k, label in EVAL_KEYS if k in result)


def epoch_line(epoch: int, epochs: int, scalars: dict[str, float], seconds: float | None = None, images: int = 0,
               evals: dict[str, dict] | None = None, extra: str = "") -> str:
    """One line per epoch: ``epoch 3/12`` then every scalar of ``scalars`` (the names the loop logs; a
    ``loss/`` prefix dropped), images/s and seconds (when ``seconds`` is given), ``extra`` and the
    evaluations of ``evals`` (split → metrics)."""
    parts = [f"epoch {epoch}/{epochs}"]
    parts += [f"{key.removeprefix('loss/')} {number(value)}" for key, value in scalars.items()
              if isinstance(value, (int, float)) and math.isfinite(value)]
    if seconds is not None:
        parts += [f"{images / max(seconds, 1e-9):.1f} img/s", f"{seconds:.1f}s"]
    parts += [extra] if extra else []
    parts += [eval_text(split, result) for split, result in (evals or {}).items()]
    return " | ".join(parts)


def results_block(metrics: dict[str, Any], files: dict[str, Any]) -> list[str]:
    """The results block: the test metrics, the untrained reference and the best
    validation epoch when present, the training time, then ``files`` (label → path)."""
    test = metrics["test"]
    epochs = metrics["epochs"]
    lines = [f"results on {metrics['dataset']} ({metrics['protocol']} protocol) after {epochs} "
             f"epoch{'s' * (epochs != 1)}, "
             f"trained in {metrics['train_time_s']:.1f}s:",
             "  " + eval_text("test", test)]
    if metrics.get("untrained_test"):
        lines.append("  " + eval_text("untrained", metrics["untrained_test"]) + " (chance-level reference)")
    if metrics.get("best_val"):
        best = metrics["best_val"]
        lines.append(f"  best validation epoch {best['epoch']}: " + eval_text("val", best))
    lines += [f"{label}: {path}" for label, path in files.items()]
    return lines
