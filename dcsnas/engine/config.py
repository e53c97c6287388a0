"""The config schema of ``dcsnas train`` and ``dcsnas retrain``: the run settings and the engine's own sections
(``eval``, ``schedule``); the data, loss, optimizer and model sections live with their code."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from dcsnas.data.config import DataConfig
from dcsnas.engine.optim import OptimConfig
from dcsnas.errors import ConfigError
from dcsnas.losses.criterion import LossConfig
from dcsnas.models.builder import ModelConfig


@dataclass
class EvalConfig:
    """The ``eval`` config section. ``every``: evaluate on the test split every N epochs (0: at the end
    only); the test split is reported, never used to select a checkpoint. ``val_identities`` > 0 carves a
    validation query/gallery split from that many training identities, and ``best.pt`` is chosen on it.
    ``before_training`` also evaluates the untrained model (the run's chance-level reference).
    ``protocol``: ``market`` (Market-1501 style, every data set's default) or ``cuhk03`` (the classic
    CUHK03 single-gallery-shot protocol, random gallery draws seeded by ``protocol_seed``)."""

    every: int = 10
    before_training: bool = False
    flip: bool = False
    rerank: bool = False
    metric: Literal["euclidean", "cosine"] = "euclidean"
    max_rank: int = 50
    val_identities: int = 0
    protocol: Literal["market", "cuhk03"] = "market"
    protocol_seed: int = 0


@dataclass
class ScheduleConfig:
    """Per-epoch schedules. DCS gate temperature τ: exponential from ``dcs_tau_start`` to ``dcs_tau_end``
    over training. PCB-RPP (seed 001 §4.2, Sun et al.): from ``rpp_start_epoch`` (-1: never) the PCB head
    pools with refined part pooling; for its first ``rpp_classifier_epochs`` only the part classifier trains.
    RPP needs ``model.head: pcb`` (any other head is a config error)."""

    dcs_tau_start: float = 1.0
    dcs_tau_end: float = 0.1
    rpp_start_epoch: int = -1
    rpp_classifier_epochs: int = 10


def check_run_settings(cfg: "RunConfig") -> None:
    """Range checks of the runtime and optimizer keys, as :class:`ConfigError` naming the key."""
    optim = cfg.optim
    for key, value in (("optim.lr", optim.lr), ("optim.weight_decay", optim.weight_decay),
                       ("optim.momentum", optim.momentum), ("optim.backbone_lr_mult", optim.backbone_lr_mult),
                       ("optim.warmup_factor", optim.warmup_factor), ("optim.gamma", optim.gamma)):
        if not math.isfinite(value) or value < 0 or (key == "optim.lr" and value == 0):
            raise ConfigError(f"config key '{key}' = {value}: expected a finite number "
                              f"{'> 0' if key == 'optim.lr' else '>= 0'}")
    if optim.warmup_epochs < 0:
        raise ConfigError(f"config key 'optim.warmup_epochs' = {optim.warmup_epochs}: expected an int >= 0")
    if any(m < 0 for m in optim.milestones):
        raise ConfigError(f"config key 'optim.milestones' = {optim.milestones}: expected epochs >= 0")
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"config key 'seed' = {cfg.seed}: expected an int in [0, 2**32)")
    if cfg.log_every < 1:
        raise ConfigError(f"config key 'log_every' = {cfg.log_every}: expected an int >= 1 (steps between "
                          "TensorBoard points)")
    if cfg.threads < 0:
        raise ConfigError(f"config key 'threads' = {cfg.threads}: expected an int >= 0 (0: the cores this "
                          "process may use)")


@dataclass
class RunConfig:
    """What every training-like run has (``train``, ``retrain``, ``search``): the runtime settings, data,
    losses, optimizer, evaluation and schedules. ``threads`` > 0 sets torch's CPU threads (0: the cores this
    process may use, :func:`~dcsnas.utils.threads.default_threads`): CPU results are bit-identical only at the
    same thread count (the start-up block prints it), so configs whose figures are quoted (the demo's) fix it."""

    seed: int = 0
    device: str = "auto"
    amp: bool = True
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool = True
    log_every: int = 20
    threads: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        check_run_settings(self)
        start = self.loss.ib_start_epoch(self.optim.epochs)
        if self.loss.ib_weight > 0 and start >= self.optim.epochs:
            raise ConfigError(f"loss.ib_warmup_epochs = {start} is not before optim.epochs = {self.optim.epochs}: "
                              "the IB term would never be on; lower it or set loss.ib_weight: 0")


@dataclass
class TrainConfig(RunConfig):
    """The config of ``dcsnas train`` and ``dcsnas retrain``: a run config plus the model."""

    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        rpp = self.schedule.rpp_start_epoch >= 0
        if rpp and self.model.head != "pcb":
            raise ConfigError(f"schedule.rpp_start_epoch = {self.schedule.rpp_start_epoch} needs model.head: pcb "
                              f"(refined part pooling is a PCB head's), got model.head = {self.model.head!r}; "
                              "set schedule.rpp_start_epoch: -1")
        if rpp and self.schedule.rpp_start_epoch >= self.optim.epochs:
            raise ConfigError(f"schedule.rpp_start_epoch = {self.schedule.rpp_start_epoch} is not before "
                              f"optim.epochs = {self.optim.epochs}: refined part pooling would never train")
