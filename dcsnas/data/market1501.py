"""Market-1501 (Zheng et al., ICCV 2015): 751 + 750 identities, 6 cameras, names ``0002_c1s1_000451_03.jpg``."""

from __future__ import annotations

from pathlib import Path

from dcsnas.data.base import ReIDDataset
from dcsnas.data.folder import load_folder_dataset, resolve_root


def load_market1501(root: str | Path) -> ReIDDataset:
    """``root`` is the Market-1501 folder or its parent (``Market-1501-v15.09.15`` / ``market1501``)."""
    path = resolve_root(root, ("Market-1501-v15.09.15", "market1501", "Market-1501"))
    return load_folder_dataset("market1501", path)
