"""CMC, mAP and mINP of query-gallery distances under the Market-1501 and CUHK03 protocols.

Per query, gallery items with the query's identity *and* camera are removed ("junk"); the remaining items
are ordered by (distance, gallery index), i.e. a stable sort, and the true matches are the remaining items
with the query's identity. Queries without a true match are skipped. As in torchreid's ``eval_market1501``:

- CMC[r]: fraction of valid queries whose first true match is among the first r + 1 remaining items
  (clipped cumulative sum, averaged). Past the number of remaining items it keeps its last value, 1.
- AP: mean over the M true matches, k = 1..M, of the precision k / rank_k at the k-th match (1-based rank).
- INP (AGW, Ye et al.): M / rank_M, the precision at the hardest true match.

``cuhk03`` is the single-gallery-shot protocol of torchreid's ``eval_cuhk03``: the CMC is averaged over 10
draws in which, per query, one remaining image of each gallery identity is kept at random (repeatable with a
seed); AP and INP are computed as above, on all remaining items.

Nothing is sorted: a true match's rank is 1 + the number of remaining items ordered before it, counted by a
vectorised comparison of its distance with the query's whole row. Ranks are exact integers and every
per-query value depends on that query's distances only, so the metrics do not depend on the chunking.
"""

from __future__ import annotations

import numpy as np
import torch

from dcsnas.metrics.ragged import expand_segments, segment_starts
from dcsnas.metrics.validation import (
    PROTOCOLS,
    MetricsInputError,
    as_labels,
    check_choice,
    check_finite,
    check_positive_int,
)

TILE_BYTES = 1 << 22
"""Size of the boolean comparison buffer used to count items before a match (fits in a CPU cache level)."""

CHUNK_ELEMENTS = 1 << 24
"""Default number of query-gallery distances ranked at a time (64 MiB of float32)."""

NUM_REPEATS = 10
"""Random gallery draws of the CUHK03 single-shot protocol."""


def default_chunk_size(num_gallery: int) -> int:
    return max(1, CHUNK_ELEMENTS // num_gallery)


def _count_true(mask: np.ndarray) -> np.ndarray:
    """(..., n) bool with n % 8 == 0 -> (...,) number of True entries."""
    return np.bitwise_count(mask.view(np.uint64)).sum(axis=-1, dtype=np.int64)  # a popcount per 8 booleans


def _count_before(values: np.ndarray, thresholds: np.ndarray, op, buf: np.ndarray) -> np.ndarray:
    """Count, per row, the values that satisfy ``op(value, threshold)``.

    values: (r, G); thresholds: (r, k); buf: flat bool scratch of at least ``ceil(G / 8) * 8`` bytes.
    Returns (r, k) int64.
    """
    r, g = values.shape
    k = thresholds.shape[1]
    gp = -(-g // 8) * 8
    out = np.empty((r, k), dtype=np.int64)
    step = max(1, buf.size // (r * gp))
    for s in range(0, k, step):
        part = thresholds[:, s : s + step]
        view = buf[: r * part.shape[1] * gp].reshape(r, part.shape[1], gp)
        view[..., g:] = False
        op(values[:, None, :], part[:, :, None], out=view[..., :g])
        out[:, s : s + step] = _count_true(view)
    return out


def ranks_in_rows(dist: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """1-based rank of item ``cols[p]`` in row ``rows[p]`` of ``dist``, ordering by (distance, column).

    dist: (B, G) float; entries set to +inf are excluded items (never counted). rows: (P,) ascending;
    cols: (P,) with finite ``dist[rows, cols]``. Returns (P,) int64.
    """
    num_pairs = len(rows)
    if num_pairs == 0:
        return np.zeros(0, dtype=np.int64)
    b, g = dist.shape
    gp = -(-g // 8) * 8
    t = dist[rows, cols]
    first, counts = segment_starts(rows, b)
    slot = np.arange(num_pairs) - first[rows]
    thresholds = np.full((b, int(counts.max())), -np.inf, dtype=dist.dtype)
    thresholds[rows, slot] = t
    less = np.zeros_like(thresholds, dtype=np.int64)
    less_equal = np.zeros_like(less)
    buf = np.zeros(max(min(TILE_BYTES, b * thresholds.shape[1] * gp), gp), dtype=bool)
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    i = 0
    while i < len(order):  # tiles of rows with similar target counts, largest first
        k = int(counts[order[i]])
        tile = order[i : i + max(1, TILE_BYTES // (k * gp))]
        values, th = dist[tile], thresholds[tile, :k]
        less[tile, :k] = _count_before(values, th, np.less, buf)
        less_equal[tile, :k] = _count_before(values, th, np.less_equal, buf)
        i += len(tile)
    lt, le = less[rows, slot], less_equal[rows, slot]
    ranks = lt + 1
    tied = np.flatnonzero(le - lt > 1)  # other items at exactly the same distance: break ties by column
    step = max(1, TILE_BYTES // (g * (dist.itemsize + 1)))
    col_index = np.arange(g)
    for s in range(0, len(tied), step):
        p = tied[s : s + step]
        eq = dist[rows[p]] == t[p, None]
        eq &= col_index < cols[p, None]
        ranks[p] += eq.sum(axis=1)
    return ranks


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, a bijective hash of uint64 arrays (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _Gallery:
    """Gallery labels grouped by identity: sorted order, identity segments."""

    def __init__(self, pids: np.ndarray, camids: np.ndarray):
        self.pids, self.camids = pids, camids
        self.order = np.argsort(pids, kind="stable")
        self.sorted_pids = pids[self.order]
        _, self.id_starts, self.id_counts = np.unique(self.sorted_pids, return_index=True, return_counts=True)

    def same_identity(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All (query row, gallery index) pairs with equal identities, rows ascending: (P,), (P,)."""
        lo = np.searchsorted(self.sorted_pids, q_pids, side="left")
        hi = np.searchsorted(self.sorted_pids, q_pids, side="right")
        rows, pos = expand_segments(lo, hi - lo)
        return rows, self.order[pos]


class RankAccumulator:
    """Per-query ranking results, filled chunk by chunk in any order, reduced once by :meth:`result`.

    Labels are 1-D int64 arrays (queries: (n_q,), gallery: (n_g,)).
    """

    def __init__(self, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="market", seed=None):
        check_choice("protocol", protocol, PROTOCOLS)
        self.max_rank = check_positive_int("max_rank", max_rank)
        self.protocol = protocol
        self.q_pids, self.q_camids = q_pids, q_camids
        self.gallery = _Gallery(g_pids, g_camids)
        n = len(q_pids)
        self.num_matches = np.zeros(n, dtype=np.int64)
        self.first_rank = np.zeros(n, dtype=np.int64)
        self.ap = np.zeros(n)
        self.inp = np.zeros(n)
        self.filled = np.zeros(n, dtype=bool)
        if protocol == "cuhk03":
            if seed is None:
                seed = np.random.SeedSequence().entropy
            self.seed_hash = _splitmix64(np.array([int(seed) % 2**64], dtype=np.uint64))
            self.sampled_first_rank = np.zeros((n, NUM_REPEATS), dtype=np.int64)

    def add(self, start: int, dist: np.ndarray) -> None:
        """Rank queries ``start .. start + B - 1``; dist: (B, n_g) finite float, overwritten (junk -> +inf)."""
        b = dist.shape[0]
        stop = start + b
        q_pids, q_camids = self.q_pids[start:stop], self.q_camids[start:stop]
        rows, cols = self.gallery.same_identity(q_pids)
        junk = self.gallery.camids[cols] == q_camids[rows]
        dist[rows[junk], cols[junk]] = np.inf
        rows, cols = rows[~junk], cols[~junk]
        ranks = ranks_in_rows(dist, rows, cols)

        order = np.lexsort((ranks, rows))
        rows, cols, ranks = rows[order], cols[order], ranks[order]
        first, counts = segment_starts(rows, b)
        valid = np.flatnonzero(counts)
        k = np.arange(len(rows)) - first[rows] + 1
        q = start + valid
        self.num_matches[start:stop] = counts
        if len(valid):
            ap_sum = np.add.reduceat(k / ranks, first[valid])
            self.ap[q] = ap_sum / counts[valid]
            self.first_rank[q] = ranks[first[valid]]
            self.inp[q] = counts[valid] / ranks[first[valid] + counts[valid] - 1]
            if self.protocol == "cuhk03":
                self._add_single_shot(start, dist, valid, rows, cols)
        self.filled[start:stop] = True

    def _add_single_shot(self, start, dist, valid, match_rows, match_cols) -> None:
        """CUHK03: per draw, the first-match rank among one random remaining image per gallery identity."""
        step = max(1, CHUNK_ELEMENTS // 8 // dist.shape[1])  # rows whose (rows, n_g) uint64 keys fit 16 MiB
        for s in range(0, len(valid), step):
            rows = valid[s : s + step]
            sel = (match_rows >= rows[0]) & (match_rows <= rows[-1])
            local = np.searchsorted(rows, match_rows[sel])
            ranks = self._single_shot_ranks(start + rows, dist[rows], local, match_cols[sel])
            self.sampled_first_rank[start + rows] = ranks

    def _single_shot_ranks(self, queries, dist, match_rows, match_cols) -> np.ndarray:
        """queries: (r,) indices with >= 1 match; dist: (r, n_g), junk at +inf; match pairs: (P,), rows ascending.
        Returns (r, NUM_REPEATS) first-match ranks."""
        g = self.gallery
        n_g = dist.shape[1]
        bits = np.uint64(n_g.bit_length())
        col_ids = np.arange(n_g, dtype=np.uint64)
        query_hash = _splitmix64(self.seed_hash ^ queries.astype(np.uint64))
        junk = np.isinf(dist)
        out = np.empty((len(queries), NUM_REPEATS), dtype=np.int64)
        for r in range(NUM_REPEATS):
            h = _splitmix64(query_hash ^ np.uint64(r))
            keys = (_splitmix64(h[:, None] ^ col_ids) >> bits << bits) | col_ids  # unique within a row
            keys[junk] = np.iinfo(np.uint64).max
            sorted_keys = keys[:, g.order]
            lowest = np.minimum.reduceat(sorted_keys, g.id_starts, axis=1)
            chosen = np.empty_like(junk)
            chosen[:, g.order] = sorted_keys == np.repeat(lowest, g.id_counts, axis=1)
            chosen &= ~junk
            hit = chosen[match_rows, match_cols]  # exactly one per query: the draw of its own identity
            out[:, r] = ranks_in_rows(np.where(chosen, dist, np.inf), match_rows[hit], match_cols[hit])
        return out

    def _cmc(self, first_ranks: np.ndarray) -> np.ndarray:
        hist = np.bincount(np.minimum(first_ranks, self.max_rank + 1), minlength=self.max_rank + 2)
        return np.cumsum(hist[1 : self.max_rank + 1]) / len(first_ranks)

    def result(self) -> dict:
        """``{"cmc": (max_rank,) float64, "mAP": float, "mINP": float, "num_valid_queries": int}``."""
        if not self.filled.all():
            raise RuntimeError(f"queries {np.flatnonzero(~self.filled)[:5].tolist()}... were never ranked")
        valid = self.num_matches > 0
        if not valid.any():
            raise MetricsInputError(
                "no valid query: no query identity has a gallery image from another camera "
                "(check that q_pids/g_pids and q_camids/g_camids use the same labels)"
            )
        if self.protocol == "cuhk03":
            cmc = self._cmc(self.sampled_first_rank[valid].ravel())
        else:
            cmc = self._cmc(self.first_rank[valid])
        return {
            "cmc": cmc,
            "mAP": float(np.mean(self.ap[valid])),
            "mINP": float(np.mean(self.inp[valid])),
            "num_valid_queries": int(valid.sum()),
        }


def _as_distmat(distmat) -> np.ndarray:
    d = distmat.detach().cpu().numpy() if isinstance(distmat, torch.Tensor) else np.asarray(distmat)
    if d.ndim != 2 or 0 in d.shape:
        raise MetricsInputError(f"distmat has shape {d.shape}, expected a 2-D array (n_q, n_g) with n_q, n_g > 0")
    if d.dtype == np.bool_ or not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise MetricsInputError(f"distmat has dtype {d.dtype}, expected a real floating or integer dtype")
    return d


def evaluate_rank(
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="market", seed=None, chunk_size=None
) -> dict:
    """CMC, mAP and mINP of a (n_q, n_g) distance matrix (numpy or torch; smaller is closer).

    Labels: 1-D integer arrays, (n_q,) for queries and (n_g,) for the gallery. ``protocol``: ``market`` or
    ``cuhk03`` (``seed`` makes its random draws repeatable). Rows are ranked ``chunk_size`` at a time.
    Returns ``{"cmc": (max_rank,) array, "mAP", "mINP", "num_valid_queries"}``; metrics are fractions in [0, 1].
    """
    d = _as_distmat(distmat)
    n_q, n_g = d.shape
    q_pids = as_labels("q_pids", q_pids, n_q, "n_q")
    g_pids = as_labels("g_pids", g_pids, n_g, "n_g")
    q_camids = as_labels("q_camids", q_camids, n_q, "n_q")
    g_camids = as_labels("g_camids", g_camids, n_g, "n_g")
    chunk = check_positive_int("chunk_size", chunk_size or default_chunk_size(n_g))
    acc = RankAccumulator(q_pids, g_pids, q_camids, g_camids, max_rank, protocol, seed)
    dtype = np.float32 if d.dtype in (np.float16, np.float32) else np.float64
    for start in range(0, n_q, chunk):
        block = np.array(d[start : start + chunk], dtype=dtype)
        check_finite("distmat", torch.from_numpy(block), row_offset=start)
        acc.add(start, block)
    return acc.result()
