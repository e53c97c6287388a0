"""The architecture distribution: logits α per searchable choice, Gumbel-softmax sampling, entropy, argmax.

Choices are independent categoricals p_c = softmax(α_c). A training forward pass draws per choice
w_c = softmax((α_c + g) / τ) with g ~ Gumbel(0, 1) (Jang et al. 2017; FBNet). ``hard`` returns the one-hot
vector of argmax(w_c) in the forward pass with the gradient of w_c (straight-through, GDAS). Evaluation
uses the one-hot vector of argmax(α_c), no noise. Fixed choices (one option) get the constant ``[1.]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcsnas.nas.space import Choice


class ArchDistribution(nn.Module):
    """Logits α_c ``[n_c]`` for every searchable choice of ``choices``, initialised to 10⁻³·N(0, 1) as in
    DARTS and GDAS (near-uniform, ties broken at random)."""

    def __init__(self, choices: list[Choice]):
        super().__init__()
        self.choices = {c.key: c for c in choices}
        self.alphas = nn.ParameterDict({c.key: nn.Parameter(1e-3 * torch.randn(len(c.options)))
                                        for c in choices if c.searchable})

    def sample(self, tau: float, hard: bool, training: bool) -> dict[str, Tensor]:
        """Per choice key, the weights ``[n_c]`` of this forward pass (see the module docstring)."""
        out = {}
        for key, choice in self.choices.items():
            if key not in self.alphas:
                out[key] = self._one(key)
            elif training:
                out[key] = F.gumbel_softmax(self.alphas[key], tau=tau, hard=hard)
            else:
                out[key] = F.one_hot(self.alphas[key].argmax(), len(choice.options)).to(self.alphas[key].dtype)
        return out

    def _one(self, key: str) -> Tensor:
        ref = next(iter(self.alphas.values()), None)
        return torch.ones(1) if ref is None else torch.ones(1, dtype=ref.dtype, device=ref.device)

    def probabilities(self) -> dict[str, Tensor]:
        """p_c = softmax(α_c) per key (``[1.]`` for fixed choices); differentiable in α."""
        return {key: self.alphas[key].softmax(0) if key in self.alphas else self._one(key) for key in self.choices}

    def straight_through_argmax(self) -> dict[str, Tensor]:
        """The one-hot vector of argmax(α_c) per key, with the gradient of p_c (straight-through)."""
        out = {}
        for key, p in self.probabilities().items():
            hard = F.one_hot(p.argmax(), len(p)).to(p.dtype)
            out[key] = hard + p - p.detach()
        return out

    def argmax(self) -> dict[str, int]:
        """The index of the most probable option of every choice (0 for fixed ones)."""
        return {key: int(self.alphas[key].argmax()) if key in self.alphas else 0 for key in self.choices}

    def entropy(self) -> float:
        """Mean entropy (nats) of the searchable choices; log(n) per choice at initialisation."""
        if not self.alphas:
            return 0.0
        values = [-(a.log_softmax(0).exp() * a.log_softmax(0)).sum() for a in self.alphas.values()]
        return float(torch.stack(values).mean())

