"""Batch-hard triplet loss (Hermans et al., 2017), on Euclidean or cosine distances."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` → ``[B, B]`` Euclidean distances (clamped before the square root for a finite gradient)."""
    sq = x.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.t()
    return d2.clamp_min(1e-12).sqrt()


def pairwise_cosine_distance(x: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` → ``[B, B]`` cosine distances ``1 - cos(x_i, x_j)``, in [0, 2]."""
    unit = F.normalize(x, dim=1)
    return 1.0 - unit @ unit.t()


class TripletLoss(nn.Module):
    """For each anchor, the hardest positive (largest distance, same label) and the hardest negative
    (smallest distance, other label): ``mean(relu(d_ap - d_an + margin))``, or with ``soft_margin=True``
    ``mean(softplus(d_ap - d_an))``. Distances are computed in fp32.

    ``distance="euclidean"`` (BoT) can be lowered by shrinking every feature towards one point: once the
    hardest positive is farther than the hardest negative, that is the loss's easiest descent, and on a
    from-scratch CPU budget it collapses the embedding (``docs/training_recipe.md``). ``"cosine"``
    (``1 - cos``, scale-invariant) has no such direction."""

    def __init__(self, margin: float = 0.3, soft_margin: bool = False, distance: str = "euclidean"):
        super().__init__()
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"triplet distance must be 'euclidean' or 'cosine', got {distance!r}")
        self.margin = margin
        self.soft_margin = soft_margin
        self.distance = distance

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = features.float()
        dist = pairwise_euclidean(x) if self.distance == "euclidean" else pairwise_cosine_distance(x)
        same = labels[:, None] == labels[None, :]
        d_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
        d_an = dist.masked_fill(same, float("inf")).amin(dim=1)
        valid = torch.isfinite(d_an)  # anchors with no negative in the batch contribute nothing
        if not valid.any():
            return features.sum() * 0.0
        diff = (d_ap - d_an)[valid]
        return F.softplus(diff).mean() if self.soft_margin else F.relu(diff + self.margin).mean()
