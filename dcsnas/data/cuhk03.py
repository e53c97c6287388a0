"""CUHK03-NP (Zhong et al., CVPR 2017 new protocol): 767 + 700 identities, 2 cameras, ``detected`` or
``labeled`` boxes, Market layout per subset with names ``0001_c1_1.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dcsnas.data.base import ReIDDataset
from dcsnas.data.folder import load_folder_dataset, resolve_root
from dcsnas.errors import ConfigError, DataError


def load_cuhk03(root: str | Path, subset: Literal["detected", "labeled"] = "detected") -> ReIDDataset:
    """``root`` is the ``cuhk03-np`` folder (holding ``detected/`` and ``labeled/``) or its parent."""
    if subset not in ("detected", "labeled"):
        raise ConfigError(f"cuhk03 option 'subset' = {subset!r}; allowed: 'detected', 'labeled'")
    path = resolve_root(root, ("cuhk03-np",))
    if not (path / subset).is_dir():
        raise DataError(f"CUHK03-NP subset folder '{path / subset}' does not exist; expected "
                        f"'{path}/{{detected,labeled}}/{{bounding_box_train,query,bounding_box_test}}'")
    return load_folder_dataset(f"cuhk03-{subset}", path / subset, junk_pids=(), distractor_pids=())
