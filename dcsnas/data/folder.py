"""Folder data sets: one folder per split, identity and camera parsed from each file name by a regex.

This is the Market-1501 layout (``bounding_box_train``, ``query``, ``bounding_box_test``; names like
``0002_c1s1_000451_03.jpg``), shared by DukeMTMC-reID, CUHK03-NP, the synthetic set and any user data set
with a filename regex that has the named groups ``pid`` and ``camid``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from dcsnas.data.base import ImageRecord, ReIDDataset, check_identity_overlap, check_splits, relabel
from dcsnas.errors import ConfigError, DataError

MARKET_PATTERN = r"^(?P<pid>-?\d+)_c(?P<camid>\d+)"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MARKET_SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def resolve_root(root: str | Path, candidates: Iterable[str] = ()) -> Path:
    """``root`` itself, or the first of its sub-folders named in ``candidates`` (e.g. ``Market-1501-v15.09.15``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root '{root}' does not exist or is not a folder")
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    return root


def compile_pattern(pattern: str) -> re.Pattern:
    """Compile a filename regex and check it has the named groups ``pid`` and ``camid``."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"filename pattern {pattern!r} is not a valid regex: {exc}") from None
    missing = {"pid", "camid"} - set(regex.groupindex)
    if missing:
        raise ConfigError(f"filename pattern {pattern!r} must have the named groups (?P<pid>…) and (?P<camid>…); "
                          f"missing: {', '.join(sorted(missing))}")
    return regex


def pid_list(key: str, value: Any) -> list[int]:
    """A data set option that lists identities: an int or a list of ints (a string is an error, not its letters)."""
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable) or \
            not all(isinstance(p, int) and not isinstance(p, bool) for p in items):
        raise ConfigError(f"data set option '{key}' = {value!r}: expected an int or a list of ints, e.g. [-1]")
    return list(items)


def scan_split(folder: Path, regex: re.Pattern, camid_base: int = 1) -> list[ImageRecord]:
    """All images in ``folder`` (sorted by name) as records with the raw pid and a 0-based camera index."""
    if not folder.is_dir():
        raise DataError(f"split folder '{folder}' does not exist; expected a folder of images there")
    records, bad = [], []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        match = regex.search(path.name)
        if match is None:
            bad.append(path.name)
            continue
        try:
            pid, camid = int(match["pid"]), int(match["camid"])
        except (TypeError, ValueError):
            raise DataError(f"file '{path}': the pattern {regex.pattern!r} reads pid = {match['pid']!r}, camid = "
                            f"{match['camid']!r}; both groups must match integers (e.g. (?P<pid>-?\\d+))") from None
        if camid < camid_base:
            raise DataError(f"file '{path}': camera {camid}, but camera ids of this data set start at {camid_base}")
        records.append(ImageRecord(str(path), pid, camid - camid_base))
    if bad:
        raise DataError(
            f"{len(bad)} file name(s) in '{folder}' do not match the pattern {regex.pattern!r} "
            f"(first: {', '.join(bad[:3])})"
        )
    return records


def load_folder_dataset(
    name: str,
    root: str | Path,
    pattern: str = MARKET_PATTERN,
    train_dir: str = MARKET_SPLIT_DIRS["train"],
    query_dir: str = MARKET_SPLIT_DIRS["query"],
    gallery_dir: str = MARKET_SPLIT_DIRS["gallery"],
    camid_base: int = 1,
    junk_pids: Iterable[int] = (-1,),
    distractor_pids: Iterable[int] = (0,),
) -> ReIDDataset:
    """Load a folder data set. Junk pids are dropped everywhere; distractor pids are kept in the gallery
    only; training pids are relabelled 0..N-1 and must not reappear in query or gallery."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root '{root}' does not exist or is not a folder")
    for key, value in (("pattern", pattern), ("train_dir", train_dir), ("query_dir", query_dir),
                       ("gallery_dir", gallery_dir)):
        if not isinstance(value, str):
            raise ConfigError(f"data set option '{key}' = {value!r}: expected a string")
    if isinstance(camid_base, bool) or not isinstance(camid_base, int) or not 0 <= camid_base <= 1000:
        raise ConfigError(f"data set option 'camid_base' = {camid_base!r}: expected an int in [0, 1000] (the first "
                          "camera's id in the file names)")
    regex = compile_pattern(pattern)
    junk, distractors = set(pid_list("junk_pids", junk_pids)), frozenset(pid_list("distractor_pids", distractor_pids))
    splits = {}
    for split, sub in (("train", train_dir), ("query", query_dir), ("gallery", gallery_dir)):
        records = [r for r in scan_split(root / sub, regex, camid_base) if r.pid not in junk]
        if split != "gallery":
            records = [r for r in records if r.pid not in distractors]
        if not records:
            raise DataError(f"data set '{name}': the {split} split '{root / sub}' has no usable images")
        splits[split] = records
    test_pids = {r.pid for r in splits["query"] + splits["gallery"]} - distractors
    check_identity_overlap(name, str(root), {r.pid for r in splits["train"]}, test_pids)
    dataset = ReIDDataset(name, str(root), relabel(splits["train"]), splits["query"], splits["gallery"], distractors)
    check_splits(dataset)
    return dataset

