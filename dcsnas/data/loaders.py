"""Torch datasets and data loaders over :class:`~dcsnas.data.base.ImageRecord` lists."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dcsnas.data.base import ImageRecord
from dcsnas.data.sampler import IdentityBatchSampler
from dcsnas.errors import DataError
from dcsnas.utils.seed import worker_init_fn


class ImageDataset(Dataset):
    """Item ``i``: ``(image, pid, camid, i)``; the image is the transform of the RGB file."""

    def __init__(self, records: Sequence[ImageRecord], transform: Callable):
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        try:
            with Image.open(record.path) as img:
                image = img.convert("RGB")
        except OSError as exc:
            raise DataError(f"cannot read image '{record.path}': {exc}") from None
        return self.transform(image), record.pid, record.camid, index


def build_train_loader(records: Sequence[ImageRecord], transform: Callable, p: int, k: int, num_workers: int = 0,
                       seed: int = 0, rank: int = 0, world_size: int = 1) -> DataLoader:
    """P×K batches (per rank) of training images; call ``loader.batch_sampler.set_epoch(e)`` each epoch."""
    sampler = IdentityBatchSampler([r.pid for r in records], p, k, seed=seed, rank=rank, world_size=world_size)
    return DataLoader(ImageDataset(records, transform), batch_sampler=sampler, num_workers=num_workers,
                      worker_init_fn=worker_init_fn, pin_memory=torch.cuda.is_available(),
                      persistent_workers=num_workers > 0)


def build_test_loader(records: Sequence[ImageRecord], transform: Callable, batch_size: int = 128,
                      num_workers: int = 0) -> DataLoader:
    """Images in record order, for feature extraction."""
    return DataLoader(ImageDataset(records, transform), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available())
