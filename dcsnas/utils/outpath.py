"""The output-path policy: where a command may write, and what ``--force`` may replace.

One rule for every command that writes (DESIGN §8):

- A run directory (a folder holding ``config.yaml``) owns :data:`RUN_ENTRIES`; no other command writes
  over them (:func:`check_output_file`, :func:`check_output_dir`).
- An existing output file is replaced only with ``--force``; a folder, a symlink or a special file (FIFO,
  device) is never an output file.
- ``--force`` on a run directory (:func:`check_force_dir`) moves aside only a dcsnas run or an empty folder,
  never ``/``, the home folder, the working directory, the data root, the config's folder or a parent of
  any of them, and never a symlinked ``--out``.

Every refusal is a :class:`~dcsnas.errors.ConfigError` naming the path and the way out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

from dcsnas.errors import ConfigError

RUN_MARKER = "config.yaml"
RUN_ENTRIES = ("config.yaml", "metrics.json", "arch.json", "space.yaml", "cost_table.pt", "latency_table.json",
               "log.txt", "checkpoints", "tb", "nni", ".lock")


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a run directory (holds :data:`RUN_MARKER`)."""
    return (Path(path) / RUN_MARKER).is_file()


def owning_run(path: str | Path) -> Optional[Path]:
    """The run directory whose own entry (:data:`RUN_ENTRIES`) ``path`` is or lies in, else None."""
    path = Path(os.path.abspath(path))
    for parent in path.parents:
        if is_run_dir(parent):
            first = path.relative_to(parent).parts[0]
            if first in RUN_ENTRIES:
                return parent
    return None


def _refuse_link(path: Path, what: str) -> None:
    if path.is_symlink():
        raise ConfigError(f"{what} '{path}' is a symbolic link (to '{os.path.realpath(path)}'); give the real path")


def check_output_file(path: str | Path, force: bool = False, what: str = "--out") -> Path:
    """``path`` as a file a command may write: not a run's own file, not a folder, symlink or special file,
    and, unless ``force``, not an existing file. Returns it as a :class:`Path`."""
    path = Path(path)
    _refuse_link(path, what)
    run = owning_run(path)
    if run is not None:
        raise ConfigError(f"{what} '{path}' is part of the run directory '{run}' (its own files are written only by "
                          "its run); choose a path outside it")
    if path.exists():
        if path.is_dir():
            raise ConfigError(f"{what} '{path}' is a folder; expected a file name")
        if not path.is_file():
            raise ConfigError(f"{what} '{path}' is not a regular file (a pipe or device); expected a file name")
        if not force:
            raise ConfigError(f"{what} '{path}' already exists; pass --force to replace it, or choose another name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{what} '{path}': '{parent}' is a file, not a folder")
            break
    return path


def check_output_dir(path: str | Path, files: Iterable[str], force: bool = False, what: str = "--out") -> Path:
    """``path`` as a folder a command writes ``files`` (names) into: not a run directory or part of one, not a
    file or symlink; an existing one of ``files`` is replaced only with ``force``."""
    path = Path(path)
    _refuse_link(path, what)
    run = path if is_run_dir(path) else owning_run(path)
    if run is not None:
        raise ConfigError(f"{what} '{path}' is {'' if run == path else 'part of '}the run directory '{run}', whose "
                          "files only its run writes; choose another folder")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} '{path}' is a file; expected a folder")
    for name in files:
        check_output_file(path / name, force, what)
    return path


def protected_dirs(*places: Optional[str | Path]) -> set[Path]:
    """``/``, the home folder, the working directory and each of ``places`` (files count as their folder),
    with all their parents: the folders ``--force`` never moves aside."""
    out: set[Path] = set()
    for place in (Path("/"), Path.home(), Path.cwd(), *places):
        if place is None or str(place) == "":
            continue
        resolved = Path(place).expanduser().resolve()
        if resolved.is_file():
            resolved = resolved.parent
        out.update((resolved, *resolved.parents))
    return out


def check_force_dir(path: str | Path, protected: Iterable[Optional[str | Path]] = ()) -> None:
    """Refuse ``--force`` on ``path`` unless it may be moved aside: a real folder (no symlink) that is a run
    directory or empty (a stale ``.lock`` aside), and none of :func:`protected_dirs` of ``protected``."""
    path = Path(path)
    _refuse_link(path, "--out")
    resolved = path.resolve()
    if resolved in protected_dirs(*protected):
        raise ConfigError(f"--force refused: --out '{path}' is '{resolved}', the root, the home or working folder, the "
                          "data root, the config's folder or a parent of one of them; choose a new --out")
    if path.is_dir() and not is_run_dir(path) and any(p.name != ".lock" for p in path.iterdir()):
        raise ConfigError(f"--force refused: --out '{path}' holds files but is not a dcsnas run directory (no "
                          f"{RUN_MARKER}); --force only replaces a run; choose a new --out")
