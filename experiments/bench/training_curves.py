"""Learning curves of finished or running dcsnas runs side by side: CE against uniform, the embedding's spread
and mean pairwise cosine, the BNNeck γ, and test mAP, per epoch (the ``health/*`` figures of metrics.json, or of
``checkpoints/last.pt`` while a run is still training).

    python experiments/bench/training_curves.py --run LABEL=RUN_DIR [--run ...] --out curves.png

Prints one JSON line per run (its last epoch's figures) and writes the PNG atomically.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

PANELS = [("health/ce_ratio", "CE / log(#identities)"), ("health/fspread", "embedding spread / magnitude"),
          ("health/fcos", "mean pairwise cosine"), ("health/bnneck_gamma", "BNNeck |γ|"), ("test_mAP", "test mAP (%)")]


def run_history(path: Path) -> list[dict]:
    """The run's per-epoch records (metrics.json when it finished, else its last checkpoint's history)."""
    metrics = path / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())["history"]
    from dcsnas.engine.checkpoint import load_checkpoint

    return load_checkpoint(path / "checkpoints" / "last.pt")["history"]


def series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    epochs, values = [], []
    for record in history:
        value = 100 * record["test"]["mAP"] if key == "test_mAP" and "test" in record else record["train"].get(key)
        if value is not None:
            epochs.append(record["epoch"])
            values.append(value)
    return epochs, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=DIR")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    runs = []
    for item in args.run:
        label, _, path = item.partition("=")
        if not path:
            parser.error(f"--run {item!r}: expected LABEL=RUN_DIR")
        runs.append((label, run_history(Path(path))))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dcsnas.utils.io import atomic_write_bytes

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
    for ax, (key, title) in zip(axes, PANELS):
        for label, history in runs:
            epochs, values = series(history, key)
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
        if key == "health/ce_ratio":
            ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(args.title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(args.out, buffer.getvalue())
    for label, history in runs:
        last = history[-1]
        print(json.dumps({"run": label, "epoch": last["epoch"],
                          **{k: round(v, 4) for k, v in last["train"].items() if k.startswith("health/")},
                          "test_mAP": round(100 * last["test"]["mAP"], 2) if "test" in last else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
