"""Center loss (Wen et al., ECCV 2016), trained with its own optimizer as in BoT."""

from __future__ import annotations

import torch
from torch import nn


class CenterLoss(nn.Module):
    """``mean_i ||f_i - c_{y_i}||² / 2`` with one learnable centre per class."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return 0.5 * (features.float() - self.centers[labels]).pow(2).sum(dim=1).mean()
