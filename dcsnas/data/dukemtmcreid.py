"""DukeMTMC-reID (Zheng et al., ICCV 2017): 702 + 1110 identities (408 distractor-only), 8 cameras,
names ``0001_c2_f0046182.jpg``."""

from __future__ import annotations

from pathlib import Path

from dcsnas.data.base import ReIDDataset
from dcsnas.data.folder import load_folder_dataset, resolve_root


def load_dukemtmcreid(root: str | Path) -> ReIDDataset:
    """``root`` is the ``DukeMTMC-reID`` folder or its parent. Duke has no junk or pid-0 distractor images."""
    path = resolve_root(root, ("DukeMTMC-reID",))
    return load_folder_dataset("dukemtmcreid", path, junk_pids=(), distractor_pids=())
