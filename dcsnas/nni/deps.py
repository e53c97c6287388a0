"""NNI 3.0 and Lightning 2.x, imported once for the modules of :mod:`dcsnas.nni` that need them: without
them, importing this module raises a :class:`~dcsnas.errors.ConfigError` with the install command. NNI's
warnings on import are silenced; :func:`nni_quiet` silences its console log (it still goes to
``experiment.log``) and Lightning's info messages while an experiment runs."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Iterator

from dcsnas.errors import ConfigError
from dcsnas.nni.config import INSTALL_HINT

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NNI 3.0 warns about torch internals on import
        import nni
        import pytorch_lightning as pl
        from nni.experiment import Experiment, ExperimentConfig
        from nni.mutable import Categorical, Constraint, ensure_frozen, label_scope
        from nni.mutable.exception import ConstraintViolation
        from nni.nas import strategy
        from nni.nas.evaluator import Evaluator
        from nni.nas.evaluator.pytorch import Lightning, LightningModule
        from nni.nas.evaluator.pytorch import Trainer as LightningTrainer
        from nni.nas.experiment import NasExperiment
        from nni.nas.experiment.config import NasExperimentConfig
        from nni.nas.nn.pytorch import LayerChoice, ModelSpace, ParametrizedModule
        from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
        from nni.nas.space import ModelStatus
        from nni.runtime.log import silence_stdout
        from pytorch_lightning.loggers import TensorBoardLogger
except ImportError as exc:
    raise ConfigError(f"NNI is not available ({exc}); install it with: {INSTALL_HINT}") from None

__all__ = ["BaseSuperNetModule", "Categorical", "Constraint", "ConstraintViolation", "Evaluator", "Experiment",
           "ExperimentConfig", "LayerChoice", "Lightning", "LightningModule", "LightningTrainer", "ModelSpace",
           "ModelStatus", "NasExperiment", "NasExperimentConfig", "ParametrizedModule", "TensorBoardLogger",
           "ensure_frozen", "label_scope", "nni", "nni_quiet", "pl", "strategy"]


@contextmanager
def nni_quiet() -> Iterator[None]:
    """NNI's console log off (it still goes to experiment.log), Lightning's info messages and both their
    warnings silenced."""
    silence_stdout()
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(nni|pytorch_lightning|lightning_fabric)(\.|$)")
            warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers).*")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
