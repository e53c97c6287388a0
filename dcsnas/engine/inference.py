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
import math
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from dcsnas.engine.checkpoint import load_checkpoint, load_model_state
from dcsnas.engine.lifecycle import open_trained_run
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
    run, cfg = open_trained_run(run_path)
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


MAX_INPUT_SIDE = 4096  # pixels: the largest input height or width an exported file may ask for
MAX_EMBEDDING_DIM = 65536
TRUST_HINT = ("loading a TorchScript file runs the code it holds: load it only from a source you trust, with "
              "--trust-torchscript (FeatureExtractor(..., trust_torchscript=True)), or use an ONNX export")


def check_metadata(text: str, path: str | Path) -> dict[str, Any]:
    """The dcsnas metadata of an exported file (JSON ``text``), checked: ``input_size`` two ints in
    [1, :data:`MAX_INPUT_SIDE`], ``mean``/``std`` three finite numbers (std > 0), ``embedding_dim`` in
    [1, :data:`MAX_EMBEDDING_DIM`], ``flip`` a bool; otherwise a :class:`ConfigError` naming the file and key."""
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"'{path}': its dcsnas metadata is not valid JSON ({exc})") from None

    def bad(key: str, expected: str) -> ConfigError:
        got = meta.get(key, "missing") if isinstance(meta, dict) else "missing"
        return ConfigError(f"'{path}': metadata '{key}' = {str(got)[:80]!s}: expected {expected}")

    if not isinstance(meta, dict):
        raise ConfigError(f"'{path}': its dcsnas metadata is not a JSON object")

    def numbers(key: str, n: int, low: float, high: float, low_open: bool = False) -> list:
        value = meta.get(key)
        ok = isinstance(value, list) and len(value) == n and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high
            and not (low_open and v == low) for v in value)
        if not ok:
            raise bad(key, f"a list of {n} numbers in {'(' if low_open else '['}{low:g}, {high:g}]")
        return value

    numbers("input_size", 2, 1, MAX_INPUT_SIDE)
    if not all(isinstance(v, int) for v in meta["input_size"]):
        raise bad("input_size", f"two ints in [1, {MAX_INPUT_SIDE}]")
    numbers("mean", 3, -1e3, 1e3)
    numbers("std", 3, 0, 1e3, low_open=True)
    dim = meta.get("embedding_dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_EMBEDDING_DIM:
        raise bad("embedding_dim", f"an int in [1, {MAX_EMBEDDING_DIM}]")
    if not isinstance(meta.get("flip", False), bool):
        raise bad("flip", "true or false")
    return meta


def load_exported(path: str | Path, device: str = "cpu", trust_torchscript: bool = False,
                  ) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """An exported file as ``(run, metadata)``: ``run(images)`` maps a float32 tensor [N, 3, H, W] to the
    embeddings [N, D] (a CPU tensor for ONNX, on ``device`` for TorchScript). The format is read from
    the file (TorchScript files are zip archives), not from its name; the metadata is checked
    (:func:`check_metadata`). TorchScript runs code by design (its metadata is a forgeable extra file): it
    is loaded only with ``trust_torchscript`` (and a warning), else :class:`ConfigError`."""
    run, text = open_exported(path, device, trust_torchscript)
    return run, check_metadata(text, path)


def open_exported(path: str | Path, device: str = "cpu", trust_torchscript: bool = False,
                  ) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """:func:`load_exported` with the metadata as its unchecked JSON text (for the parity check of a file
    just written, whose metadata may be partial)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"exported model '{path}' does not exist (or is not a regular file)")
    if zipfile.is_zipfile(path):
        if not trust_torchscript:
            raise ConfigError(f"'{path}' is a TorchScript file, refused: {TRUST_HINT}")
        warnings.warn(f"loading the TorchScript file '{path}' (trusted by the caller): it runs the code it holds")
        files = {METADATA_KEY: ""}
        try:
            with warnings.catch_warnings():  # torch.jit is deprecated since torch 2.14, still the format asked for
                warnings.filterwarnings("ignore", category=FutureWarning)
                module = torch.jit.load(str(path), map_location=device, _extra_files=files)
        except RuntimeError as exc:
            raise ConfigError(f"'{path}' is not a TorchScript model: {str(exc).splitlines()[0]}") from None
        if not files[METADATA_KEY]:
            raise ConfigError(f"'{path}' is a TorchScript file without dcsnas metadata: not written by dcsnas export")
        return (lambda images: module(images.to(device))), files[METADATA_KEY]
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
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if "images" not in names[0] or "embeddings" not in names[1]:
        raise ConfigError(f"'{path}': expected an ONNX graph with input 'images' and output 'embeddings', got inputs "
                          f"{names[0]} and outputs {names[1]}")

    def run(images: torch.Tensor) -> torch.Tensor:
        feed = {"images": images.detach().cpu().float().numpy()}
        try:
            return torch.from_numpy(session.run(["embeddings"], feed)[0])
        except Exception as exc:  # onnxruntime's own exception types: a graph that does not fit its metadata
            raise ConfigError(f"'{path}': the ONNX graph fails on images of shape {tuple(images.shape)}: "
                              f"{str(exc).splitlines()[0]}") from None

    return run, meta[METADATA_KEY]
