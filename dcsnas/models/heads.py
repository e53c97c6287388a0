"""Re-ID heads on the final feature map ``[B, C, H, W]``, by name: ``create_head("pcb", C, num_classes, parts=6)``.

Contract (torchreid style): in training mode a head returns ``{"logits": [Tensor[B, num_classes], ...],
"features": Tensor[B, D], "embedding": Tensor[B, D]}`` (one logits tensor per classifier, for the cross-entropy
terms; ``features`` for the metric losses: triplet, centre; ``embedding``, the test embedding with training-mode
statistics, for a triplet on it); in evaluation mode it returns the test embedding ``Tensor[B, D]``,
``D = head.embedding_dim``. Registry: ``HEADS`` (:class:`~dcsnas.utils.registry.Registry`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dcsnas.utils.pooling import adaptive_avg_pool2d
from dcsnas.utils.registry import Registry

HEADS: Registry[type[nn.Module]] = Registry("head")


@HEADS.register("bnneck")
class BNNeck(nn.Module):
    """GAP → BatchNorm (bias frozen at 0) → bias-free classifier (Luo et al., BoT). Triplet features are
    taken before the BN, the test embedding after it."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_channels)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_channels, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)
        self.embedding_dim = in_channels

    def forward(self, fmap: torch.Tensor):
        features = fmap.mean(dim=(2, 3))
        embedding = self.bn(features)
        if not self.training:
            return embedding
        return {"logits": [self.classifier(embedding)], "features": features, "embedding": embedding}


@HEADS.register("pcb")
class PCB(nn.Module):
    """Part-based Convolutional Baseline (Sun et al., ECCV 2018): the map is pooled into ``parts``
    horizontal stripes, each reduced by 1×1 conv + BN + ReLU to ``reduce_dim`` and classified on its own.
    The embedding is the concatenation of the reduced part features, ``parts * reduce_dim`` long.

    With ``refined = True`` the stripes are replaced by refined part pooling (RPP): a 1×1 conv classifies
    every location into the parts (softmax over parts) and each part feature is the average of the map
    weighted by its part probability. The switch is the boolean buffer ``refined_pooling``, so it travels
    with the weights in the state dict (a checkpoint of an RPP run evaluates with RPP).
    """

    def __init__(self, in_channels: int, num_classes: int, parts: int = 6, reduce_dim: int = 256):
        super().__init__()
        self.parts = parts
        self.register_buffer("refined_pooling", torch.zeros((), dtype=torch.bool))
        self.part_classifier = nn.Conv2d(in_channels, parts, kernel_size=1)
        self.reduce = nn.ModuleList(
            nn.Sequential(nn.Conv1d(in_channels, reduce_dim, 1, bias=False), nn.BatchNorm1d(reduce_dim), nn.ReLU(True))
            for _ in range(parts)
        )
        self.classifiers = nn.ModuleList(nn.Linear(reduce_dim, num_classes) for _ in range(parts))
        for c in self.classifiers:
            nn.init.normal_(c.weight, std=0.001)
            nn.init.zeros_(c.bias)
        self.embedding_dim = parts * reduce_dim

    @property
    def refined(self) -> bool:
        """Whether the parts are pooled by RPP (the ``refined_pooling`` buffer)."""
        return bool(self.refined_pooling)

    @refined.setter
    def refined(self, value: bool) -> None:
        self.refined_pooling.fill_(bool(value))

    def pool_parts(self, fmap: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` → part features ``[B, C, parts]`` (uniform stripes or RPP)."""
        if not self.refined:
            return adaptive_avg_pool2d(fmap, (self.parts, 1)).squeeze(-1)
        prob = self.part_classifier(fmap).flatten(2).softmax(dim=1)  # [B, parts, HW]
        weighted = torch.einsum("bcn,bpn->bcp", fmap.flatten(2), prob)
        return weighted / prob.sum(dim=2).unsqueeze(1).clamp_min(1e-6)

    def forward(self, fmap: torch.Tensor):
        pooled = self.pool_parts(fmap)
        parts = [reduce(pooled[:, :, i:i + 1]).squeeze(-1) for i, reduce in enumerate(self.reduce)]
        embedding = torch.cat(parts, dim=1)
        if not self.training:
            return embedding
        return {"logits": [c(p) for c, p in zip(self.classifiers, parts)], "features": embedding,
                "embedding": embedding}


def create_head(name: str, in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    """The head ``name`` on ``in_channels`` map channels for ``num_classes`` identities; ``options`` are its
    keyword arguments (PCB: ``parts``, ``reduce_dim``). Unknown names or options: :class:`ConfigError`."""
    return HEADS.create(name, "model.head", in_channels, num_classes, **options)
