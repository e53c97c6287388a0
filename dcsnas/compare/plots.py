"""PNG figures of a comparison: mAP against FLOPs with the Pareto front, CMC curves, and the diagram of a
searched architecture (blocks coloured by op, attention placements marked). Each function writes one file
(matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

from dcsnas.compare.runs import attention_label
from dcsnas.compare.table import si
from dcsnas.models.arch import CONV_HEAD, RESNET50_CHANNELS, STEM, Arch, MobileNetV2Arch
from dcsnas.models.blocks import SKIP, parse_op
from dcsnas.utils.io import atomic_savefig

DPI = 130
KIND_MARKERS = {"fixed": "o", "searched": "^"}
SETTING_FILLS = ("full", "none", "left", "bottom")  # one marker fill per input size / epochs setting
ATTENTION_COLOR = "#d62728"
RESNET50_BLOCKS = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _run_colors(count: int) -> list:
    cmap = _pyplot().get_cmap("tab10" if count <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(count)]


def _flops_scale(flops: Sequence[float]) -> tuple[float, str]:
    for factor, unit in ((1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "KFLOPs")):
        if max(flops) >= factor:
            return factor, unit
    return 1.0, "FLOPs"


def plot_pareto(rows: Sequence[dict[str, Any]], front: Sequence[int], path: str | Path, title: str,
                errors: Optional[Sequence[Optional[float]]] = None) -> None:
    """mAP (%) against FLOPs per image, one point per row (marker by kind, colour by run), the Pareto front
    (indices ``front`` into ``rows``, by increasing FLOPs) as a staircase: the best mAP reachable at each cost.
    ``errors``: per row a vertical error bar of ± that much mAP (a fraction, like ``mAP``; None: no bar)."""
    plt = _pyplot()
    factor, unit = _flops_scale([r["flops"] for r in rows])
    xs, ys = [r["flops"] / factor for r in rows], [100 * r["mAP"] for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    fx, fy = [xs[i] for i in front], [ys[i] for i in front]
    ax.step(fx + [max(xs) * 1.05], fy + [fy[-1]], where="post", color="0.35", linestyle="--", linewidth=1.2,
            label="Pareto front", zorder=1)
    ax.scatter(fx, fy, s=240, facecolors="none", edgecolors="0.35", linewidths=1.2, zorder=2)
    if errors is not None:
        bars = [(x, y, 100 * e) for x, y, e in zip(xs, ys, errors) if e is not None]
        if bars:
            bx, by, be = zip(*bars)
            ax.errorbar(bx, by, yerr=be, fmt="none", ecolor="0.2", elinewidth=1, capsize=4, zorder=2.5)
    settings = list(dict.fromkeys(r.get("setting", "") for r in rows))  # input size and epochs, in order
    fills = {s: SETTING_FILLS[i % len(SETTING_FILLS)] for i, s in enumerate(settings)}
    for row, x, y, color in zip(rows, xs, ys, _run_colors(len(rows))):
        ax.plot([x], [y], marker=KIND_MARKERS[row["kind"]], markersize=9, color=color, markeredgecolor="black",
                fillstyle=fills[row.get("setting", "")], markeredgewidth=0.8, linestyle="none", zorder=3)
        label = row["run"] + (f" ({row['setting']})" if len(settings) > 1 else "")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(7, 6), fontsize=8)
    for kind, marker in KIND_MARKERS.items():
        if any(r["kind"] == kind for r in rows):
            ax.scatter([], [], marker=marker, color="0.6", edgecolors="black", label=f"{kind} architecture")
    if len(settings) > 1:  # runs of different input sizes or epochs: not comparable, told apart by the fill
        for setting in settings:
            ax.plot([], [], marker="s", color="0.6", markeredgecolor="black", fillstyle=fills[setting],
                    linestyle="none", label=f"{setting} (differs: not comparable)")
    spread = [100 * e if e is not None else 0.0 for e in errors] if errors is not None else [0.0] * len(ys)
    low, high = min(y - e for y, e in zip(ys, spread)), max(y + e for y, e in zip(ys, spread))
    margin = max(1.0, 0.08 * (high - low))
    ax.set_ylim(low - margin, high + 2 * margin)
    ax.set_xlabel(f"{unit} per image (multiply-add = 2 FLOPs)")
    ax.set_ylabel("mAP (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=DPI)
    plt.close(fig)


def plot_cmc(curves: dict[str, Sequence[float]], path: str | Path, title: str, max_rank: int = 20) -> None:
    """CMC curves (matching rate in % against rank 1..``max_rank``), one line per run name."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for (name, cmc), color in zip(curves.items(), _run_colors(len(curves))):
        ranks = list(range(1, min(max_rank, len(cmc)) + 1))
        ax.plot(ranks, [100 * cmc[r - 1] for r in ranks], marker="o", markersize=3, color=color,
                label=f"{name} (rank-1 {100 * cmc[0]:.1f}%)")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(0.5, max_rank + 0.5)
    ax.set_xticks([1, *range(5, max_rank + 1, 5)])
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=DPI)
    plt.close(fig)


def _stages(arch: Arch) -> list[tuple[str, str, list[str], int, str | None]]:
    """(name, caption, block labels, width, attention label) of each stage, stem and head included."""
    def label(stage) -> str | None:
        return None if stage.attention is None else attention_label(stage.attention.name, stage.attention.options)

    if isinstance(arch, MobileNetV2Arch):
        out = [(STEM, f"{arch.stem_channels} ch\nstride {arch.stem_stride}", ["conv3x3"], arch.stem_channels, None)]
        out += [(s.name, f"{s.width} ch\nstride {s.stride}", list(s.ops), s.width, label(s)) for s in arch.stages]
        return out + [(CONV_HEAD, f"{arch.head_channels} ch", ["conv1x1"], arch.head_channels, None)]
    out = [(STEM, "64 ch\nstride 4", ["conv7x7"], 64, None)]
    attention = {s.name: label(s) for s in arch.stages}
    for name, blocks in RESNET50_BLOCKS.items():
        stride = arch.last_stride if name == "layer4" else (1 if name == "layer1" else 2)
        out.append((name, f"{RESNET50_CHANNELS[name]} ch\nstride {stride}", ["bottleneck"] * blocks,
                    RESNET50_CHANNELS[name], attention.get(name)))
    return out


def _block_text(op: str) -> str:
    if op == SKIP or not op.startswith("ir_"):
        return op.replace("conv", "conv\n").replace("bottleneck", "bneck")
    kernel, expansion = parse_op(op)
    return f"k{kernel}\ne{expansion}"


def plot_arch(arch: Arch, path: str | Path, title: str) -> None:
    """A searched architecture left to right: one box per block, coloured by op (height grows with the
    stage's width), stages captioned with their width and stride, and each attention module as a red bar
    after its stage, labelled with its type."""
    plt = _pyplot()
    from matplotlib.patches import Patch, Rectangle

    stages = _stages(arch)
    ops = sorted({op for _, _, blocks, _, _ in stages for op in blocks if op.startswith("ir_")})
    fixed = [op for op in ("bottleneck",) if any(op in blocks for _, _, blocks, _, _ in stages)]
    palette = _pyplot().get_cmap("Set2" if len(ops) <= 8 else "tab20")
    colors = {op: palette(i % palette.N) for i, op in enumerate(ops)}
    colors.update({SKIP: "#eeeeee", "conv3x3": "#b0b7c6", "conv7x7": "#b0b7c6", "conv1x1": "#b0b7c6",
                   "bottleneck": "#9ecae1"})
    max_width = max(width for _, _, _, width, _ in stages)
    n_blocks = sum(len(blocks) for _, _, blocks, _, _ in stages)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.62 * n_blocks + 0.5 * len(stages) + 1.5), 3.6))
    x, gap, stage_gap = 0.0, 0.12, 0.55
    attention_drawn = False
    for name, caption, blocks, width, attention in stages:
        height = 0.35 + 0.65 * math.sqrt(width / max_width)
        start = x
        for op in blocks:
            ax.add_patch(Rectangle((x, -height / 2), 1, height, facecolor=colors[op], edgecolor="black",
                                   linewidth=0.8, hatch="//" if op == SKIP else None))
            ax.text(x + 0.5, 0, _block_text(op), ha="center", va="center", fontsize=6.5,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1} if op == SKIP else None)
            x += 1 + gap
        end = x - gap
        ax.plot([start, start, end, end], [-0.62, -0.66, -0.66, -0.62], color="black", linewidth=0.8)
        ax.text((start + end) / 2, -0.72, f"{name}\n{caption}", ha="center", va="top", fontsize=7)
        if attention is not None:
            bar = end + stage_gap / 2 - gap / 2
            ax.add_patch(Rectangle((bar - 0.09, -0.55), 0.18, 1.1, facecolor=ATTENTION_COLOR, edgecolor="none"))
            ax.text(bar, 0.62, attention, ha="center", va="bottom", fontsize=7.5, color=ATTENTION_COLOR,
                    fontweight="bold")
            attention_drawn = True
        x = end + stage_gap
    ax.set_xlim(-0.3, x - stage_gap + 0.3)
    ax.set_ylim(-1.35, 0.95)
    ax.axis("off")
    handles = [Patch(facecolor=colors[op], edgecolor="black", label=op) for op in ops + fixed]
    if any(SKIP in blocks for _, _, blocks, _, _ in stages):
        handles.append(Patch(facecolor=colors[SKIP], edgecolor="black", hatch="//", label="skip (identity)"))
    if attention_drawn:
        handles.append(Patch(facecolor=ATTENTION_COLOR, label="attention after the stage"))
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=len(handles),
                  fontsize=7, frameon=False)
    height, width = arch.input_size
    ax.set_title(f"{title}\n{arch.skeleton} skeleton, space '{arch.space}': {si(arch.flops)} FLOPs at "
                 f"{height}x{width}, {si(arch.params)} params (backbone + attention), as searched", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=DPI)
    plt.close(fig)
