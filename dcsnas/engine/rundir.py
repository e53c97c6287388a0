"""Run directories: every command that produces results writes them into one folder.

Layout: ``config.yaml`` (the resolved config), ``metrics.json``, ``tb/`` (TensorBoard events),
``checkpoints/`` and, for searches, ``arch.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dcsnas.config import save_config, to_dict
from dcsnas.errors import ConfigError
from dcsnas.utils.io import atomic_write_json


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def arch(self) -> Path:
        return self.path / "arch.json"

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.metrics, metrics)

    def saved_config(self) -> dict:
        """The resolved config stored in this run directory, as a plain mapping."""
        if not self.config.is_file():
            raise ConfigError(f"'{self.path}' is not a run directory: {self.config.name} is missing")
        return yaml.safe_load(self.config.read_text()) or {}


def create_run_dir(out: str | Path | None, command: str, cfg: Any, root: str | Path = "runs") -> RunDir:
    """Create (or reuse, when given explicitly) a run directory and save the resolved config in it.

    ``out=None`` makes ``<root>/<command>-<YYYYmmdd-HHMMSS>``; a name that exists gets a numeric suffix.
    """
    if out is None:
        base = Path(root) / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, i = base, 1
        while path.exists():
            path, i = Path(f"{base}-{i}"), i + 1
    else:
        path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    run = RunDir(path)
    save_config(cfg, run.config)
    return run


def open_run_dir(path: str | Path) -> RunDir:
    """An existing run directory (for ``--resume``, ``eval --run``, ``compare``)."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise ConfigError(f"run directory '{path}' does not exist")
    run.saved_config()
    return run


def same_config(cfg: Any, run: RunDir, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose value differs between ``cfg`` and the config saved in ``run`` (for resume checks)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(to_dict(cfg)), flat(run.saved_config())
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(ignore))
