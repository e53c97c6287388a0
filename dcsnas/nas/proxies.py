"""Training-free scores of an untrained network (the zero-cost baselines a supernet's ranking is held against).

- :func:`naswot_score` (Mellor et al., "Neural Architecture Search without Training", ICML 2021): the binary
  code c_i of a batch image i is which units of every rectifier are active (output > 0) on it; with N_A units,
  K[i, j] = N_A - Hamming(c_i, c_j) = c_i·c_j + (1 - c_i)·(1 - c_j), and the score is log |det K|.
  Networks whose units separate the images of a batch score higher.
- :func:`synflow_score` (Tanaka et al., "Pruning neural networks without any data by iteratively conserving
  synaptic flow", NeurIPS 2020, as a NAS proxy in Abdelfattah et al., "Zero-Cost Proxies for Lightweight
  NAS", ICLR 2021): every parameter replaced by its absolute value, normalisation layers removed, float64;
  R = sum of the network's output on an all-ones input; the score is Σ |θ ⊙ ∂R/∂θ| over the weights of the
  convolutions and linear layers. Every pre-activation is then positive, where a rectifier is the identity;
  the rectifier modules are replaced by the identity so that ReLU6's clip at 6 (MobileNetV2) does not cut
  the flow.

Both read ``model.forward_features`` (the backbone's final map) when the model has it, else ``model(x)``, and
work on a copy: the model, its BatchNorm statistics and the global random state are left as they were.
Written here: no maintained library computes them for arbitrary PyTorch modules.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.Hardswish, nn.SiLU)
"""Activations whose unit is "active" when its output is > 0 (all are 0 or negative for inputs <= 0)."""


def _features(model: nn.Module, x: Tensor) -> Tensor:
    forward = getattr(model, "forward_features", None)
    return forward(x) if callable(forward) else model(x)


@torch.no_grad()
def naswot_score(model: nn.Module, images: Tensor) -> float:
    """log |det K| of the rectifiers' activation codes on ``images`` [B, 3, H, W] (module docstring); the
    BatchNorm layers use the batch's statistics, as at initialisation."""
    net = copy.deepcopy(model).train()
    codes: list[Tensor] = []
    hooks = [m.register_forward_hook(lambda m, args, out: codes.append((out > 0).flatten(1).double()))
             for m in net.modules() if isinstance(m, RECTIFIERS)]
    if not hooks:
        raise ValueError("naswot_score: the network has no rectifier (ReLU, ReLU6, GELU, Hardswish, SiLU)")
    with torch.random.fork_rng(devices=[]):
        _features(net, images)
    for hook in hooks:
        hook.remove()
    c = torch.cat(codes, dim=1)
    kernel = c @ c.T + (1 - c) @ (1 - c).T
    return float(torch.linalg.slogdet(kernel).logabsdet)


def synflow_score(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Σ |θ ⊙ ∂R/∂θ| over the conv and linear weights, R = sum of the output on ones of ``input_shape``
    ([1, 3, H, W]) with |θ| for every parameter, no normalisation layers and identities for the rectifiers
    (module docstring)."""
    net = copy.deepcopy(model).double().eval()
    for name, module in list(net.named_modules()):
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, *RECTIFIERS)):
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.random.fork_rng(devices=[]):
        total = _features(net, torch.ones(input_shape, dtype=torch.float64)).sum()
    grads = torch.autograd.grad(total, weights, allow_unused=True)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads) if g is not None))
