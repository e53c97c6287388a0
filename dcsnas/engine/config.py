"""The config schema of ``dcsnas train`` and ``dcsnas retrain``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dcsnas.data.config import DataConfig
from dcsnas.engine.evaluator import EvalConfig
from dcsnas.engine.optim import OptimConfig
from dcsnas.losses.criterion import LossConfig
from dcsnas.models.builder import ModelConfig


@dataclass
class ScheduleConfig:
    """Per-epoch schedules. DCS gate temperature τ: exponential from ``dcs_tau_start`` to ``dcs_tau_end``
    over training. PCB-RPP (seed 001 §4.2, Sun et al.): from ``rpp_start_epoch`` (-1: never) the PCB head
    pools with refined part pooling; for its first ``rpp_classifier_epochs`` only the part classifier trains."""

    dcs_tau_start: float = 1.0
    dcs_tau_end: float = 0.1
    rpp_start_epoch: int = -1
    rpp_classifier_epochs: int = 10


@dataclass
class RunConfig:
    """What every training-like run has (``train``, ``retrain``, ``search``): the runtime settings, data,
    losses, optimizer, evaluation and schedules."""

    seed: int = 0
    device: str = "auto"
    amp: bool = True
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool = True
    log_every: int = 20
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


@dataclass
class TrainConfig(RunConfig):
    """The config of ``dcsnas train`` and ``dcsnas retrain``: a run config plus the model."""

    model: ModelConfig = field(default_factory=ModelConfig)
