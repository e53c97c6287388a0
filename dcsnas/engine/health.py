"""Training health: figures that tell a learning Re-ID run from a collapsing one, and the warnings they raise.

Per batch, from the outputs the loss already read (no extra forward), :func:`batch_health` gives:

- ``health/fcos``: the mean pairwise cosine of the metric features (the triplet's input, ``[B, D]``),
  off-diagonal pairs only; 1 when every image maps to the same direction;
- ``health/fstd``: their per-dimension standard deviation over the batch, averaged over dimensions;
- ``health/fspread``: ``fstd`` over the features' root mean square, a scale-free spread (≈ 0 for a
  constant embedding whatever its norm);
- ``health/logit_rms``: the root mean square of the first classifier's logits (the logit scale);
- ``health/ce_ratio``: that classifier's cross-entropy without label smoothing over log(#identities),
  1 at uniform logits.

Per epoch :func:`head_health` adds ``health/bnneck_gamma`` (the BNNeck's mean |γ|, where the head has one).
:class:`HealthMonitor` reads the epoch means and warns once per kind (naming the epoch and the figures) when
the embedding has collapsed, or when CE is still at or above uniform after the warm-up. Measured collapse
(``docs/training_recipe.md``): fcos 1.000, fspread < 0.01, BNNeck γ 0.05; healthy runs keep fspread > 0.3.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

#: An embedding whose spread over the batch is below this fraction of its magnitude has collapsed.
COLLAPSE_SPREAD = 0.02
#: ... and so has one whose images all point the same way.
COLLAPSE_COSINE = 0.995


@torch.no_grad()
def batch_health(features: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor,
                 num_classes: int) -> dict[str, torch.Tensor]:
    """The health figures of one batch (module docstring): ``features`` [B, D], ``logits`` [B, N] or None,
    ``labels`` [B]. Returns 0-dim float tensors (no gradient)."""
    f = features.detach().float()
    b = f.shape[0]
    unit = F.normalize(f, dim=1)
    cos = unit @ unit.t()
    off = (cos.sum() - cos.diagonal().sum()) / max(b * (b - 1), 1)
    std = f.std(dim=0, unbiased=False).mean()
    rms = f.pow(2).mean().sqrt()
    stats = {"health/fcos": off, "health/fstd": std, "health/fspread": std / rms.clamp_min(1e-12)}
    if logits is not None:
        z = logits.detach().float()
        stats["health/logit_rms"] = z.pow(2).mean().sqrt()
        stats["health/ce_ratio"] = F.cross_entropy(z, labels) / math.log(max(num_classes, 2))
    return stats


@torch.no_grad()
def head_health(model: nn.Module) -> dict[str, float]:
    """Per-epoch figures of the head's parameters: the BNNeck's mean |γ| (empty for heads without one)."""
    bn = getattr(getattr(model, "head", None), "bn", None)
    if isinstance(bn, nn.BatchNorm1d) and bn.weight is not None:
        return {"health/bnneck_gamma": float(bn.weight.abs().mean())}
    return {}


@dataclass
class HealthMonitor:
    """Warns once per kind when an epoch's means (``health/*`` keys) show a collapsed embedding, or a CE at or
    above uniform in ``patience`` consecutive epochs after ``warmup_epochs``; :attr:`events`
    (``{"collapse": epoch, "ce_uniform": epoch}``, 1-based) goes into metrics.json so that ``compare`` can
    show it."""

    warmup_epochs: int = 1
    patience: int = 2
    events: dict[str, int] = field(default_factory=dict)
    uniform_epochs: int = 0

    def state_dict(self) -> dict:
        return {"events": dict(self.events), "uniform_epochs": self.uniform_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.events, self.uniform_epochs = dict(state["events"]), int(state["uniform_epochs"])

    def check(self, epoch: int, stats: dict[str, float]) -> list[str]:
        """``epoch`` 0-based; returns the warnings raised now (also issued with :func:`warnings.warn`)."""
        raised = []
        if epoch + 1 <= self.warmup_epochs:
            return raised
        ratio = stats.get("health/ce_ratio")
        self.uniform_epochs = self.uniform_epochs + 1 if ratio is not None and ratio >= 1.0 else 0
        fcos, spread = stats.get("health/fcos"), stats.get("health/fspread")
        if "collapse" not in self.events and spread is not None and fcos is not None and (
                spread < COLLAPSE_SPREAD or fcos > COLLAPSE_COSINE):
            self.events["collapse"] = epoch + 1
            gamma = stats.get("health/bnneck_gamma")
            raised.append(
                f"the embedding collapsed by epoch {epoch + 1}: mean pairwise cosine {fcos:.3f}, per-dimension "
                f"std {stats.get('health/fstd', float('nan')):.2g} ({spread:.3f} of its magnitude)"
                + (f", BNNeck |γ| {gamma:.3f}" if gamma is not None else "")
                + "; its mAP comes from a residual. Lower optim.lr, or use loss.triplet_distance: cosine "
                "(docs/training_recipe.md)")
        if "ce_uniform" not in self.events and self.uniform_epochs >= self.patience:
            self.events["ce_uniform"] = epoch + 1
            raised.append(f"cross-entropy has stayed at or above uniform for {self.uniform_epochs} epochs after the "
                          f"warm-up (epoch {epoch + 1}: {ratio:.2f} × log(#identities)): the classifier does not "
                          "learn; lower optim.lr")
        for message in raised:
            warnings.warn(message, stacklevel=2)
        return raised
