"""Checkpoints: written atomically; they carry everything needed to resume a run exactly (weights,
optimizer and scheduler state, the epoch, and the random number generators' states).

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a crafted
file (run directories and checkpoints are shared) is refused instead of running code. For that the RNG
states are stored as tensors and plain values (NumPy's key array as an int64 tensor).
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcsnas.errors import ConfigError
from dcsnas.utils.io import atomic_torch_save


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's (CPU, CUDA) generator states, in a form ``weights_only`` loads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, **state: Any) -> None:
    """Save ``state`` (state dicts, epoch, …) plus the RNG states, atomically."""
    atomic_torch_save({**state, "rng": rng_state()}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's content; a missing, corrupt or foreign file (one holding anything but tensors and plain
    containers, e.g. pickled code) is a :class:`ConfigError` and nothing in it is executed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((line.strip() for line in reason if "GLOBAL" in line or "Unsupported" in line), reason[0])
        raise ConfigError(f"checkpoint '{path}' holds objects other than tensors and plain containers, so it is "
                          f"refused (loading it could run code; only dcsnas checkpoints are read): {detail}") from None
    except Exception as exc:  # a corrupt or truncated file
        raise ConfigError(f"checkpoint '{path}' cannot be read: {exc}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(f"checkpoint '{path}' is not a dcsnas checkpoint (no 'model' entry)")
    return state


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, refusing a checkpoint of another architecture with a message that names the keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            details.append(f"{len(mismatched)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                           f"{tuple(own[k].shape)} in the model)")
        raise ConfigError(f"checkpoint '{source}' is from another architecture: " + "; ".join(details))
    model.load_state_dict(state)
