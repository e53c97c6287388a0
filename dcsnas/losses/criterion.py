"""The Re-ID training loss: CE with label smoothing + batch-hard triplet (+ center) + deep supervision
(+ the Information-Bottleneck bound, added by the trainer once its warm-up is over). Every component is
returned for logging."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from dcsnas.losses.center import CenterLoss
from dcsnas.losses.triplet import TripletLoss


@dataclass
class LossConfig:
    """The ``loss`` config section. Weights of 0 switch a term off.

    ``ib_*`` (DESIGN §4): ``ib_weight`` is η (0.1 in the DCS authors' recipes; 0 here, so a plain Re-ID run
    has no IB term unless asked); the IB term starts at the warm-up epoch E_w given either by
    ``ib_warmup_epochs`` (an epoch count) or by ``ib_warmup_ratio`` (a fraction of ``optim.epochs``,
    E_w = floor(ratio · epochs)); set at most one of them; with neither, the authors' ratio 0.3 applies.
    ``ib_clusters``: k of both F and X (None: the number of training identities). ``ib_ixf``: the first
    term, ``authors`` (their bound, constant in the weights) or ``batch_mi`` (the batch's plug-in I(F; X)).
    ``ib_input_size``: [h, w] the input image is average-pooled to before it is flattened into X.

    Triplet: ``triplet_distance`` ``euclidean`` (BoT) or ``cosine`` (1 − cos, scale-invariant: no collapse by
    shrinking, :class:`~dcsnas.losses.triplet.TripletLoss`); ``triplet_on`` ``features`` (the pooled map before
    the BNNeck, BoT) or ``embedding`` (the test embedding, after it).
    """

    ce_weight: float = 1.0
    label_smoothing: float = 0.1
    triplet_weight: float = 1.0
    triplet_margin: float = 0.3
    triplet_soft_margin: bool = False
    triplet_distance: Literal["euclidean", "cosine"] = "euclidean"
    triplet_on: Literal["features", "embedding"] = "features"
    center_weight: float = 0.0
    center_lr: float = 0.5
    deep_supervision_weight: float = 1.0
    ib_weight: float = 0.0
    ib_warmup_epochs: Optional[int] = None
    ib_warmup_ratio: Optional[float] = None
    ib_ixf: Literal["authors", "batch_mi"] = "authors"
    ib_clusters: Optional[int] = None
    ib_input_size: list[int] = field(default_factory=lambda: [16, 8])

    DEFAULT_IB_WARMUP_RATIO = 0.3

    def __post_init__(self) -> None:
        for name in ("ce_weight", "triplet_weight", "center_weight", "deep_supervision_weight", "ib_weight"):
            if not getattr(self, name) >= 0:  # NaN fails too
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.triplet_soft_margin and not self.triplet_margin > 0:
            raise ValueError(f"triplet_margin must be > 0 (or set triplet_soft_margin: true), "
                             f"got {self.triplet_margin}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.ib_warmup_epochs is not None and self.ib_warmup_ratio is not None:
            raise ValueError(f"set ib_warmup_epochs ({self.ib_warmup_epochs}) or ib_warmup_ratio "
                             f"({self.ib_warmup_ratio}), not both")
        if self.ib_warmup_epochs is not None and self.ib_warmup_epochs < 0:
            raise ValueError(f"ib_warmup_epochs must be >= 0, got {self.ib_warmup_epochs}")
        if self.ib_warmup_ratio is not None and not 0.0 <= self.ib_warmup_ratio < 1.0:
            raise ValueError(f"ib_warmup_ratio must be in [0, 1), got {self.ib_warmup_ratio}")
        if self.ib_clusters is not None and self.ib_clusters < 1:
            raise ValueError(f"ib_clusters must be >= 1 or null, got {self.ib_clusters}")
        if len(self.ib_input_size) != 2 or min(self.ib_input_size) < 1:
            raise ValueError(f"ib_input_size must be [height, width] of positive ints, got {self.ib_input_size}")

    def ib_start_epoch(self, epochs: int) -> int:
        """E_w: the first epoch (0-based) of a run of ``epochs`` epochs that has the IB term."""
        if self.ib_warmup_epochs is not None:
            return self.ib_warmup_epochs
        ratio = self.DEFAULT_IB_WARMUP_RATIO if self.ib_warmup_ratio is None else self.ib_warmup_ratio
        return math.floor(ratio * epochs + 1e-9)


class ReIDCriterion(nn.Module):
    """``forward(outputs, labels)`` → dict of weighted terms and ``total``. ``outputs`` is the model's
    training output: ``logits`` (list), ``features`` and ``aux_logits`` (list)."""

    def __init__(self, cfg: LossConfig, num_classes: int, feature_dim: int):
        super().__init__()
        self.cfg = cfg
        self.triplet = TripletLoss(cfg.triplet_margin, cfg.triplet_soft_margin, cfg.triplet_distance)
        self.center = CenterLoss(num_classes, feature_dim) if cfg.center_weight > 0 else None

    def forward(self, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        terms: dict[str, torch.Tensor] = {}
        if cfg.ce_weight > 0:
            ce = sum(F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
                     for logits in outputs["logits"])
            terms["ce"] = cfg.ce_weight * ce
        if cfg.triplet_weight > 0:
            terms["triplet"] = cfg.triplet_weight * self.triplet(outputs[cfg.triplet_on], labels)
        if self.center is not None:
            terms["center"] = cfg.center_weight * self.center(outputs["features"], labels)
        aux = outputs.get("aux_logits") or []
        if aux and cfg.deep_supervision_weight > 0:
            ds = sum(F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing) for logits in aux)
            terms["deep_supervision"] = cfg.deep_supervision_weight * ds
        terms["total"] = sum(terms.values())
        return terms
