"""The config schema of ``dcsnas search``: the training sections of :class:`~dcsnas.engine.config.TrainConfig`
(data, loss, optim for the weights, eval, schedules) plus the Re-ID head and the ``search`` section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dcsnas.config import added_key, ranged
from dcsnas.engine.config import RunConfig
from dcsnas.errors import ConfigError
from dcsnas.nas.cost import CostConfig


@dataclass
class NASConfig:
    """The ``search`` section (DESIGN §6).

    ``space``: search-space YAML. ``mode``: ``soft`` (all candidates, weighted) or ``hard`` (one sampled
    path per step). ``sampling``: the paths the weight steps train (:mod:`dcsnas.nas.paths`): ``gumbel``
    (drawn from α), ``uniform`` (SPOS), ``fair`` (FairNAS; hard mode, one process) or ``sandwich`` (BigNAS:
    the costliest, the cheapest and ``sandwich_paths`` uniform paths per step, all but the costliest
    distilled from it with weight ``distill_weight``; hard mode, one process). ``op_weights``:
    ``separate`` (each op candidate its own weights) or ``nested`` (a block's inverted-residual candidates
    share one superkernel: :class:`~dcsnas.nas.ops.MixedBlock`).
    Gumbel temperature τ = ``tau_start`` · ``tau_decay``^epoch (FBNet: 5, ×0.956).
    ``warmup_epochs`` E₀: weight steps only. Architecture steps: Adam on α with DARTS's and GDAS's settings
    (``arch_lr`` 3·10⁻⁴, betas (0.5, 0.999), ``arch_weight_decay`` 10⁻³).
    ``split``: ``per_identity`` puts ``arch_fraction`` of each training
    identity's images in the architecture split (the classifier sees every identity); ``identity_disjoint``
    gives that fraction of the identities to it, and architecture steps use the metric losses only (no
    CE, no IB: their identities have no class or Q(a|y)). ``bn_recalibration_batches``: before every
    evaluation of the supernet (the argmax architecture with the shared weights) and every IB refresh, the
    BatchNorm statistics of that path are re-estimated on this many weight-split batches
    (:mod:`dcsnas.nas.recalibration`); 0 turns it off.
    """

    space: str = "search_spaces/mbv2_reid.yaml"
    mode: Literal["soft", "hard"] = "hard"
    sampling: Literal["gumbel", "uniform", "fair", "sandwich"] = "gumbel"
    sandwich_paths: int = added_key(2, ge=0, le=64)
    distill_weight: float = added_key(1.0, ge=0)
    op_weights: Literal["separate", "nested"] = added_key("separate")
    tau_start: float = ranged(5.0, gt=0)
    tau_decay: float = ranged(0.956, gt=0, le=1)
    warmup_epochs: int = 2
    arch_lr: float = ranged(3e-4, gt=0)
    arch_weight_decay: float = 1e-3
    split: Literal["per_identity", "identity_disjoint"] = "per_identity"
    arch_fraction: float = ranged(0.5, gt=0, lt=1)
    bn_recalibration_batches: int = 10
    cost: CostConfig = field(default_factory=CostConfig)

    def __post_init__(self) -> None:
        if self.tau_start <= 0 or not 0 < self.tau_decay <= 1:
            raise ValueError("tau_start must be > 0 and tau_decay in (0, 1]")
        if self.warmup_epochs < 0 or self.arch_lr <= 0:
            raise ValueError("warmup_epochs must be >= 0 and arch_lr > 0")
        if not 0 < self.arch_fraction < 1:
            raise ValueError(f"arch_fraction must be in (0, 1), got {self.arch_fraction}")
        if self.bn_recalibration_batches < 0:
            raise ValueError(f"bn_recalibration_batches must be >= 0 (0: off), got {self.bn_recalibration_batches}")


@dataclass
class SearchConfig(RunConfig):
    """The config of ``dcsnas search``: a run config plus the head and the search settings."""

    head_key = "head"
    head: Literal["bnneck", "pcb"] = "bnneck"
    search: NASConfig = field(default_factory=NASConfig)

    def check_config(self) -> None:
        """Cross-key rules of a search config as read (:func:`~dcsnas.config.from_dict` calls it; the variants
        the code derives, e.g. an NNI trial's shorter schedule, are not held to it)."""
        if self.search.sampling != "gumbel" and self.search.mode != "hard":
            raise ConfigError(f"search.sampling = {self.search.sampling!r} trains single paths and needs "
                              f"search.mode: hard, got {self.search.mode!r}")
        if self.search.warmup_epochs >= self.optim.epochs:
            raise ConfigError(f"search.warmup_epochs = {self.search.warmup_epochs} is not below optim.epochs = "
                              f"{self.optim.epochs}: no architecture step would run and the derived network would "
                              "be the initial argmax; lower search.warmup_epochs or raise optim.epochs")
