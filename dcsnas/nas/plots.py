"""Figures of a search (TensorBoard and the PNGs of the run directory)."""

from __future__ import annotations

import numpy as np

from dcsnas.nas.distribution import ArchDistribution


def probability_heatmap(distribution: ArchDistribution, title: str = ""):
    """A matplotlib figure: one row per searchable choice, one cell per option, coloured by its probability
    softmax(α) and labelled with the option's name; the argmax option of each choice boxed in red."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    probs = {k: p.detach().float().cpu().numpy() for k, p in distribution.probabilities().items()
             if distribution.choices[k].searchable}
    keys = list(probs)
    width = max((len(p) for p in probs.values()), default=1)
    grid = np.full((max(len(keys), 1), width), np.nan)
    for row, key in enumerate(keys):
        grid[row, :len(probs[key])] = probs[key]
    fig = Figure(figsize=(1.3 * width + 2.5, 0.35 * len(keys) + 1.2))
    ax = fig.add_subplot()
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for row, key in enumerate(keys):
        for col, label in enumerate(distribution.choices[key].labels):
            ax.text(col, row, f"{label}\n{grid[row, col]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if grid[row, col] < 0.6 else "black")
        best = int(np.nanargmax(grid[row]))
        ax.add_patch(Rectangle((best - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_yticks(range(len(keys)), keys, fontsize=7)
    ax.set_xticks([])
    ax.set_xlabel("option (name, probability)", fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.03, label="probability softmax(α)")
    fig.tight_layout()
    return fig
