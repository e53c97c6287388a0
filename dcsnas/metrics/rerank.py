"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) in bounded memory.

The result is that of torchreid's ``re_ranking`` fed with the base distances of :mod:`dcsnas.metrics.distance`
(query-gallery, query-query and gallery-gallery), over all n = n_q + n_g images:

1. D = d**2 in float32, each row divided by its maximum (rows of a symmetric matrix, as torchreid's columns).
2. N(i, k) = the first k + 1 items of row i of D. R(i, k) = {j in N(i, k) : i in N(j, k)}. The expanded set of i
   is R(i, k1) plus R(c, round(k1 / 2)) for every c in R(i, k1) sharing more than 2/3 of it with R(i, k1).
3. V[i, j] = exp(-D[i, j]) normalised to sum 1 over the expanded set of i (float32, 0 elsewhere).
4. Query expansion: V[i] <- mean of V[j] over the first k2 items j of row i of D.
5. Jaccard distance J[i, j] = 1 - m / (2 - m) with m = sum_k min(V[i, k], V[j, k]).
6. Re-ranked distance (1 - lambda) J + lambda D, for query rows and gallery columns.

No (n, n) matrix is built: D is computed in row blocks of which only the k1 + 1 nearest items and the row maximum
are kept; V is sparse (about n * k1 * k2 entries); J is computed per chunk of queries by joining V's query rows
with an inverted index of its gallery rows. Ties between equal distances in step 2 are broken arbitrarily, as
torchreid's unstable ``np.argsort`` does.
"""

from __future__ import annotations

import numpy as np
import torch

from dcsnas.metrics.distance import BLOCK_ROWS, PairwiseDistance
from dcsnas.metrics.ragged import expand_segments, segment_starts
from dcsnas.metrics.validation import METRICS, MetricsInputError, as_tensor, check_choice, check_positive_int

JOIN_PAIRS = 1 << 22
"""Most (query entry, gallery entry) pairs joined at once when computing the Jaccard term."""


def _reciprocal(top: np.ndarray, block: int = 4096) -> np.ndarray:
    """(n, k) nearest items per row -> (n, k) bool: item top[i, m] has i among its own k nearest."""
    out = np.empty(top.shape, dtype=bool)
    for s in range(0, len(top), block):
        rows = np.arange(s, min(s + block, len(top)))
        out[rows] = (top[top[rows]] == rows[:, None, None]).any(axis=-1)
    return out


def expanded_sets(ranks: np.ndarray, k1: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: (rows, cols) of all expanded k-reciprocal sets, rows ascending, cols ascending within a row.

    ranks: (n, >= k1 + 1) nearest items of each row, nearest first.
    """
    n = len(ranks)
    half = int(np.around(k1 / 2.0))
    top, top_half = ranks[:, : k1 + 1], ranks[:, : half + 1]
    recip, recip_half = _reciprocal(top), _reciprocal(top_half)
    rows_out, cols_out = [], []
    for s in range(0, n, block):
        e = min(s + block, n)
        own = np.where(recip[s:e], top[s:e], -1)  # R(i, k1), -1 where absent
        cand_sets = top_half[top[s:e]]  # (b, k1 + 1, half + 1): N(c, half) of every candidate c
        cand_mask = recip_half[top[s:e]]  # ... restricted to R(c, half)
        shared = ((cand_sets[..., None] == own[:, None, None, :]).any(axis=-1) & cand_mask).sum(axis=-1)
        take = recip[s:e] & (shared > 2.0 / 3 * cand_mask.sum(axis=-1))
        members = np.concatenate(
            [np.where(recip[s:e], top[s:e], n), np.where(take[..., None] & cand_mask, cand_sets, n).reshape(e - s, -1)],
            axis=1,
        )
        members.sort(axis=1)
        keep = members < n
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        r, c = np.nonzero(keep)
        rows_out.append(r + s)
        cols_out.append(members[r, c])
    return np.concatenate(rows_out), np.concatenate(cols_out)


class KReciprocalReranker:
    """Re-ranked query-gallery distances; the encoding V is built once, rows are served by :meth:`distances`.

    qf: (n_q, d), gf: (n_g, d) feature tensors (finite); ``metric`` as in :class:`PairwiseDistance`.
    """

    def __init__(self, qf: torch.Tensor, gf: torch.Tensor, metric="euclidean", k1=20, k2=6, lambda_value=0.3):
        self.k1, self.k2 = check_positive_int("k1", k1), check_positive_int("k2", k2)
        if k2 > k1 + 1:
            raise MetricsInputError(f"k2 must be at most k1 + 1 = {k1 + 1}, got {k2}")
        if not 0.0 <= lambda_value <= 1.0:
            raise MetricsInputError(f"lambda_value must be in [0, 1], got {lambda_value}")
        self.lambda_value = float(lambda_value)
        self.qf = qf
        self.n_q, self.n_g = qf.shape[0], gf.shape[0]
        feats = torch.cat([qf.to(gf.device, gf.dtype), gf])
        self._to_gallery = PairwiseDistance(gf, metric)
        to_all = PairwiseDistance(feats, metric)
        ranks, self.row_max = self._nearest(feats, to_all)
        rows, cols = expanded_sets(ranks, self.k1)
        v_ptr, v_data = self._encode(feats, to_all, rows, cols)
        self._expand_queries(ranks, v_ptr, cols, v_data)

    @staticmethod
    def _squared(d: torch.Tensor) -> torch.Tensor:
        d = d.float()
        return d.mul_(d)

    def _nearest(self, feats, dist) -> tuple[np.ndarray, torch.Tensor]:
        """Step 1 by row blocks: (n, min(k1 + 1, n)) nearest items of each row of D, nearest first, and the (n,)
        row maxima of d**2 (1 for all-zero rows)."""
        n = feats.shape[0]
        ranks = np.empty((n, min(self.k1 + 1, n)), dtype=np.int64)
        row_max = torch.empty(n, device=feats.device)
        for s in range(0, n, BLOCK_ROWS):
            d = self._squared(dist(feats[s : s + BLOCK_ROWS]))
            m = d.amax(dim=1)
            m = torch.where(m > 0, m, torch.ones_like(m))
            row_max[s : s + BLOCK_ROWS] = m
            d.div_(m[:, None])
            ranks[s : s + BLOCK_ROWS] = d.topk(ranks.shape[1], dim=1, largest=False).indices.cpu().numpy()
        return ranks, row_max

    def _encode(self, feats, dist, rows, cols) -> tuple[np.ndarray, np.ndarray]:
        """Step 3: V as CSR over ``cols``: (n + 1,) row pointer and (nnz,) float32 values."""
        rows_t = torch.from_numpy(rows).to(feats.device)
        d = dist.pairs(feats, rows_t, torch.from_numpy(cols))
        w = torch.exp(-self._squared(d).div_(self.row_max[rows_t])).cpu().numpy()
        ptr, counts = segment_starts(rows, feats.shape[0])
        sums = np.zeros(len(counts), dtype=np.float32)
        sums[counts > 0] = np.add.reduceat(w, ptr[counts > 0])
        return np.append(ptr, len(rows)), w / sums[rows]

    def _expand_queries(self, ranks, v_ptr, v_cols, v_data) -> None:
        """Step 4, then the inputs of step 5: V's query rows (CSR) and an inverted index of its gallery rows."""
        n = len(ranks)
        neighbours = ranks[:, : self.k2] if self.k2 > 1 else np.arange(n)[:, None]  # k2 = 1: no expansion
        src = neighbours.ravel()
        seg, pos = expand_segments(v_ptr[src], np.diff(v_ptr)[src])
        owner = seg // neighbours.shape[1]
        key = owner * n + v_cols[pos]
        order = np.argsort(key, kind="stable")
        key, vals = key[order], v_data[pos][order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        key = key[starts]
        vals = np.add.reduceat(vals, starts) / np.float32(neighbours.shape[1])
        rows, cols = key // n, key % n
        ptr, _ = segment_starts(rows, n)
        self.q_ptr = ptr[: self.n_q + 1]  # n > n_q: ptr[n_q] ends the query rows
        self.q_cols, self.q_vals = cols[: ptr[self.n_q]], vals[: ptr[self.n_q]]
        gal = rows >= self.n_q
        by_col = np.argsort(cols[gal], kind="stable")
        self.inv_start, self.inv_count = segment_starts(cols[gal][by_col], n)
        self.inv_rows = rows[gal][by_col] - self.n_q
        self.inv_vals = vals[gal][by_col]

    def _shared_mass(self, start: int, stop: int) -> np.ndarray:
        """Step 5's m = sum_k min(V[i, k], V[j, k]) for queries start..stop-1 and all gallery j: (B, n_g) float64.

        Queries are joined in groups of whole rows of about JOIN_PAIRS pairs, so each value is summed in the same
        order whatever the chunk.
        """
        ptr = self.q_ptr[start : stop + 1]
        fan_out = np.cumsum(self.inv_count[self.q_cols[ptr[0] : ptr[-1]]])
        pairs_before = np.r_[0, fan_out][ptr - ptr[0]]  # (B + 1,) pairs of the rows before each row
        out = np.zeros((stop - start, self.n_g))
        r = 0
        while r < stop - start:
            e = max(r + 1, int(np.searchsorted(pairs_before, pairs_before[r] + JOIN_PAIRS, side="right")) - 1)
            cols, vals = self.q_cols[ptr[r] : ptr[e]], self.q_vals[ptr[r] : ptr[e]]
            q_rows = np.repeat(np.arange(e - r), np.diff(ptr[r : e + 1]))
            seg, pos = expand_segments(self.inv_start[cols], self.inv_count[cols])
            shared = np.minimum(vals[seg], self.inv_vals[pos])
            flat = np.bincount(q_rows[seg] * self.n_g + self.inv_rows[pos], shared, minlength=(e - r) * self.n_g)
            out[r:e] = flat.reshape(e - r, self.n_g)
            r = e
        return out

    def distances(self, start: int, stop: int) -> np.ndarray:
        """Re-ranked distances of queries start..stop-1 to the whole gallery: (B, n_g) float32."""
        m = self._shared_mass(start, stop).astype(np.float32)
        jaccard = 1 - m / (2 - m)
        base = self._squared(self._to_gallery(self.qf[start:stop])).div_(self.row_max[start:stop, None])
        base = base.cpu().numpy()
        return jaccard * np.float32(1 - self.lambda_value) + base * np.float32(self.lambda_value)


def rerank_distance(qf, gf, metric="euclidean", k1=20, k2=6, lambda_value=0.3) -> np.ndarray:
    """Re-ranked (n_q, n_g) float32 distance matrix of query and gallery features (tensors or arrays)."""
    check_choice("metric", metric, METRICS)
    qf, gf = as_tensor("qf", qf, "(n_q, d)"), as_tensor("gf", gf, "(n_g, d)")
    if qf.shape[1] != gf.shape[1]:
        raise MetricsInputError(f"gf has shape {tuple(gf.shape)}, expected (n_g, {qf.shape[1]}) as qf's feature dim")
    return KReciprocalReranker(qf, gf, metric, k1, k2, lambda_value).distances(0, qf.shape[0])
