"""The Re-ID training loss: CE with label smoothing + batch-hard triplet (+ center) + deep supervision
(+ the Information-Bottleneck bound, added by the trainer once its warm-up is over). Every component is
returned for logging."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from dcsnas.losses.center import CenterLoss
from dcsnas.losses.triplet import TripletLoss


@dataclass
class LossConfig:
    """The ``loss`` config section. Weights of 0 switch a term off. ``ib_*``: DESIGN §4 (η, warm-up
    epochs E_w, number of clusters k: None = number of training identities)."""

    ce_weight: float = 1.0
    label_smoothing: float = 0.1
    triplet_weight: float = 1.0
    triplet_margin: float = 0.3
    triplet_soft_margin: bool = False
    center_weight: float = 0.0
    center_lr: float = 0.5
    deep_supervision_weight: float = 1.0
    ib_weight: float = 0.0
    ib_warmup_epochs: int = 5
    ib_clusters: Optional[int] = None
    ib_input_size: list[int] = field(default_factory=lambda: [16, 8])

    def __post_init__(self) -> None:
        for name in ("ce_weight", "triplet_weight", "center_weight", "deep_supervision_weight", "ib_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


class ReIDCriterion(nn.Module):
    """``forward(outputs, labels)`` → dict of weighted terms and ``total``. ``outputs`` is the model's
    training output: ``logits`` (list), ``features`` and ``aux_logits`` (list)."""

    def __init__(self, cfg: LossConfig, num_classes: int, feature_dim: int):
        super().__init__()
        self.cfg = cfg
        self.triplet = TripletLoss(cfg.triplet_margin, cfg.triplet_soft_margin)
        self.center = CenterLoss(num_classes, feature_dim) if cfg.center_weight > 0 else None

    def forward(self, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        terms: dict[str, torch.Tensor] = {}
        if cfg.ce_weight > 0:
            ce = sum(F.cross_entropy(l.float(), labels, label_smoothing=cfg.label_smoothing) for l in outputs["logits"])
            terms["ce"] = cfg.ce_weight * ce
        if cfg.triplet_weight > 0:
            terms["triplet"] = cfg.triplet_weight * self.triplet(outputs["features"], labels)
        if self.center is not None:
            terms["center"] = cfg.center_weight * self.center(outputs["features"], labels)
        aux = outputs.get("aux_logits") or []
        if aux and cfg.deep_supervision_weight > 0:
            ds = sum(F.cross_entropy(l.float(), labels, label_smoothing=cfg.label_smoothing) for l in aux)
            terms["deep_supervision"] = cfg.deep_supervision_weight * ds
        terms["total"] = sum(terms.values())
        return terms
