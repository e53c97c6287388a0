"""DCS: attention weights from a learned, input-dependent subset of channels (seed 002; DESIGN §3).

Gate logits Theta = 1x1 conv(x) in R^{C' x n}, one per token and query/key channel.

- Training: M~ = sigmoid((Theta + g1 - g2) / tau) with g1, g2 ~ Gumbel(0, 1); the forward pass uses the hard
  mask M = 1[M~ > 0.5], the backward pass the gradient of M~ (straight-through).
- Evaluation: M = 1[Theta > 0], no noise.

M multiplies Q and K (not V); the attention itself is any backend kernel (``sa``, ``csa``, ``csalr``), so
DCS-CSALR is ``DCSAttention(C, backend="csalr", landmarks=96)``.

Gate init: weight 0 and bias ``gate_bias`` = 3, so Theta = 3 everywhere at first: evaluation keeps every
channel and training keeps each with probability sigmoid(3) ~ 0.95 (1[Theta + g1 - g2 > 0] with g1 - g2
logistic), i.e. DCS starts as its backend and learns which channels to drop. Zero weights still receive
gradients (dTheta/dW = x).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dcsnas.attention.base import AttentionBlock, AttentionKernel, option_error
from dcsnas.attention.csa import CSAKernel
from dcsnas.attention.csalr import CSALRKernel
from dcsnas.attention.sa import SAKernel

BACKENDS: dict[str, type[AttentionKernel]] = {"sa": SAKernel, "csa": CSAKernel, "csalr": CSALRKernel}


def _gumbel_like(t: Tensor) -> Tensor:
    return -torch.empty_like(t).exponential_().log()


class GateTemperature:
    """The attribute ``tau`` of a module with DCS gates: the Gumbel-sigmoid temperature, a positive float (a
    :class:`ConfigError` otherwise); the trainer anneals it through ``module.tau = ...``."""

    def __get__(self, module, owner=None):
        return self if module is None else module._tau

    def __set__(self, module, value) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise option_error("tau", value, "a positive number")
        module._tau = float(value)


def init_gate(gate: nn.Module, bias: float) -> nn.Module:
    """``gate`` (the layer of the gate logits) with weights 0 and every bias ``bias``: Θ = ``bias`` at first."""
    nn.init.zeros_(gate.weight)
    nn.init.constant_(gate.bias, bias)
    return gate


def gate_mask(theta: Tensor, tau: float, training: bool) -> Tensor:
    """The DCS mask of gate logits ``theta`` (any shape; float): in training the hard Gumbel-sigmoid sample
    1[sigmoid((theta + g1 - g2) / tau) > 0.5] with the straight-through gradient of the soft value (so
    P(M = 1) = sigmoid(theta) at every tau); in evaluation 1[theta > 0]. Same shape, 0/1 values."""
    if not training:
        return (theta > 0).float()
    soft = torch.sigmoid((theta + _gumbel_like(theta) - _gumbel_like(theta)) / tau)
    hard = (soft > 0.5).float()
    return hard + (soft - soft.detach())  # exactly 0/1 forward, d(soft) backward


class DCSAttention(AttentionBlock):
    """DCS block: ``x + gamma * fuse(backend(M * Q, M * K, V))`` on [B, C, H, W].

    Args:
        channels: C.
        backend: attention kernel, ``"sa"``, ``"csa"`` or ``"csalr"``.
        tau: Gumbel-sigmoid temperature (> 0); the trainer anneals it through ``module.tau = ...``.
        gate_bias: initial gate logit (weights start at 0).
        groups, qk_ratio, return_attention: see ``AttentionBlock``.
        **backend_options: options of the backend kernel: ``scale`` (all), ``explicit`` (SA), ``landmarks``
            (CSA, CSALR).

    :meth:`~dcsnas.attention.base.AttentionBlock.attend` returns the fraction of kept query/key channels as
    ``dcs_kept``.
    """

    tau = GateTemperature()

    def __init__(
        self,
        channels: int,
        backend: str = "sa",
        tau: float = 1.0,
        gate_bias: float = 3.0,
        groups: int = 1,
        qk_ratio: float = 8,
        return_attention: bool = False,
        **backend_options,
    ) -> None:
        if backend not in BACKENDS:
            raise option_error("backend", backend, "one of " + ", ".join(repr(b) for b in BACKENDS))
        kernel_cls = BACKENDS[backend]
        super().__init__(
            channels, kernel_cls(**backend_options), groups=groups, qk_ratio=qk_ratio,
            return_attention=return_attention,
        )
        self.backend = backend
        self.tau = tau
        self.gate = init_gate(nn.Conv2d(channels, self.qk_channels, 1), gate_bias)

    def channel_mask(self, x: Tensor) -> Tensor:
        """The query/key channel mask M [B, C', H, W] (0/1 values; straight-through gradient in training).

        Channel c of M gates channel c of Q and K (group c // (C'/G), like the grouped projections).
        """
        return gate_mask(self.gate(x).float(), self.tau, self.training)

    def select_channels(self, x: Tensor, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Q and K times the channel mask M of ``x``, and M's mean (the kept fraction, 0-dim)."""
        mask = self.channel_mask(x)
        kept = mask.detach().mean()
        mask = mask.to(q.dtype).reshape(q.shape)
        return q * mask, k * mask, kept

    def flops(self, input_shape) -> int:
        """:meth:`AttentionBlock.flops` plus the gate conv, 2 B n C C' (the masking is elementwise: free)."""
        batch, channels, height, width = input_shape
        return super().flops(input_shape) + 2 * batch * height * width * channels * self.qk_channels

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}, tau={self.tau:g}"
