"""Optimizer and learning-rate schedule from the ``optim`` config section."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from dcsnas.config import ranged


@dataclass
class OptimConfig:
    """Adam or SGD; linear warm-up from ``warmup_factor·lr`` over ``warmup_epochs``, then ``schedule``:
    ``step`` (×``gamma`` at each milestone epoch) or ``cosine`` (half a cosine from lr after the warm-up to
    ``min_factor·lr`` in the last epoch; milestones unused). ``backbone_lr_mult`` scales the backbone's
    learning rate (0.1 in seed 001's recipe)."""

    name: Literal["adam", "sgd"] = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    backbone_lr_mult: float = 1.0
    epochs: int = 120
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    milestones: list[int] = field(default_factory=lambda: [40, 70])
    gamma: float = 0.1
    schedule: Literal["step", "cosine"] = "step"
    min_factor: float = ranged(0.01, ge=0.0, le=1.0)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Parameter groups named ``backbone`` (lr × backbone_lr_mult), ``part_classifier`` (the RPP part
    classifier, so it can train alone) and ``other``."""
    groups = {"backbone": [], "part_classifier": [], "other": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = ("backbone" if name.startswith("backbone.") else
                   "part_classifier" if name.startswith("head.part_classifier.") else "other")
            groups[key].append(param)
    groups = [{"params": params, "lr": cfg.lr * (cfg.backbone_lr_mult if key == "backbone" else 1.0), "name": key}
              for key, params in groups.items() if params]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(epoch: int, cfg: OptimConfig) -> float:
    """Multiplier of the base learning rates during ``epoch`` (0-based)."""
    if epoch < cfg.warmup_epochs:
        alpha = epoch / cfg.warmup_epochs
        return cfg.warmup_factor * (1 - alpha) + alpha
    if cfg.schedule == "cosine":
        span = cfg.epochs - 1 - cfg.warmup_epochs
        t = (epoch - cfg.warmup_epochs) / span if span > 0 else 1.0
        return cfg.min_factor + (1 - cfg.min_factor) * 0.5 * (1 + math.cos(math.pi * t))
    return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Epoch-wise schedule: call ``step()`` once at the end of each epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, cfg))
