"""Seeding: one ``seed`` makes CPU runs repeatable."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices). ``deterministic`` also asks torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rank_seed(seed: int, rank: int) -> int:
    """The seed of DDP rank ``rank``'s own random stream (augmentations without workers, DCS gate noise):
    ``seed`` itself on rank 0, so a single process and rank 0 draw alike; a mix of ``(seed, rank)`` elsewhere."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint32)[0])  # a valid PYTHONHASHSEED


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker seeding: each worker derives its NumPy/random seed from torch's per-worker seed.
    Workers ignore SIGINT and SIGTERM sent to the whole process group (Ctrl-C, ``kill -TERM -PGID``): the main
    process handles them and shuts its workers down, so no worker prints a traceback or dies first."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
