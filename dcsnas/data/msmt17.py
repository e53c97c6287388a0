"""MSMT17 (Wei et al., CVPR 2018): 1041 + 3060 identities, 15 cameras, split by list files.

V1 keeps images in ``train/`` and ``test/``, V2 in ``mask_train_v2/`` and ``mask_test_v2/``; both have
``list_{train,val,query,gallery}.txt`` with lines ``<relative path> <pid>``. The camera is the third
``_``-separated field of the file name (``0000_000_01_0303morning_0015_0.jpg`` → camera 1). Train and
test number their identities independently, so test pids are kept as they are and no overlap check applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dcsnas.data.base import ImageRecord, ReIDDataset, check_splits, relabel
from dcsnas.data.folder import resolve_root
from dcsnas.errors import ConfigError, DataError

_LAYOUTS = {1: ("MSMT17_V1", "train", "test"), 2: ("MSMT17_V2", "mask_train_v2", "mask_test_v2")}


def _read_list(list_file: Path, image_dir: Path) -> list[ImageRecord]:
    if not list_file.is_file():
        raise DataError(f"MSMT17 list file '{list_file}' does not exist")
    records, bad = [], []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            rel, pid = parts[0], int(parts[1])
            camid = int(Path(rel).name.split("_")[2]) - 1
        except (IndexError, ValueError):
            bad.append(f"line {lineno}: {line.strip()!r}")
            continue
        records.append(ImageRecord(str(image_dir / rel), pid, camid))
    if bad:
        raise DataError(f"{len(bad)} line(s) of '{list_file}' do not parse as '<dir>/<pid>_<idx>_<cam>_….jpg <pid>' "
                        f"(first: {'; '.join(bad[:3])})")
    if not records:
        raise DataError(f"MSMT17 list file '{list_file}' is empty")
    return records


def load_msmt17(root: str | Path, version: Literal["auto", 1, 2] = "auto", use_val: bool = False) -> ReIDDataset:
    """``root`` is the ``MSMT17_V1``/``MSMT17_V2`` folder or its parent. ``use_val`` adds ``list_val`` to train
    (off by default, as in the usual protocol)."""
    if version not in ("auto", 1, 2):
        raise ConfigError(f"msmt17 option 'version' = {version!r}; allowed: 'auto', 1, 2")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"data root '{base}' does not exist or is not a folder")
    versions = (2, 1) if version == "auto" else (version,)
    for v in versions:
        folder, train_dir, test_dir = _LAYOUTS[v]
        path = resolve_root(base, (folder,))
        if (path / train_dir).is_dir():
            break
    else:
        expected = " or ".join(f"'{_LAYOUTS[v][1]}/'" for v in versions)
        raise DataError(f"MSMT17 image folder not found under '{base}': expected {expected} "
                        f"(inside {' or '.join(_LAYOUTS[v][0] for v in versions)})")
    train = _read_list(path / "list_train.txt", path / train_dir)
    if use_val:
        train += _read_list(path / "list_val.txt", path / train_dir)
    query = _read_list(path / "list_query.txt", path / test_dir)
    gallery = _read_list(path / "list_gallery.txt", path / test_dir)
    dataset = ReIDDataset(f"msmt17-v{v}", str(path), relabel(train), query, gallery)
    check_splits(dataset)
    return dataset
