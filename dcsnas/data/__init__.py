"""Re-ID data: data sets on disk, the synthetic generator, P×K sampling, transforms and loaders."""

from dcsnas.data.base import ImageRecord, ReIDDataset
from dcsnas.data.registry import DATASETS, build_dataset

__all__ = ["DATASETS", "ImageRecord", "ReIDDataset", "build_dataset"]
