"""Distances between feature rows, with every query row's values independent of the batch it is computed in.

``euclidean`` is the squared Euclidean distance ``|x|^2 + |y|^2 - 2 x.y`` (torchreid's convention; it ranks
exactly like the Euclidean distance), clamped at 0 against rounding; ``cosine`` is ``1 - cos(x, y)``.
"""

from __future__ import annotations

import torch

from dcsnas.metrics.validation import METRICS, MetricsInputError, as_tensor, check_choice

BLOCK_ROWS = 512
"""Query rows per matrix product. Every product has this shape (the last block is zero-padded), so a query's
distances are bit-identical whichever chunk of queries it is evaluated in. 512 rows keep the product as fast
per FLOP as one whole-matrix product on 2 threads (256 took 20 % more CPU time at Market scale)."""


def _row_sq_norms(x: torch.Tensor) -> torch.Tensor:
    """(n, d) -> (n,) squared L2 norms."""
    return torch.linalg.vector_norm(x, dim=1).square_()


class PairwiseDistance:
    """Distances from query features to a fixed gallery, on the gallery's device.

    gallery: (n_g, d) float tensor. The computation dtype is float64 for float64 galleries, else float32.
    """

    def __init__(self, gallery: torch.Tensor, metric: str = "euclidean"):
        self.metric = metric
        self.dtype = torch.float64 if gallery.dtype == torch.float64 else torch.float32
        self.gallery = gallery.to(self.dtype)
        norms = torch.linalg.vector_norm(self.gallery, dim=1)
        self.gallery_term = norms.square_() if metric == "euclidean" else norms.clamp_min_(1e-12).reciprocal_()

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.gallery.device, self.dtype)
        if self.metric == "cosine":
            x = torch.nn.functional.normalize(x, dim=1)
        return x

    def _block(self, xb: torch.Tensor, out: torch.Tensor) -> None:
        """(BLOCK_ROWS, d) prepared queries -> their distances, written into ``out`` (BLOCK_ROWS, n_g)."""
        if self.metric == "euclidean":
            torch.addmm(self.gallery_term, xb, self.gallery.T, alpha=-2, out=out)
            out += _row_sq_norms(xb)[:, None]
            out.clamp_(min=0)
        else:
            torch.mm(xb, self.gallery.T, out=out)
            out *= self.gallery_term
            out.neg_().add_(1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) queries -> (n, n_g) distances."""
        x = self._prepare(x)
        n = x.shape[0]
        out = torch.empty(n, self.gallery.shape[0], dtype=self.dtype, device=self.gallery.device)
        whole = n - n % BLOCK_ROWS
        for start in range(0, whole, BLOCK_ROWS):
            self._block(x[start : start + BLOCK_ROWS], out[start : start + BLOCK_ROWS])
        if whole < n:  # the last block, zero-padded to BLOCK_ROWS rows
            pad = x.new_zeros(BLOCK_ROWS, x.shape[1])
            pad[: n - whole] = x[whole:]
            last = out.new_empty(BLOCK_ROWS, out.shape[1])
            self._block(pad, last)
            out[whole:] = last[: n - whole]
        return out

    def pairs(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, block: int = 4096) -> torch.Tensor:
        """Distances between ``x[rows[p]]`` and gallery row ``cols[p]``: (n, d), (P,), (P,) -> (P,)."""
        cols = cols.to(self.gallery.device)
        out = torch.empty(rows.shape[0], dtype=self.dtype, device=self.gallery.device)
        for start in range(0, rows.shape[0], block):
            xb = self._prepare(x[rows[start : start + block].to(x.device)])
            cb = cols[start : start + block]
            dot = torch.einsum("ij,ij->i", xb, self.gallery[cb])
            if self.metric == "euclidean":
                out[start : start + block] = (_row_sq_norms(xb) + self.gallery_term[cb] - 2 * dot).clamp_min(0)
            else:
                out[start : start + block] = 1 - dot * self.gallery_term[cb]
        return out


def pairwise_distance(x, y, metric: str = "euclidean") -> torch.Tensor:
    """(n, d), (m, d) features (tensors or arrays) -> (n, m) distance tensor on ``y``'s device."""
    check_choice("metric", metric, METRICS)
    x, y = as_tensor("x", x, "(n, d)"), as_tensor("y", y, "(m, d)")
    if x.shape[1] != y.shape[1]:
        raise MetricsInputError(f"x has shape {tuple(x.shape)} and y {tuple(y.shape)}: expected the same feature dim")
    return PairwiseDistance(y, metric)(x)
