"""Checkpoints: written atomically; they carry everything needed to resume a run exactly (weights,
optimizer and scheduler state, the epoch, and the random number generators' states)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcsnas.errors import ConfigError
from dcsnas.utils.io import atomic_torch_save


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, **state: Any) -> None:
    """Save ``state`` (state dicts, epoch, …) plus the RNG states, atomically."""
    atomic_torch_save({**state, "rng": rng_state()}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a corrupt or foreign file
        raise ConfigError(f"checkpoint '{path}' cannot be read: {exc}") from None


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
