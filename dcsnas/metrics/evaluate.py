"""From query and gallery features to Re-ID metrics, a chunk of queries at a time.

Distances are computed on the features' device (CPU or CUDA) in float32 (float64 for float64 features); each
chunk's (chunk, n_g) distances are then ranked on the CPU (:mod:`dcsnas.metrics.rank`), its rows split over
``torch.get_num_threads()`` threads (numpy releases the GIL in the comparisons and counts that dominate; each
thread fills its own queries' entries). Peak memory is the features plus a few copies of one chunk of
distances, so a 100k-image gallery evaluates in bounded memory.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from dcsnas.metrics.distance import BLOCK_ROWS, PairwiseDistance
from dcsnas.metrics.rank import RankAccumulator, default_chunk_size
from dcsnas.metrics.rerank import KReciprocalReranker
from dcsnas.metrics.validation import (
    METRICS,
    MetricsInputError,
    as_labels,
    as_tensor,
    check_choice,
    check_finite,
    check_positive_int,
)


def _top_kept(dist: np.ndarray, k: int) -> np.ndarray:
    """(B, n_g) distances with removed items at +inf -> (B, k) nearest gallery indices, stable; -1 past the end."""
    top = np.argsort(dist, axis=1, kind="stable")[:, :k]
    top[~np.isfinite(np.take_along_axis(dist, top, axis=1))] = -1
    return np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)


def evaluate_features(
    qf,
    gf,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    metric="euclidean",
    rerank=False,
    chunk_size=None,
    max_rank=50,
    protocol="market",
    seed=None,
    topk=0,
) -> dict:
    """CMC, mAP and mINP of query features (n_q, d) against gallery features (n_g, d).

    Features are torch tensors (any device) or numpy arrays; labels are 1-D integer arrays. ``metric``:
    ``euclidean`` (squared) or ``cosine``; ``rerank``: k-reciprocal re-ranking (k1 = 20, k2 = 6, lambda = 0.3);
    ``protocol``/``seed``/``max_rank`` as in :func:`~dcsnas.metrics.rank.evaluate_rank`. Queries are processed
    ``chunk_size`` at a time (default: about 2**24 distances, a multiple of 512 queries); results do not depend on
    it. Returns ``{"cmc", "mAP", "mINP", "num_valid_queries"}``, plus ``"topk"``, an (n_q, topk) int64 array of
    the nearest gallery indices per query (same-identity same-camera items removed, -1 past the end), if
    ``topk`` > 0.
    """
    check_choice("metric", metric, METRICS)
    qf, gf = as_tensor("qf", qf, "(n_q, d)"), as_tensor("gf", gf, "(n_g, d)")
    n_q, n_g = qf.shape[0], gf.shape[0]
    if gf.shape[1] != qf.shape[1]:
        raise MetricsInputError(f"gf has shape {tuple(gf.shape)}, expected (n_g, {qf.shape[1]}) as qf's feature dim")
    q_pids = as_labels("q_pids", q_pids, n_q, "n_q")
    g_pids = as_labels("g_pids", g_pids, n_g, "n_g")
    q_camids = as_labels("q_camids", q_camids, n_q, "n_q")
    g_camids = as_labels("g_camids", g_camids, n_g, "n_g")
    default = max(BLOCK_ROWS, default_chunk_size(n_g) // BLOCK_ROWS * BLOCK_ROWS)
    chunk = check_positive_int("chunk_size", chunk_size or default)
    topk = check_positive_int("topk", topk) if topk else 0
    acc = RankAccumulator(q_pids, g_pids, q_camids, g_camids, max_rank, protocol, seed)
    if rerank:
        rows = KReciprocalReranker(qf, gf, metric).distances
    else:
        to_gallery = PairwiseDistance(gf, metric)

        def rows(start, stop):
            d = to_gallery(qf[start:stop])
            check_finite("distances of qf to gf (features too large?)", d, row_offset=start)
            return d.cpu().numpy()

    top = np.empty((n_q, topk), dtype=np.int64)

    def rank(start: int, dist: np.ndarray) -> None:
        acc.add(start, dist)
        if topk:
            top[start : start + len(dist)] = _top_kept(dist, topk)

    workers = max(1, torch.get_num_threads())
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, n_q, chunk):
            dist = rows(start, min(start + chunk, n_q))
            step = -(-len(dist) // workers)
            list(pool.map(rank, range(start, start + len(dist), step),
                          [dist[s : s + step] for s in range(0, len(dist), step)]))
    result = acc.result()
    if topk:
        result["topk"] = top
    return result


SUMMARY_RANKS = (1, 5, 10, 20)


def summarize(result: dict) -> dict:
    """JSON-ready form of a result: mAP, mINP, rank-1/5/10/20 (those <= max_rank), num_valid_queries, cmc list."""
    cmc = [float(x) for x in result["cmc"]]
    out = {"mAP": result["mAP"], "mINP": result["mINP"]}
    out.update({f"rank-{r}": cmc[r - 1] for r in SUMMARY_RANKS if r <= len(cmc)})
    out.update(num_valid_queries=result["num_valid_queries"], cmc=cmc)
    return out
