"""P×K identity sampling for metric learning (batch-hard triplet): P identities, K images each."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class IdentityBatchSampler(Sampler[list[int]]):
    """Yields batches of ``p * k`` dataset indices: ``p`` distinct identities, ``k`` images of each.

    Per epoch, each identity's images are shuffled and cut into groups of ``k`` (identities with fewer than
    ``k`` images are sampled with replacement up to ``k``; a last incomplete group is dropped); batches draw
    ``p`` identities at random among those with groups left. The order is a pure function of
    ``(seed, epoch)``, so every DDP rank computes the same list and takes a disjoint share of it
    (batches ``rank, rank + world_size, …``, truncated so that every rank gets the same number).
    Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if p < 1 or k < 1:
            raise ValueError(f"P×K sampler needs p >= 1 and k >= 1, got p={p}, k={k}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.index_by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            self.index_by_pid[int(pid)].append(index)
        if len(self.index_by_pid) < p:
            raise ValueError(f"P×K sampler: p={p} identities per batch but the data set has only "
                             f"{len(self.index_by_pid)}")
        self.p, self.k, self.seed, self.rank, self.world_size = p, k, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        groups: dict[int, list[list[int]]] = {}
        for pid in sorted(self.index_by_pid):
            idxs = np.asarray(self.index_by_pid[pid])
            if len(idxs) < self.k:
                idxs = rng.choice(idxs, size=self.k, replace=True)
            else:
                idxs = rng.permutation(idxs)
            n = len(idxs) // self.k
            groups[pid] = [idxs[i * self.k:(i + 1) * self.k].tolist() for i in range(n)]
        batches = []
        available = [pid for pid in groups if groups[pid]]
        while len(available) >= self.p:
            chosen = rng.choice(len(available), size=self.p, replace=False)
            batch = []
            for j in chosen:
                batch.extend(groups[available[j]].pop())
            batches.append(batch)
            available = [pid for pid in available if groups[pid]]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        per_rank = len(batches) // self.world_size
        return iter(batches[self.rank::self.world_size][:per_rank])

    def __len__(self) -> int:
        return len(self._all_batches()) // self.world_size
