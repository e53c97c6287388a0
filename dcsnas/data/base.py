"""The in-memory form of a Re-ID data set: train/query/gallery lists of ``(path, pid, camid)``.

Training pids are relabelled to 0..N-1; query and gallery keep the data set's own pids (distractors,
pid 0 in Market-style sets, stay in the gallery). Camera ids are 0-based.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

from dcsnas.errors import DataError


class ImageRecord(NamedTuple):
    """One image: file path, identity label, 0-based camera index."""

    path: str
    pid: int
    camid: int


@dataclass
class ReIDDataset:
    """A Re-ID data set split into train (relabelled pids), query and gallery."""

    name: str
    root: str
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    distractor_pids: frozenset[int] = field(default_factory=frozenset)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({r.camid for r in self.train})

    def split(self, name: str) -> list[ImageRecord]:
        if name not in ("train", "query", "gallery"):
            raise ValueError(f"unknown split {name!r}; expected train, query or gallery")
        return getattr(self, name)

    def queries_without_cross_camera_match(self) -> list[int]:
        """Indices of queries whose identity has no gallery image from another camera."""
        cams_by_pid: dict[int, set[int]] = {}
        for r in self.gallery:
            cams_by_pid.setdefault(r.pid, set()).add(r.camid)
        return [i for i, q in enumerate(self.query) if not (cams_by_pid.get(q.pid, set()) - {q.camid})]

    def stats(self) -> dict:
        """Per split: images, identities, cameras; and the query identities with no cross-camera match."""
        out = {"name": self.name, "root": self.root}
        for split in ("train", "query", "gallery"):
            records = self.split(split)
            pids = {r.pid for r in records}
            if split != "train":  # training pids are relabelled: 0 is an identity there
                pids -= self.distractor_pids
            out[split] = {
                "images": len(records),
                "identities": len(pids),
                "cameras": len({r.camid for r in records}),
            }
            if split == "gallery":
                out[split]["distractor_images"] = sum(r.pid in self.distractor_pids for r in records)
        missing = self.queries_without_cross_camera_match()
        out["query"]["images_without_cross_camera_match"] = len(missing)
        out["query"]["identities_without_cross_camera_match"] = sorted({self.query[i].pid for i in missing})
        return out


def hold_out_identities(train: list[ImageRecord], num_identities: int, seed: int
                        ) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """A validation split carved from training identities: ``num_identities`` pids chosen by ``seed`` are held
    out; per held-out identity the first image of each camera is a query, the rest gallery. Returns
    ``(train, val_query, val_gallery)`` with the remaining training pids relabelled 0..N-1."""
    import numpy as np

    pids = sorted({r.pid for r in train})
    if not 0 < num_identities < len(pids):
        raise DataError(f"eval.val_identities = {num_identities}: must be in [1, {len(pids) - 1}] "
                        f"(the training split has {len(pids)} identities)")
    held = set(np.random.default_rng(seed).choice(pids, size=num_identities, replace=False).tolist())
    query, gallery = query_gallery([r for r in train if r.pid in held])
    return relabel([r for r in train if r.pid not in held]), query, gallery


def query_gallery(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """A retrieval split of ``records``: per identity the first image of each camera is a query, the rest
    gallery (in the records' order)."""
    query, gallery, seen = [], [], set()
    for r in records:
        (gallery if (r.pid, r.camid) in seen else query).append(r)
        seen.add((r.pid, r.camid))
    return query, gallery


def relabel(records: list[ImageRecord]) -> list[ImageRecord]:
    """Map the pids of ``records`` to 0..N-1 in increasing order of the original pid."""
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [ImageRecord(r.path, mapping[r.pid], r.camid) for r in records]


def check_splits(dataset: ReIDDataset) -> None:
    """Raise :class:`DataError` for an empty split; warn about queries with no cross-camera gallery match."""
    for split in ("train", "query", "gallery"):
        if not dataset.split(split):
            raise DataError(f"data set '{dataset.name}' at '{dataset.root}': the {split} split is empty")
    missing = dataset.queries_without_cross_camera_match()
    if missing:
        warnings.warn(
            f"data set '{dataset.name}': {len(missing)} of {len(dataset.query)} queries have no gallery image "
            "of the same identity from another camera; they will be skipped in evaluation",
            stacklevel=2,
        )


def check_identity_overlap(name: str, root: str, train_pids: set[int], test_pids: set[int]) -> None:
    """Raise :class:`DataError` when training identities (raw pids, before relabelling) reappear in
    query/gallery."""
    overlap = sorted(train_pids & test_pids)
    if overlap:
        shown = ", ".join(str(p) for p in overlap[:5])
        raise DataError(
            f"data set '{name}' at '{root}': {len(overlap)} training identities also appear in query/gallery "
            f"(e.g. {shown}); train and test identities must be disjoint"
        )
