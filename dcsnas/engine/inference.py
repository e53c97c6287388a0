"""A trained run's inference model: rebuilt from its run directory, or read from a file of ``dcsnas export``.

The inference model maps images [N, 3, H, W] (float32, RGB in [0, 1] normalised by the run's mean and std) to
embeddings [N, D]: the model in eval mode without identity classifiers and deep-supervision branches.
Its metadata (:func:`run_metadata`; :data:`METADATA_KEY` in exported files) says how to feed it.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from dcsnas.config import from_dict
from dcsnas.engine.checkpoint import load_checkpoint, load_model_state
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.rundir import open_run_dir
from dcsnas.errors import ConfigError
from dcsnas.models.builder import create_model

METADATA_KEY = "dcsnas"
INSTALL_HINT = 'pip install "dcsnas[export]"  (onnx, onnxruntime, onnxscript)'


def _version() -> str:
    try:
        return importlib.metadata.version("dcsnas")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def require(module: str):
    """Import an optional dependency of the ``export`` extra, or a :class:`ConfigError` with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{module} is not installed; install the export extra: {INSTALL_HINT}") from None


@dataclass
class RunModel:
    """A trained run's inference model (eval mode, classifiers dropped) and what deploying it needs:
    ``config`` (the run's TrainConfig) and ``metadata`` (:func:`run_metadata`)."""

    model: nn.Module
    config: Any
    metadata: dict[str, Any]


def inference_model(model: nn.Module) -> nn.Module:
    """A copy of a :class:`~dcsnas.models.builder.ReIDModel` in eval mode without what inference does not
    run: identity classifiers, the unused part classifier of a stripe PCB, deep-supervision heads."""
    model = copy.deepcopy(model).eval()
    model.deep_supervision = nn.ModuleDict()
    head = model.head
    for name in ("classifier", "classifiers"):
        if hasattr(head, name):
            delattr(head, name)
    if hasattr(head, "part_classifier") and not head.refined:
        del head.part_classifier
    return model.requires_grad_(False)


def run_metadata(cfg, embedding_dim: int, **info: Any) -> dict[str, Any]:
    """What a deployed model's user needs: input size (height, width), mean and std of the normalisation,
    the embedding size, and the run's evaluation settings (distance, flip); ``info`` adds provenance."""
    t = cfg.data.transforms
    return {
        "format": "dcsnas-embedding-model", "version": 1,
        "input": "images [N, 3, height, width] float32: RGB in [0, 1], then (x - mean) / std per channel",
        "output": "embeddings [N, embedding_dim] float32",
        "input_size": [t.height, t.width], "mean": list(t.mean), "std": list(t.std), "embedding_dim": embedding_dim,
        "metric": cfg.eval.metric, "flip": cfg.eval.flip, "dataset": cfg.data.dataset, **info,
        "dcsnas": _version(), "torch": torch.__version__.split("+")[0],
    }


def load_run_model(run_path: str | Path, checkpoint: str = "last", finished: bool = True) -> RunModel:
    """The inference model of a train/retrain run: its config rebuilt, ``checkpoints/<checkpoint>.pt``
    loaded. Refused (:class:`ConfigError`): a search run, a missing checkpoint and, with ``finished``, a
    ``last`` checkpoint of a training that has not reached ``optim.epochs``."""
    if checkpoint not in ("last", "best"):
        raise ConfigError(f"checkpoint = {checkpoint!r}; expected 'last' or 'best'")
    run = open_run_dir(run_path)
    saved = run.saved_config()
    if "search" in saved:
        raise ConfigError(f"'{run.path}' is a search run: export the run of `dcsnas retrain --arch {run.arch}`")
    cfg = from_dict(TrainConfig, saved)
    path = run.checkpoints / f"{checkpoint}.pt"
    if not path.is_file():
        why = ("best.pt is written only when the run selects on a validation split (eval.val_identities > 0)"
               if checkpoint == "best" else "its training has not finished an epoch")
        raise ConfigError(f"run '{run.path}' has no finished checkpoint {path}: {why}")
    state = load_checkpoint(path)
    if finished and checkpoint == "last" and state["epoch"] + 1 < cfg.optim.epochs:
        raise ConfigError(f"run '{run.path}': {path.name} is from epoch {state['epoch'] + 1} of {cfg.optim.epochs}: "
                          f"the training has not finished (continue it with dcsnas train --resume --out {run.path})")
    model = create_model(cfg.model, state["num_classes"])
    load_model_state(model, state["model"], str(path))
    model = inference_model(model)
    metadata = run_metadata(cfg, model.embedding_dim, run=str(run.path), checkpoint=checkpoint,
                            epoch=state["epoch"] + 1)
    return RunModel(model, cfg, metadata)


def load_exported(path: str | Path, device: str = "cpu") -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """An exported file as ``(run, metadata)``: ``run(images)`` maps a float32 tensor [N, 3, H, W] to the
    embeddings [N, D] (a CPU tensor for ONNX, on ``device`` for TorchScript). The format is read from
    the file (TorchScript files are zip archives), not from its name."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"exported model '{path}' does not exist")
    if zipfile.is_zipfile(path):
        files = {METADATA_KEY: ""}
        try:
            with warnings.catch_warnings():  # torch.jit is deprecated since torch 2.14, still the format asked for
                warnings.filterwarnings("ignore", category=FutureWarning)
                module = torch.jit.load(str(path), map_location=device, _extra_files=files)
        except RuntimeError as exc:
            raise ConfigError(f"'{path}' is not a TorchScript model: {str(exc).splitlines()[0]}") from None
        if not files[METADATA_KEY]:
            raise ConfigError(f"'{path}' is a TorchScript file without dcsnas metadata: not written by dcsnas export")
        return (lambda images: module(images.to(device))), json.loads(files[METADATA_KEY])
    ort = require("onnxruntime")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else \
        ["CPUExecutionProvider"]
    providers = [p for p in providers if p in ort.get_available_providers()]
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise ConfigError(f"'{path}' is not an ONNX model: {str(exc).splitlines()[0]}") from None
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ConfigError(f"'{path}' is an ONNX file without dcsnas metadata: not written by dcsnas export")

    def run(images: torch.Tensor) -> torch.Tensor:
        feed = {"images": images.detach().cpu().float().numpy()}
        return torch.from_numpy(session.run(["embeddings"], feed)[0])

    return run, json.loads(meta[METADATA_KEY])
