"""The architecture distribution: logits α per searchable choice, Gumbel-softmax sampling, entropy, argmax.

Choices are independent categoricals p_c = softmax(α_c). A training forward pass draws per choice
w_c = softmax((α_c + g) / τ) with g ~ Gumbel(0, 1) (Jang et al. 2017; FBNet). ``hard`` returns the one-hot
vector of argmax(w_c) in the forward pass with the gradient of w_c (straight-through, GDAS). Evaluation
uses the one-hot vector of argmax(α_c), no noise. Fixed choices (one option) get the constant ``[1.]``.

The Gumbel noise is drawn from ``ArchDistribution.generator`` when one is set (the search sets one, so that
every DDP rank draws the same architectures: the same α and the same generator state give the same sample,
whatever else consumes the global generators). :func:`gumbel_softmax` is written out because
:func:`torch.nn.functional.gumbel_softmax` takes no generator; with ``generator=None`` it computes exactly
what that function computes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcsnas.errors import ConfigError
from dcsnas.nas.space import Choice


def gumbel_softmax(logits: Tensor, tau: float, hard: bool, generator: Optional[torch.Generator] = None) -> Tensor:
    """softmax((logits + g) / τ) over the last dim, g ~ Gumbel(0, 1) from ``generator`` (the default one when
    None); ``hard``: the one-hot vector of its argmax with its gradient (straight-through)."""
    gumbels = -torch.empty_like(logits).exponential_(generator=generator).log()
    soft = ((logits + gumbels) / tau).softmax(-1)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return one_hot - soft.detach() + soft


class ArchDistribution(nn.Module):
    """Logits α_c ``[n_c]`` for every searchable choice of ``choices``, initialised to 10⁻³·N(0, 1) as in
    DARTS and GDAS (near-uniform, ties broken at random)."""

    def __init__(self, choices: list[Choice]):
        super().__init__()
        self.choices = {c.key: c for c in choices}
        self.alphas = nn.ParameterDict({c.key: nn.Parameter(1e-3 * torch.randn(len(c.options)))
                                        for c in choices if c.searchable})
        self.generator: Optional[torch.Generator] = None  # of the Gumbel noise (on α's device); None: the default

    def sample(self, tau: float, hard: bool, training: bool) -> dict[str, Tensor]:
        """Per choice key, the weights ``[n_c]`` of this forward pass (see the module docstring)."""
        out = {}
        for key, choice in self.choices.items():
            if key not in self.alphas:
                out[key] = self._one(key)
            elif training:
                out[key] = gumbel_softmax(self.alphas[key], tau, hard, self.generator)
            else:
                out[key] = F.one_hot(self.alphas[key].argmax(), len(choice.options)).to(self.alphas[key].dtype)
        return out

    def one_hot(self, indices: dict[str, int]) -> dict[str, Tensor]:
        """Per choice key, the constant one-hot weights ``[n_c]`` of option ``indices[key]`` (a fixed
        architecture; fixed choices may be left out). Raises ``ConfigError`` for an unknown key, a missing
        searchable choice or an index outside ``0 … n_c − 1``."""
        unknown = sorted(set(indices) - set(self.choices))
        if unknown:
            raise ConfigError(f"architecture: unknown choice {unknown[0]!r}; the space's choices: "
                              f"{', '.join(self.choices)}")
        ref = next(iter(self.alphas.values()), None)
        dtype, device = (torch.float32, None) if ref is None else (ref.dtype, ref.device)
        out = {}
        for key, choice in self.choices.items():
            if key not in self.alphas and key not in indices:
                out[key] = self._one(key)
                continue
            index = indices.get(key)
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(choice.options):
                raise ConfigError(f"architecture: choice {key!r} = {index!r}; expected an option index in "
                                  f"0 … {len(choice.options) - 1} ({', '.join(choice.labels)})")
            out[key] = F.one_hot(torch.tensor(index), len(choice.options)).to(device=device, dtype=dtype)
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

