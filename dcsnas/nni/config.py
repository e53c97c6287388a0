"""The config schemas of ``dcsnas tune`` and of ``dcsnas search --strategy nni:*``; they load and validate
where NNI is not installed (this module does not import it).

``dcsnas tune`` (:class:`TuneConfig`): an NNI hyper-parameter experiment whose trials are ``dcsnas train``
(or ``retrain``) runs of one base config, each with the values the tuner draws for the keys of
``search_space`` (dotted config keys, NNI's search-space format). ``search --strategy nni:*``
(:class:`NNISearchConfig`): the search config plus an ``nni`` section (trial budget of the multi-trial
strategies).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from dcsnas.errors import ConfigError
from dcsnas.nas.config import SearchConfig

INSTALL_HINT = 'pip install "nni==3.0" "pytorch-lightning>=2,<3" "setuptools<81"'
NNI_STRATEGIES = ("nni:random", "nni:evolution", "nni:darts", "nni:gumbel-darts")
# NNI's search-space types (https://nni.readthedocs.io/en/stable/hpo/search_space.html)
SPACE_TYPES = ("choice", "randint", "uniform", "quniform", "loguniform", "qloguniform", "normal", "qnormal",
               "lognormal", "qlognormal")
METRICS = ("mAP", "mINP", "rank-1")


@dataclass
class NNISection:
    """The ``nni`` section of ``search --strategy nni:*``. ``max_trials``: architectures the multi-trial
    strategies (random, evolution) train, each for ``trial_epochs`` (default: ``optim.epochs``) and score by
    mAP. RegularizedEvolution: ``population_size``, ``sample_size``, ``mutation_prob``. One-shot strategies
    (darts, gumbel-darts) train the supernet once, for ``optim.epochs``."""

    max_trials: int = 10
    trial_epochs: Optional[int] = None
    population_size: int = 8
    sample_size: int = 4
    mutation_prob: float = 0.05

    def __post_init__(self) -> None:
        if self.max_trials < 1 or (self.trial_epochs is not None and self.trial_epochs < 1):
            raise ValueError("max_trials and trial_epochs must be >= 1")
        if not 1 <= self.sample_size <= self.population_size:
            raise ValueError(f"expected 1 <= sample_size <= population_size, got {self.sample_size}, "
                             f"{self.population_size}")
        if not 0 <= self.mutation_prob <= 1:
            raise ValueError(f"mutation_prob must be in [0, 1], got {self.mutation_prob}")


@dataclass
class NNISearchConfig(SearchConfig):
    """The config of ``dcsnas search --strategy nni:*``: :class:`~dcsnas.nas.config.SearchConfig` + ``nni``."""

    nni: NNISection = field(default_factory=NNISection)


@dataclass
class TunerConfig:
    """An NNI tuner (``name``: TPE, Random, Anneal, Evolution, GridSearch, ...) and its ``class_args``."""

    name: str = "TPE"
    class_args: dict[str, Any] = field(default_factory=lambda: {"optimize_mode": "maximize"})


@dataclass
class TuneConfig:
    """The config of ``dcsnas tune``.

    Trials: ``command`` (``train`` or ``retrain``, which needs ``arch``) on the base ``config`` with the
    overrides ``set`` and the tuner's values for ``search_space`` (``{dotted.key: {_type, _value}}``); each
    reports ``metric`` after every evaluation and at the end (on the validation split when
    ``eval.val_identities`` > 0, else on the test split). Budget: ``max_trials`` trials, ``concurrency`` at a
    time, at most ``max_duration`` (NNI's format, e.g. ``2h``).

    Training service: ``training_service`` is NNI's mapping (``platform: local``, ``remote`` with a
    ``machine_list``, ``kubeflow`` or ``frameworkcontroller``; see ``experiments/tune/``); ``trial_python``
    is the interpreter of the trials (default: this one on ``local``, ``python3`` elsewhere).

    NNI manager: it listens on ``port`` (null: a free one) and ``port + 1``. ``bind: loopback`` (default)
    accepts connections from this machine only; the remote and Kubernetes services need ``bind: all`` and
    ``nni_manager_ip`` (the address their workers reach). ``webui: true`` prints the web UI's address.
    """

    config: str
    search_space: dict[str, dict[str, Any]]
    command: Literal["train", "retrain"] = "train"
    arch: Optional[str] = None
    set: list[str] = field(default_factory=list)
    metric: Literal["mAP", "mINP", "rank-1"] = "mAP"
    tuner: TunerConfig = field(default_factory=TunerConfig)
    max_trials: int = 10
    concurrency: int = 1
    max_duration: Optional[str] = None
    training_service: dict[str, Any] = field(default_factory=lambda: {"platform": "local"})
    trial_python: Optional[str] = None
    nni_manager_ip: Optional[str] = None
    port: Optional[int] = None
    bind: Literal["loopback", "all"] = "loopback"
    webui: bool = False

    def __post_init__(self) -> None:
        if not self.search_space:
            raise ValueError("search_space is empty; give at least one dotted config key, e.g. optim.lr")
        for key, spec in self.search_space.items():
            if not isinstance(spec, dict) or set(spec) != {"_type", "_value"} or spec["_type"] not in SPACE_TYPES:
                raise ValueError(f"search_space.{key}: expected {{_type: TYPE, _value: [...]}} with TYPE one of "
                                 f"{', '.join(SPACE_TYPES)}, got {spec!r}")
        if (self.command == "retrain") != (self.arch is not None):
            raise ValueError("command = retrain needs arch (an arch.json); command = train takes no arch")
        if self.max_trials < 1 or self.concurrency < 1:
            raise ValueError("max_trials and concurrency must be >= 1")
        if self.port is not None and not 1024 <= self.port < 65535:
            raise ValueError(f"port = {self.port}; expected 1024..65534 (NNI also uses port + 1)")
        platform = self.training_service.get("platform")
        if platform is None:
            raise ValueError("training_service.platform is missing (local, remote, kubeflow, frameworkcontroller)")
        if platform != "local" and self.bind == "loopback":
            raise ValueError(f"training_service.platform = {platform}: its workers connect back to the NNI manager, "
                             "which then cannot listen on loopback only; set bind: all and nni_manager_ip")


def check_trial_keys(cfg: TuneConfig, schema: type) -> None:
    """Every key of ``cfg.search_space`` must name a field of the trials' config ``schema``."""
    for key in cfg.search_space:
        node: Any = schema
        for part in key.split("."):
            fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
            if part not in fields:
                raise ConfigError(f"tune config key 'search_space.{key}': '{part}' is not a key of the trials' "
                                  f"{schema.__name__}")
            node = typing.get_type_hints(node)[part]
