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
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from dcsnas.config import added_key, check_key_value
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
    (darts, gumbel-darts) train the supernet once, for ``optim.epochs``.

    ``evaluator``: ``train`` (each trial trains its network) or ``supernet``: each trial is scored by the
    trained supernet of the DCS-DNAS search run directory ``supernet`` (shared weights, BatchNorm recalibrated,
    mAP of retrieval among its architecture split's images, which its weights never trained on), nothing is
    trained and the space is the supernet's (:mod:`dcsnas.nni.supernet`). ``target_mflops``: random and
    evolution draw only architectures whose MFLOPs per image lie within ±``flops_band`` (a fraction) of it."""

    max_trials: int = 10
    trial_epochs: Optional[int] = None
    population_size: int = 8
    sample_size: int = 4
    mutation_prob: float = 0.05
    evaluator: Literal["train", "supernet"] = added_key("train")
    supernet: Optional[str] = added_key(None)
    target_mflops: Optional[float] = added_key(None, gt=0)
    flops_band: float = added_key(0.05, gt=0, lt=1)

    def __post_init__(self) -> None:
        if self.max_trials < 1 or (self.trial_epochs is not None and self.trial_epochs < 1):
            raise ValueError("max_trials and trial_epochs must be >= 1")
        if not 1 <= self.sample_size <= self.population_size:
            raise ValueError(f"expected 1 <= sample_size <= population_size, got {self.sample_size}, "
                             f"{self.population_size}")
        if not 0 <= self.mutation_prob <= 1:
            raise ValueError(f"mutation_prob must be in [0, 1], got {self.mutation_prob}")
        if (self.evaluator == "supernet") != (self.supernet is not None):
            raise ValueError("evaluator = 'supernet' needs supernet (a search's run directory), and supernet is "
                             f"only read with it; got evaluator = {self.evaluator!r}, supernet = {self.supernet!r}")


@dataclass
class NNISearchConfig(SearchConfig):
    """The config of ``dcsnas search --strategy nni:*``: :class:`~dcsnas.nas.config.SearchConfig` + ``nni``."""

    nni: NNISection = field(default_factory=NNISection)

    def check_config(self) -> None:
        """The search's rules, and no key of the DCS-DNAS weight steps that NNI's strategies would ignore."""
        super().check_config()
        if self.nni.evaluator == "supernet":
            return  # nothing trains: the weight-step keys describe no training here
        for key, value, default in (("sampling", self.search.sampling, "gumbel"),
                                    ("op_weights", self.search.op_weights, "separate")):
            if value != default:
                raise ConfigError(f"search.{key} = {value!r} applies to the DCS-DNAS search (--strategy dcs); "
                                  f"NNI's strategies train the supernet their own way: remove it or set {default!r}")


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
            _check_space_value(key, spec["_type"], spec["_value"])
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


# _value of each search-space type: its parameters and what they must be (NNI's search-space format)
_ARITY = {"randint": 2, "uniform": 2, "loguniform": 2, "quniform": 3, "qloguniform": 3, "normal": 2, "lognormal": 2,
          "qnormal": 3, "qlognormal": 3}


def _check_space_value(key: str, kind: str, value: Any) -> None:
    """The ``_value`` of ``search_space.<key>`` for the type ``kind``: a non-empty list for ``choice``; else
    finite numbers ``[low, high(, q)]`` with low < high (low > 0 for log types) or ``[mu, sigma(, q)]`` with
    sigma > 0, q > 0."""
    where = f"search_space.{key}._value"
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise ValueError(f"{where} = {value!r}: expected a non-empty list of choices")
        return
    n = _ARITY[kind]
    if not isinstance(value, list) or len(value) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError(f"{where} = {value!r}: expected {n} finite numbers for {kind}")
    if kind.endswith("normal"):
        if value[1] <= 0:
            raise ValueError(f"{where} = {value!r}: sigma (the second value) must be > 0")
    elif not value[0] < value[1] or (kind.endswith("loguniform") and value[0] <= 0):
        raise ValueError(f"{where} = {value!r}: expected low < high{' and low > 0' * kind.endswith('loguniform')}")
    if n == 3 and value[2] <= 0:
        raise ValueError(f"{where} = {value!r}: q (the third value) must be > 0")


def check_trial_keys(cfg: TuneConfig, schema: type) -> None:
    """Every key of ``cfg.search_space`` must name a field of the trials' config ``schema``, and every value
    the tuner can draw from a ``choice`` (and the bounds of a range) must be a valid value of that key."""
    for key, spec in cfg.search_space.items():
        node: Any = schema
        for part in key.split("."):
            fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
            if part not in fields:
                raise ConfigError(f"tune config key 'search_space.{key}': '{part}' is not a key of the trials' "
                                  f"{schema.__name__}")
            node = typing.get_type_hints(node)[part]
        values = spec["_value"] if spec["_type"] == "choice" else spec["_value"][:2] * (spec["_type"] in (
            "randint", "uniform", "quniform", "loguniform", "qloguniform"))
        for value in values:
            try:
                check_key_value(schema, key, value)
            except ConfigError as exc:
                raise ConfigError(f"tune config key 'search_space.{key}': the tuner could draw {value!r}: "
                                  f"{exc}") from None
