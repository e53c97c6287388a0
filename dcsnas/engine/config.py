"""The config schema of ``dcsnas train`` and ``dcsnas retrain``: the run settings and the engine's own sections
(``eval``, ``schedule``); the data, loss, optimizer and model sections live with their code."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import ClassVar, Literal

from dcsnas.config import ranged
from dcsnas.data.config import DataConfig
from dcsnas.engine.optim import OptimConfig
from dcsnas.errors import ConfigError
from dcsnas.losses.criterion import LossConfig
from dcsnas.models.builder import ModelConfig
from dcsnas.models.vit import VIT_SIZES


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
    max_rank: int = ranged(50, ge=1)
    val_identities: int = 0
    protocol: Literal["market", "cuhk03"] = "market"
    protocol_seed: int = ranged(0, ge=0, le=2**32 - 1)


@dataclass
class ScheduleConfig:
    """Per-epoch schedules. DCS gate temperature τ: exponential from ``dcs_tau_start`` to ``dcs_tau_end``
    over training. PCB-RPP (seed 001 §4.2, Sun et al.): from ``rpp_start_epoch`` (-1: never) the PCB head
    pools with refined part pooling; for its first ``rpp_classifier_epochs`` only the part classifier trains.
    RPP needs a PCB head (``model.head: pcb``; a search's ``head: pcb``): any other head is a config error."""

    dcs_tau_start: float = ranged(1.0, gt=0)
    dcs_tau_end: float = ranged(0.1, gt=0)
    rpp_start_epoch: int = ranged(-1, ge=-1)
    rpp_classifier_epochs: int = 10


@dataclass
class RunConfig:
    """What every training-like run has (``train``, ``retrain``, ``search``): the runtime settings, data,
    losses, optimizer, evaluation and schedules; each number's range is declared on its field
    (:func:`~dcsnas.config.ranged`, checked when the config is read). ``threads`` > 0 sets torch's CPU
    threads (0: the cores this process may use, :func:`~dcsnas.utils.threads.default_threads`): CPU results
    are bit-identical only at the same thread count (the start-up block prints it), so configs whose figures
    are quoted (the demo's) fix it. ``head_key``: the dotted key of the Re-ID head, which the schedule's
    refined part pooling (RPP) needs to be ``pcb``."""

    head_key: ClassVar[str]

    seed: int = ranged(0, ge=0, le=2**32 - 1)
    device: str = "auto"
    amp: bool = True
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool = True
    log_every: int = ranged(20, ge=1)
    threads: int = ranged(0, ge=0, le=1024)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        start = self.loss.ib_start_epoch(self.optim.epochs)
        if self.loss.ib_weight > 0 and start >= self.optim.epochs:
            raise ConfigError(f"loss.ib_warmup_epochs = {start} is not before optim.epochs = {self.optim.epochs}: "
                              "the IB term would never be on; lower it or set loss.ib_weight: 0")
        rpp = self.schedule.rpp_start_epoch
        if rpp >= 0 and attrgetter(self.head_key)(self) != "pcb":
            raise ConfigError(f"schedule.rpp_start_epoch = {rpp} needs {self.head_key}: pcb (refined part pooling is "
                              f"a PCB head's), got {self.head_key} = {attrgetter(self.head_key)(self)!r}; set "
                              "schedule.rpp_start_epoch: -1")
        if rpp >= self.optim.epochs:
            raise ConfigError(f"schedule.rpp_start_epoch = {rpp} is not before optim.epochs = {self.optim.epochs}: "
                              "refined part pooling would never train")


@dataclass
class TrainConfig(RunConfig):
    """The config of ``dcsnas train`` and ``dcsnas retrain``: a run config plus the model."""

    head_key = "model.head"
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        size = [self.data.transforms.height, self.data.transforms.width]
        if self.model.backbone in VIT_SIZES and not self.model.img_size:
            self.model.img_size = size  # a ViT's position embedding is built for the input size
        if self.model.img_size and self.model.img_size != size:
            raise ConfigError(f"model.img_size = {self.model.img_size} differs from the input size {size} "
                              "(data.transforms.height, width); set them alike or leave model.img_size out")
