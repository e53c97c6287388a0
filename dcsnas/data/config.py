"""The ``data`` section of run configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dcsnas.config import ranged
from dcsnas.data.registry import build_dataset
from dcsnas.data.transforms import TransformConfig


@dataclass
class DataConfig:
    """Which data set, where, and how it is sampled. ``options`` go to the data set's loader
    (e.g. ``subset: labeled`` for cuhk03, ``pattern`` for folder)."""

    dataset: str = "synthetic"
    root: str = "data/synthetic-small"
    options: dict[str, Any] = field(default_factory=dict)
    transforms: TransformConfig = field(default_factory=TransformConfig)
    p: int = ranged(16, ge=1, le=4096)
    k: int = ranged(4, ge=1, le=1024)
    test_batch_size: int = ranged(128, ge=1, le=65536)
    num_workers: int = ranged(2, ge=0, le=256)

    def __post_init__(self) -> None:
        for name in ("p", "k", "test_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")

    def load(self):
        """The :class:`~dcsnas.data.base.ReIDDataset` this config names."""
        return build_dataset(self.dataset, self.root, **self.options)
