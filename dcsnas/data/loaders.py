"""Torch datasets and data loaders over :class:`~dcsnas.data.base.ImageRecord` lists.

Exact repeatability with worker processes: the training loader starts fresh workers every epoch (no
persistent workers, whose random state would run on across epochs and restart on ``--resume``) and seeds
them from its own generator, reseeded from ``(seed, epoch)`` at each epoch: worker ``w`` of epoch ``e``
draws its augmentations from a stream that is a function of ``(seed, e, w)`` only. Loaders never draw from
the global torch generator, so evaluating more or less often does not change the training.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dcsnas.data.base import ImageRecord
from dcsnas.data.sampler import IdentityBatchSampler
from dcsnas.utils.image import read_image
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
        return self.transform(read_image(record.path)), record.pid, record.camid, index


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that is a function of ``(seed, epoch)`` (NumPy's SeedSequence mixes the pair)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class TrainLoader(DataLoader):
    """A P×K loader whose workers' random streams are reseeded from ``(seed, epoch)`` at every epoch
    (``epoch`` is the batch sampler's, set with ``loader.batch_sampler.set_epoch(e)``)."""

    def __init__(self, dataset: Dataset, batch_sampler: IdentityBatchSampler, num_workers: int, seed: int):
        super().__init__(dataset, batch_sampler=batch_sampler, num_workers=num_workers,
                         worker_init_fn=worker_init_fn, pin_memory=torch.cuda.is_available(),
                         generator=torch.Generator())
        self.seed = seed

    def __iter__(self):
        self.generator.manual_seed(epoch_seed(self.seed, self.batch_sampler.epoch))
        return super().__iter__()


def build_train_loader(records: Sequence[ImageRecord], transform: Callable, p: int, k: int, num_workers: int = 0,
                       seed: int = 0, rank: int = 0, world_size: int = 1) -> TrainLoader:
    """P×K batches (per rank) of training images; call ``loader.batch_sampler.set_epoch(e)`` each epoch."""
    sampler = IdentityBatchSampler([r.pid for r in records], p, k, seed=seed, rank=rank, world_size=world_size)
    return TrainLoader(ImageDataset(records, transform), sampler, num_workers, seed + 1_000_003 * rank)


def build_test_loader(records: Sequence[ImageRecord], transform: Callable, batch_size: int = 128,
                      num_workers: int = 0) -> DataLoader:
    """Images in record order, for feature extraction (its own generator: the global one is not drawn)."""
    return DataLoader(ImageDataset(records, transform), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, worker_init_fn=worker_init_fn, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(0))
