"""Deploying a trained run: its inference graph (images in, embeddings out) as an ONNX or TorchScript file,
checked against PyTorch.

The graph is :func:`~dcsnas.engine.inference.inference_model`: input ``images`` [N, 3, H, W] float32 (RGB
scaled to [0, 1], then ``(x - mean) / std``), output ``embeddings`` [N, D] float32, the batch N dynamic, H
and W fixed to the run's test input size. The metadata (input size, normalisation, embedding size, the
run's evaluation settings; :func:`~dcsnas.engine.inference.run_metadata`) is written into the file as JSON
under :data:`~dcsnas.engine.inference.METADATA_KEY`: an ONNX ``metadata_props`` entry, a TorchScript extra file.

ONNX: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter, present in every supported
torch (deprecated since 2.9) and fast on these models; the ``torch.export``-based exporter (``dynamo=True``,
needs onnxscript; about 5x slower to export here) is taken only where the other is gone. Pieces without an
ONNX operator have export formulations that compute the same numbers: CSALR's linear solve
(:mod:`dcsnas.attention.linalg`), adaptive average pooling at sizes that do not divide
(:mod:`dcsnas.utils.pooling`), the CSALR patch indicator (a gather). An operator without either is refused
with the exporter's message naming it (:class:`ExportError`). Every export is verified: the file's
embeddings of random inputs at two batch sizes must match PyTorch's within 1e-4 of each embedding's norm
(:func:`check_parity`), else :class:`ExportError` and no file: the file is written and checked under a
temporary name and renamed only once verified. TorchScript: ``torch.jit.trace`` (deprecated
since torch 2.14, still shipped).
"""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dcsnas.engine.inference import METADATA_KEY, load_run_model, open_exported, require
from dcsnas.errors import ConfigError, DcsnasError
from dcsnas.utils.io import atomic_path

FORMATS = ("onnx", "torchscript")
EXPORTERS = ("auto", "torchscript", "dynamo")  # ONNX exporters of torch.onnx.export; auto: the first shipped
PARITY_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 3)


class ExportError(DcsnasError):
    """An export failed: an operator the format lacks, or a graph whose outputs differ from PyTorch's."""


def _onnx_export(model: nn.Module, example: torch.Tensor, path: Path, exporter: str) -> None:
    onnx = require("onnx")
    names = {"input_names": ["images"], "output_names": ["embeddings"]}
    if exporter == "auto":  # the TorchScript-based exporter while torch ships it
        exporter = "torchscript" if hasattr(torch.onnx, "symbolic_helper") else "dynamo"
    if exporter == "torchscript":
        legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        torch.onnx.export(model, (example,), str(path), opset_version=17,
                          dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}}, **legacy, **names)
    else:
        require("onnxscript")
        program = torch.onnx.export(model, (example,), dynamo=True, external_data=False, verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
        program.save(str(path))
    onnx.checker.check_model(str(path))


def _set_onnx_metadata(path: Path, metadata: dict[str, Any]) -> None:
    onnx = require("onnx")
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, str(path))


def export_model(model: nn.Module, path: str | Path, fmt: str, metadata: dict[str, Any],
                 exporter: str = "auto") -> Path:
    """Write ``model`` (eval mode, images → embeddings) as ``fmt`` to ``path`` with ``metadata``
    (``input_size`` required: the traced size); ``exporter``: one of :data:`EXPORTERS` (ONNX only).
    Unverified: :func:`export_checked` also checks parity."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if exporter not in EXPORTERS:
        raise ConfigError(f"ONNX exporter {exporter!r}; expected one of {', '.join(EXPORTERS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, 3, *metadata["input_size"])
    model = model.eval()
    # The tracers warn that sizes read as Python numbers become constants: the input size is fixed by
    # design, and the parity check at two batch sizes verifies that the batch stays dynamic.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            if fmt == "onnx":
                _onnx_export(model, example, path, exporter)
                _set_onnx_metadata(path, metadata)
            else:
                traced = torch.jit.trace(model, (example,), check_trace=False)
                torch.jit.save(traced, str(path), _extra_files={METADATA_KEY: json.dumps(metadata)})
        except DcsnasError:
            raise
        except Exception as exc:  # an operator the format or exporter cannot express: named by the exporter
            path.unlink(missing_ok=True)
            raise ExportError(f"cannot export to {fmt}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    return path


def check_parity(model: nn.Module, path: str | Path, input_size: tuple[int, int], batches=PARITY_BATCHES,
                 tolerance: float = PARITY_TOLERANCE, seed: int = 0) -> dict[str, Any]:
    """Embeddings of the exported file against ``model``'s on random N(0, 1) inputs of each batch size:
    ``max_abs_diff`` and ``relative`` = max over samples of max_j |file - torch| / ||torch_i||; above
    ``tolerance`` raises :class:`ExportError`."""
    with warnings.catch_warnings():  # the file export_model has just written: trusted, no warning
        warnings.filterwarnings("ignore", message="loading the TorchScript file")
        run, _ = open_exported(path, trust_torchscript=True)
    generator = torch.Generator().manual_seed(seed)
    worst_abs, worst_rel = 0.0, 0.0
    for batch in batches:
        images = torch.randn(batch, 3, *input_size, generator=generator)
        with torch.no_grad():
            expected = model(images).float()
        got = run(images).float().cpu()
        if got.shape != expected.shape:
            raise ExportError(f"'{path}': embeddings of shape {tuple(got.shape)} for a batch of {batch}, "
                              f"PyTorch gives {tuple(expected.shape)}")
        diff = (got - expected).abs().amax(dim=1)
        worst_abs = max(worst_abs, float(diff.max()))
        worst_rel = max(worst_rel, float((diff / expected.norm(dim=1).clamp_min(1e-12)).max()))
    report = {"batch_sizes": list(batches), "max_abs_diff": worst_abs, "relative": worst_rel, "tolerance": tolerance}
    if not np.isfinite(worst_rel) or worst_rel > tolerance:
        raise ExportError(f"'{path}' differs from PyTorch: max |difference| / ||embedding|| = {worst_rel:.3g} > "
                          f"{tolerance:g} (batch sizes {list(batches)})")
    return report


def export_checked(model: nn.Module, path: str | Path, fmt: str, metadata: dict[str, Any],
                   exporter: str = "auto") -> dict[str, Any]:
    """:func:`export_model` into a temporary file beside ``path``, then :func:`check_parity` on it; only a
    verified file is renamed to ``path`` (atomically: a killed or failed export leaves ``path`` as it was)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        export_model(model, tmp, fmt, metadata, exporter)
        parity = check_parity(model, tmp, tuple(metadata["input_size"]))
    return {"file": str(path), "format": fmt, "parity": parity, "metadata": metadata}


def export_run(run_path: str | Path, out: str | Path, fmt: str, checkpoint: str = "last") -> dict[str, Any]:
    """``dcsnas export``: the run's inference model written as ``fmt`` to ``out`` and checked (``out`` is
    checked by the caller against the output-path policy, :mod:`dcsnas.utils.outpath`)."""
    if fmt == "onnx":
        require("onnx")
        require("onnxruntime")
    loaded = load_run_model(run_path, checkpoint)
    return export_checked(loaded.model, out, fmt, loaded.metadata)
