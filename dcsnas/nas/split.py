"""The search's two training splits: one for the weight steps, one for the architecture steps."""

from __future__ import annotations

from typing import Literal

import numpy as np

from dcsnas.data.base import ImageRecord, relabel
from dcsnas.errors import DataError


def split_for_search(records: list[ImageRecord], arch_fraction: float,
                     mode: Literal["per_identity", "identity_disjoint"], seed: int
                     ) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(weight_split, arch_split)``, both in record order, chosen by ``seed``.

    ``per_identity``: of each identity's n images, round(n · arch_fraction) (at least 1, at most n − 1) go
    to the architecture split; labels are kept, so both splits share the classifier's classes.
    ``identity_disjoint``: round(N · arch_fraction) of the N identities go to the architecture split; each
    split is relabelled 0..N_split−1.
    """
    rng = np.random.default_rng([seed, 7])
    by_pid: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        by_pid.setdefault(r.pid, []).append(i)
    if mode == "per_identity":
        arch = set()
        for pid in sorted(by_pid):
            idx = by_pid[pid]
            if len(idx) > 1:
                n = min(max(round(len(idx) * arch_fraction), 1), len(idx) - 1)
                arch.update(rng.permutation(idx)[:n].tolist())
        return [r for i, r in enumerate(records) if i not in arch], [r for i, r in enumerate(records) if i in arch]
    pids = sorted(by_pid)
    n = round(len(pids) * arch_fraction)
    if not 2 <= n <= len(pids) - 2:
        raise DataError(f"search.split = identity_disjoint: {len(pids)} training identities cannot be split "
                        f"with arch_fraction = {arch_fraction} into two parts of at least 2 identities")
    arch_pids = set(rng.permutation(pids)[:n].tolist())
    return (relabel([r for r in records if r.pid not in arch_pids]),
            relabel([r for r in records if r.pid in arch_pids]))
