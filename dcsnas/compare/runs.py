"""The trained runs that ``dcsnas compare`` reads: run directories of ``dcsnas train`` and ``dcsnas retrain``
(``config.yaml`` and ``metrics.json``; see :mod:`dcsnas.engine.rundir`), checked to be comparable.

A run is ``searched`` when its model's backbone is ``searched`` (built from an arch.json: the copy in the
run directory, else the file its ``model.arch`` names), ``fixed`` otherwise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from dcsnas.config import from_dict, ranged
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.lifecycle import open_trained_run
from dcsnas.engine.rundir import lock_holder
from dcsnas.errors import ConfigError
from dcsnas.models.arch import Arch
from dcsnas.models.builder import ModelConfig
from dcsnas.nas.arch import load_arch_in_space
from dcsnas.utils.io import read_json

REQUIRED_METRICS = ("dataset", "protocol", "epochs", "num_classes", "train_time_s", "test")
REQUIRED_TEST = ("mAP", "mINP", "rank-1", "cmc")
EVAL_KEYS = ("metric", "flip", "rerank")
MAX_CLASSES = 100_000  # identities of a classifier rebuilt from a metrics.json (MSMT17 has 1041)


@dataclass
class _TestMetrics:
    """The test-split figures compare reads from a metrics.json (fractions in [0, 1])."""

    mAP: float = ranged(ge=0, le=1)
    mINP: float = ranged(ge=0, le=1)
    cmc: list[float] = ranged(ge=0, le=1, length=(1, 10_000))
    rank_1: float = ranged(ge=0, le=1)


@dataclass
class _RunMetrics:
    """The keys of a run's metrics.json that compare reads, with their types and ranges."""

    dataset: str
    protocol: str
    test: _TestMetrics
    epochs: int = ranged(ge=0, le=1_000_000)
    num_classes: int = ranged(ge=1, le=MAX_CLASSES)
    train_time_s: float = ranged(ge=0)


def attention_label(name: str, options: dict[str, Any]) -> str:
    """A short name of an attention module, as in search spaces: ``csalr``, ``dcs-csalr-g2``."""
    label = f"dcs-{options.get('backend', 'sa')}" if name == "dcs" else name
    return f"{label}-g{options['groups']}" if "groups" in options else label


@dataclass
class CompareRun:
    """One run directory: ``name`` (the directory's name), its resolved config and ``metrics.json``, and for a
    searched run the arch.json it was built from."""

    name: str
    path: Path
    config: TrainConfig
    metrics: dict[str, Any]
    arch_path: Optional[Path]

    @property
    def kind(self) -> str:
        return "fixed" if self.arch_path is None else "searched"

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) in pixels of the model's test input."""
        return self.config.data.transforms.height, self.config.data.transforms.width

    def arch(self) -> Optional[Arch]:
        """The architecture of a searched run (``None`` for a fixed one)."""
        return None if self.arch_path is None else load_arch_in_space(self.arch_path)

    def attentions(self) -> list[tuple[str, str]]:
        """``(stage, label)`` of each attention module: the arch's placements, then the config's."""
        arch = self.arch()
        placed = [] if arch is None else [(s.name, s.attention.name, s.attention.options)
                                          for s in arch.stages if s.attention is not None]
        placed += [(a.stage, a.name, a.options) for a in self.config.model.attention]
        return [(stage, attention_label(name, options)) for stage, name, options in placed]

    def model_config(self) -> ModelConfig:
        """The ``model`` section with ``arch`` pointing at the arch.json that exists."""
        if self.arch_path is None:
            return self.config.model
        return replace(self.config.model, arch=str(self.arch_path))


def _read_metrics(path: Path) -> dict[str, Any]:
    file = path / "metrics.json"
    if not file.is_file():
        raise ConfigError(f"run '{path}' has no metrics.json: its training has not finished")
    metrics = read_json(file, "metrics file")
    missing = [k for k in REQUIRED_METRICS if k not in metrics]
    test = metrics.get("test")
    missing += [f"test.{k}" for k in REQUIRED_TEST if not isinstance(test, dict) or k not in test]
    if missing:
        raise ConfigError(f"'{file}' lacks {', '.join(missing)}: not the metrics of dcsnas train/retrain")
    read = {k: metrics[k] for k in REQUIRED_METRICS}
    read["test"] = {k.replace("-", "_"): test[k] for k in REQUIRED_TEST}
    try:
        from_dict(_RunMetrics, read)
    except ConfigError as exc:
        raise ConfigError(f"'{file}': {str(exc).replace('rank_1', 'rank-1')}") from None
    return metrics


def load_run(path: str | Path) -> CompareRun:
    """Read a train/retrain run directory; a search run, an unfinished run or a searched run whose
    arch.json cannot be found raise :class:`~dcsnas.errors.ConfigError`."""
    run, cfg = open_trained_run(path)
    metrics = _read_metrics(run.path)
    if "collapse" in (health_label(metrics) or ""):
        warnings.warn(f"run '{run.path}': its embedding collapsed by epoch {metrics['health']['collapse']} "
                      "(metrics.json 'health'): its mAP comes from a residual and says little about its network")
    holder = lock_holder(run)
    if holder is not None:
        warnings.warn(f"run '{run.path}' is being written by {holder} (a training or a --resume): its metrics.json "
                      "may be replaced before long")
    arch_path = None
    if cfg.model.backbone == "searched":
        candidates = [run.arch] + ([Path(cfg.model.arch)] if cfg.model.arch else [])
        arch_path = next((p for p in candidates if p.is_file()), None)
        if arch_path is None:
            raise ConfigError(f"run '{run.path}' has a searched model but no arch.json: neither "
                              f"{' nor '.join(str(p) for p in candidates)} exists")
    return CompareRun(run.path.name, run.path, cfg, metrics, arch_path)


def health_label(metrics: dict[str, Any]) -> Optional[str]:
    """The training-health record of a run's metrics.json (``"health": {"collapse": E, "ce_uniform": E}``,
    :class:`~dcsnas.engine.health.HealthMonitor`): ``ok``, ``collapse@E`` and/or ``CE@E``; None for runs
    written before it was recorded (or a record that is not one)."""
    record = metrics.get("health")
    if not isinstance(record, dict):
        return None
    events = [f"{label}@{record[key]}" for key, label in (("collapse", "collapse"), ("ce_uniform", "CE"))
              if isinstance(record.get(key), int) and not isinstance(record.get(key), bool)]
    return ",".join(events) or "ok"


def setting(run: CompareRun) -> str:
    """What a run's figures depend on besides its network: input size (height×width) and training epochs."""
    height, width = run.input_size
    return f"{height}x{width}, {run.metrics['epochs']} epochs"


def check_comparable(runs: Sequence[CompareRun]) -> None:
    """Runs evaluated on different data sets or protocols raise :class:`~dcsnas.errors.ConfigError` naming each
    run and its data set; different input sizes or epochs, and different evaluation settings (distance, flip,
    re-ranking), only warn, naming each run's."""
    tests = {(r.metrics["dataset"], r.metrics["protocol"]) for r in runs}
    if len(tests) > 1:
        listing = "; ".join(f"{r.path}: data set {r.metrics['dataset']!r}, protocol {r.metrics['protocol']!r}"
                            for r in runs)
        raise ConfigError(f"cannot compare runs evaluated on different data sets or protocols: {listing}")
    settings = {tuple(getattr(r.config.eval, k) for k in EVAL_KEYS) for r in runs}
    if len(settings) > 1:
        listing = "; ".join(f"{r.name}: " + ", ".join(f"{k}={getattr(r.config.eval, k)}" for k in EVAL_KEYS)
                            for r in runs)
        warnings.warn(f"the runs were evaluated with different settings ({listing}): their accuracies are not "
                      "strictly comparable")
    if len({setting(r) for r in runs}) > 1:
        listing = "; ".join(f"{r.name}: {setting(r)}" for r in runs)
        warnings.warn(f"the runs differ in input size or training epochs ({listing}): accuracy and FLOPs are "
                      "not comparable between them (the table's input and epochs columns, the figure's markers)")


def load_runs(paths: Sequence[str | Path]) -> list[CompareRun]:
    """:func:`load_run` of each path and :func:`check_comparable`. Runs whose directories share a name are
    named by their path instead."""
    if not paths:
        raise ConfigError("no run directory to compare")
    runs = [load_run(p) for p in paths]
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        runs = [replace(r, name=str(r.path)) for r in runs]
    if len({r.path.resolve() for r in runs}) < len(runs):
        raise ConfigError(f"a run directory is given twice: {', '.join(map(str, paths))}")
    check_comparable(runs)
    return runs
