"""A t-SNE picture of query and gallery embeddings (scikit-learn's ``TSNE``), coloured by identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tsne_points(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE coordinates [N, 2] of ``features`` [N, D] (perplexity min(30, (N - 1) / 3), PCA start)."""
    from sklearn.manifold import TSNE

    perplexity = max(1.0, min(30.0, (len(features) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(features, dtype=np.float32))


def plot_tsne(qf: np.ndarray, gf: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, path: str | Path,
              max_identities: int = 20, seed: int = 0) -> int:
    """``path`` (PNG): the embeddings of the first ``max_identities`` query identities (their query and
    gallery images) in 2-D, one colour per identity, queries as circles and gallery images as triangles.
    Returns the number of points drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    identities = list(dict.fromkeys(np.asarray(q_pids).tolist()))[:max_identities]
    q_take, g_take = np.isin(q_pids, identities), np.isin(g_pids, identities)
    features = np.concatenate([np.asarray(qf)[q_take], np.asarray(gf)[g_take]])
    pids = np.concatenate([np.asarray(q_pids)[q_take], np.asarray(g_pids)[g_take]])
    is_query = np.arange(len(features)) < int(q_take.sum())
    points = tsne_points(features, seed)
    cmap = plt.get_cmap("tab20")
    colours = np.array([cmap(identities.index(p) % 20) for p in pids])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for mask, marker, label in ((is_query, "o", "query"), (~is_query, "^", "gallery")):
        ax.scatter(points[mask, 0], points[mask, 1], c=colours[mask], marker=marker, s=28, edgecolors="black",
                   linewidths=0.3, label=label)
    ax.set_title(f"t-SNE of the embeddings: {len(identities)} identities (one colour each)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(features)
