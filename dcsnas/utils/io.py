"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename over the target.

A crash leaves either the old file or the new one, never a truncated mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from dcsnas.errors import ConfigError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (``.<name>.<random>.tmp``) for a writer that needs a file name; on a
    clean exit the file written there is fsynced and replaces ``path`` atomically, otherwise it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private (0600); give it the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` atomically."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (numpy scalars and arrays converted)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


class _WriteRecorder:
    """A file object that keeps the first ``OSError`` of its writes: torch's writer reports a failed write
    (a full disk) as a ``RuntimeError`` without the cause, which is then re-raised from here."""

    def __init__(self, fh: IO):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file and a rename: a checkpoint is whole or absent. A failed write
    raises its ``OSError`` (e.g. ``ENOSPC``, naming ``path``), and ``path`` keeps its previous content."""
    import torch

    with atomic_open(path, "wb") as fh:
        recorder = _WriteRecorder(fh)
        try:
            torch.save(obj, recorder)
        except (RuntimeError, OSError) as exc:
            cause = recorder.error or (exc if isinstance(exc, OSError) else None)
            if cause is None:
                raise
            raise OSError(cause.errno, cause.strerror, str(path)) from None


def atomic_savefig(fig: Any, path: str | Path, **options: Any) -> None:
    """``fig.savefig`` (matplotlib) through a temporary file and a rename: a figure is whole or absent. The
    format is the file's suffix (``.png``, ``.pdf``, ``.svg``)."""
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format=Path(path).suffix.lstrip(".") or "png", **options)


def json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


MAX_JSON_BYTES = 64 * 2**20  # the largest JSON file read (arch.json, metrics.json, ...)


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file of at most :data:`MAX_JSON_BYTES`; a missing, oversized or malformed file (nesting too
    deep included) raises :class:`~dcsnas.errors.ConfigError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist (or is not a regular file)")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ConfigError(f"{what} '{path}' is {path.stat().st_size} bytes, more than the {MAX_JSON_BYTES} allowed")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} '{path}' is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what} '{path}' is not valid JSON: nested too deeply") from None
