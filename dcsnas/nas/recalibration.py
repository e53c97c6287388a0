"""BatchNorm recalibration before a weight-sharing evaluation (single-path NAS practice: Guo et al. 2020,
SPOS; Yu et al. 2020, BigNAS).

The supernet's BatchNorm layers are shared by every path, and in training their running statistics
follow the mixture of the sampled paths, not the one evaluated. :func:`recalibrate_bn` re-estimates
them for the path ``model`` runs in evaluation (the argmax architecture, or
:meth:`~dcsnas.nas.supernet.SuperNet.fixed_architecture`) from a few training batches: every other module
stays in evaluation mode (no Gumbel noise, DCS gates deterministic), the BatchNorm layers run in training
mode with ``momentum = None`` (cumulative average), so the first batch replaces the old statistics and
the result is the average over the batches, whatever came before. Layers or channels the path does not
run keep their statistics; nothing else changes (parameters, modes, the global RNG).
"""

from __future__ import annotations

import itertools
from typing import Iterable, Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, num_batches: int, seed: Optional[int] = 0) -> int:
    """Re-estimate the running statistics of the BatchNorm layers on ``model``'s evaluation path.

    Args:
        model: any module (a supernet, a derived network); its device is that of its parameters.
        batches: images ``[B, 3, H, W]``, or tuples whose first item they are (a training loader's batches).
        num_batches: how many batches to use (at most; fewer if ``batches`` ends).
        seed: the torch seed the batches are drawn under (random augmentations, loader workers), inside a
            fork of the global RNG, which is left as it was; ``None``: the current state, still forked.

    Returns the number of batches used. Train/eval modes and momenta are restored; ``num_batches_tracked``
    of a layer counts the batches it saw.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    modes = [(m, m.training) for m in model.modules()]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    device = next(model.parameters()).device
    used = 0
    try:
        model.eval()
        for m in norms:
            m.train()
            m.momentum = None
            m.num_batches_tracked.zero_()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            for batch in itertools.islice(batches, max(num_batches, 0)):
                images = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(images.to(device))
                used += 1
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.add_(count)
        for m, mode in modes:
            m.training = mode
    return used
