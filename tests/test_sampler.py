from __future__ import annotations

from collections import Counter

import pytest
import torch

from dcsnas.data.sampler import IdentityBatchSampler
from dcsnas.data.transforms import TransformConfig, build_transforms

PIDS = [pid for pid in range(10) for _ in range(3 + pid % 4)]  # 3..6 images per identity


def test_batches_have_p_identities_with_k_images_each():
    sampler = IdentityBatchSampler(PIDS, p=4, k=2, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        counts = Counter(PIDS[i] for i in batch)
        assert len(batch) == 8 and len(counts) == 4 and set(counts.values()) == {2}
    used = [i for b in batches for i in b]
    assert len(used) == len(set(used))  # k <= images per identity: no index repeats within an epoch


def test_identities_with_fewer_than_k_images_are_sampled_with_replacement():
    pids = [0, 1, 1, 1, 1, 2, 2, 2, 2]
    batch = next(iter(IdentityBatchSampler(pids, p=3, k=4, seed=0)))
    assert Counter(pids[i] for i in batch) == {0: 4, 1: 4, 2: 4}


def test_order_depends_on_seed_and_epoch_only():
    a, b = IdentityBatchSampler(PIDS, 4, 2, seed=1), IdentityBatchSampler(PIDS, 4, 2, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(IdentityBatchSampler(PIDS, 4, 2, seed=2)) != list(a)


def test_ddp_ranks_get_disjoint_equal_shares_of_the_same_epoch():
    world = 3
    full = list(IdentityBatchSampler(PIDS, 2, 2, seed=4))
    shares = [list(IdentityBatchSampler(PIDS, 2, 2, seed=4, rank=r, world_size=world)) for r in range(world)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(full) // world
    flat = [tuple(b) for s in shares for b in s]
    assert len(flat) == len(set(flat)) and set(flat) <= {tuple(b) for b in full}


def test_sampler_errors():
    with pytest.raises(ValueError, match="p=20 identities per batch but the data set has only 10"):
        IdentityBatchSampler(PIDS, p=20, k=2)
    with pytest.raises(ValueError, match="rank 2 is not in"):
        IdentityBatchSampler(PIDS, p=2, k=2, rank=2, world_size=2)


def test_transforms_shapes_and_normalisation():
    from PIL import Image

    img = Image.new("RGB", (64, 128), (124, 116, 104))  # ≈ the ImageNet mean colour
    cfg = TransformConfig(height=32, width=16)
    test = build_transforms(cfg, train=False)(img)
    assert test.shape == (3, 32, 16) and test.dtype == torch.float32
    assert test.abs().max() < 0.02
    torch.manual_seed(0)
    train = build_transforms(cfg, train=True)(img)
    assert train.shape == (3, 32, 16)
    with pytest.raises(ValueError, match="flip_p must be in"):
        TransformConfig(flip_p=2.0)
