"""Rank-list images: a query, then its nearest gallery images framed green (true match) or red (wrong identity)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dcsnas.utils.image import read_image
from dcsnas.utils.io import atomic_write_bytes

THUMB = (64, 128)
"""Width, height of each image in pixels."""
BORDER = 4
GAP = 10
COLOURS = {"query": (0, 0, 0), "match": (0, 170, 0), "wrong": (220, 0, 0)}


def _thumbnail(path: str, colour: tuple[int, int, int]):
    from PIL import ImageOps

    thumb = read_image(path).resize(THUMB)
    return ImageOps.expand(thumb, border=BORDER, fill=colour)


def save_rank_lists(
    out_dir,
    topk: np.ndarray,
    q_paths: Sequence[str],
    g_paths: Sequence[str],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    queries: Sequence[int] | None = None,
) -> list[Path]:
    """Write ``out_dir/<query index>_<query file stem>.png`` for each query in ``queries`` (default: all).

    topk: (n_q, K) gallery indices per query, nearest first, -1 for none (``evaluate_features(..., topk=K)``);
    q_paths/g_paths: image files, (n_q,) and (n_g,); q_pids/g_pids: identities. Returns the written paths.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    k = topk.shape[1]
    width = (THUMB[0] + 2 * BORDER) * (k + 1) + GAP * k
    height = THUMB[1] + 2 * BORDER
    written = []
    for qi in range(len(topk)) if queries is None else queries:
        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        canvas.paste(_thumbnail(q_paths[qi], COLOURS["query"]), (0, 0))
        for r, gi in enumerate(topk[qi]):
            if gi < 0:
                break
            colour = COLOURS["match"] if g_pids[gi] == q_pids[qi] else COLOURS["wrong"]
            canvas.paste(_thumbnail(g_paths[gi], colour), ((r + 1) * (THUMB[0] + 2 * BORDER + GAP), 0))
        buf = io.BytesIO()
        canvas.save(buf, format="PNG")
        path = out_dir / f"{qi:05d}_{Path(q_paths[qi]).stem}.png"
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    return written
