"""Batch-hard triplet loss (Hermans et al., 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` → ``[B, B]`` Euclidean distances (clamped before the square root for a finite gradient)."""
    sq = x.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.t()
    return d2.clamp_min(1e-12).sqrt()


class TripletLoss(nn.Module):
    """For each anchor, the hardest positive (largest distance, same label) and the hardest negative
    (smallest distance, other label): ``mean(relu(d_ap - d_an + margin))``, or with ``soft_margin=True``
    ``mean(softplus(d_ap - d_an))``. Distances are computed in fp32."""

    def __init__(self, margin: float = 0.3, soft_margin: bool = False):
        super().__init__()
        self.margin = margin
        self.soft_margin = soft_margin

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dist = pairwise_euclidean(features.float())
        same = labels[:, None] == labels[None, :]
        d_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
        d_an = dist.masked_fill(same, float("inf")).amin(dim=1)
        valid = torch.isfinite(d_an)  # anchors with no negative in the batch contribute nothing
        if not valid.any():
            return features.sum() * 0.0
        diff = (d_ap - d_an)[valid]
        return F.softplus(diff).mean() if self.soft_margin else F.relu(diff + self.margin).mean()
