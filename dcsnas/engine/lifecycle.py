"""The life of a run in its run directory, for every command that trains (``train``, ``retrain``, ``search``, the
demo's steps) and every one that reads a trained run (``eval``, ``export``, ``extract``, ``compare``).

:class:`RunRequest` is what the command line asks (``--config``, ``--set``, ``--out``, ``--resume``, ``--force``).
:meth:`RunRequest.load_config` reads the config: ``--config`` with ``--set`` over it or, for ``--resume`` without
``--config``, the run's own ``config.yaml`` with ``--set`` over it. :meth:`RunRequest.start` opens (``--resume``)
or creates the run directory, builds the trainer in it and resumes it; a start that fails up to there (a config
the data or the model refuses, a resume the run refuses) leaves ``--out`` as it found it. A resume that changed
what a resume may change (``optim.epochs``, ``device``, ``threads``) rewrites ``config.yaml``, so the directory
says what it holds. The run directory is released when the run ends.

:func:`open_trained_run` reads the config of a train/retrain run and refuses a search's run directory.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from dcsnas.config import PATH_KEYS, from_dict, load_config, save_config
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.rundir import (
    RunDir,
    create_run_dir,
    lock_run_dir,
    new_run_path,
    open_run_dir,
    same_config,
    unlock_run_dir,
)
from dcsnas.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class RunRequest:
    """A run as the command line asks for it: ``command`` (the default run directory's prefix), ``out``
    (None: a new ``runs/<command>-<time>``), ``resume`` (continue the run in ``out``), ``force`` (start over in
    an ``out`` that holds a run, its content moved aside), ``config_file`` and the ``--set`` ``overrides``."""

    command: str
    out: str | Path | None = None
    resume: bool = False
    force: bool = False
    config_file: str | Path | None = None
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.resume and not self.out:
            raise ConfigError("--resume needs --out DIR: the run directory to continue")
        if self.resume and self.force:
            raise ConfigError("--resume and --force exclude each other: --resume continues the run in --out, "
                              "--force starts it over")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not self.out:
            raise ConfigError("under torchrun, give --out DIR so that every rank uses the same run directory")

    @property
    def writes_run_dir(self) -> bool:
        """Whether this process writes the run directory: rank 0 under ``torchrun``, or the only process."""
        return int(os.environ.get("RANK", "0")) == 0

    def load_config(self, schema: type[T], fixed: tuple[str, ...] = ()) -> T:
        """The run's config: ``config_file`` (for a resume without one, the run's ``config.yaml``) with the
        ``fixed`` overrides (what the command sets) and then the user's over it; path keys must exist."""
        source = self.config_file
        if source is None and self.resume:
            source = open_run_dir(self.out).config
        return load_config(schema, source, [*fixed, *self.overrides], required_paths=PATH_KEYS)

    @contextmanager
    def start(self, cfg, build: Callable[[RunDir], T]) -> Iterator[T]:
        """The trainer ``build(run)`` makes in the run directory of ``cfg``, resumed (its ``resume()``) for a
        resume; the directory is locked until the block ends. If opening, building or resuming fails, the files
        and folders this start made are removed and content ``--force`` moved aside is moved back (nothing that
        was there is deleted). Under ``torchrun`` only rank 0 creates, locks and rewrites the directory."""
        if not self.writes_run_dir:
            trainer = build(RunDir(Path(self.out)))
            if self.resume:
                trainer.resume()
            yield trainer
            return
        path = Path(self.out) if self.out else new_run_path(self.command)
        found = _Found(path)
        try:
            if self.resume:
                run = open_run_dir(path)
                lock_run_dir(run)
            else:
                run = create_run_dir(path, self.command, cfg, force=self.force, config_file=self.config_file)
        except BaseException:
            found.remove_new_folders()  # refused before writing a file (or the lock is another process's)
            raise
        try:
            trainer = build(run)
            if self.resume:
                trainer.resume()
                if same_config(cfg, run):  # optim.epochs, device or threads: the ones Trainer.resume lets change
                    save_config(cfg, run.config)
        except BaseException:
            found.restore(run)
            raise
        try:
            yield trainer
        finally:
            unlock_run_dir(run)


class _Found:
    """What a start found at ``path`` (its files and folders, and which of its folders were missing), to put
    it back when the start fails."""

    def __init__(self, path: Path):
        self.path = path
        self.missing = []  # path and its missing parents, innermost first
        for folder in (path, *path.parents):
            if folder.exists() or folder.is_symlink():
                break
            self.missing.append(folder)
        self.entries = set(path.rglob("*")) if path.is_dir() and not path.is_symlink() else set()

    def remove_new_folders(self) -> None:
        """Remove the folders of :attr:`missing` that are still empty."""
        for folder in self.missing:
            try:
                folder.rmdir()
            except OSError:
                break

    def restore(self, run: RunDir) -> None:
        """Release ``run``'s lock, delete what is new in it, move back what ``--force`` moved aside, and remove
        the folders this start made."""
        unlock_run_dir(run)
        kept = set() if run.replaced is not None else self.entries  # after --force, all that is there is new
        for entry in sorted(self.path.rglob("*")):  # a folder before its content
            if entry in kept or not (entry.exists() or entry.is_symlink()):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if run.replaced is not None:
            for item in run.replaced.iterdir():
                item.rename(self.path / item.name)
            run.replaced.rmdir()
        self.remove_new_folders()


def open_trained_run(path: str | Path) -> tuple[RunDir, TrainConfig]:
    """The run directory of a ``train``/``retrain`` run and its config; a search's run directory (a supernet, not
    a network to evaluate) and a config.yaml that is not a training config are :class:`ConfigError`\\ s."""
    run = open_run_dir(path)
    saved = run.saved_config()
    if "search" in saved:
        raise ConfigError(f"'{run.path}' is a search run (dcsnas search): its weights are a supernet's, not a trained "
                          f"network's; derive its network (dcsnas derive {run.path}), retrain it (dcsnas retrain "
                          f"--arch {run.arch} --config FILE --out DIR) and use that run")
    try:
        return run, from_dict(TrainConfig, saved)
    except ConfigError as exc:
        raise ConfigError(f"run '{run.path}': {run.config.name}: {exc}") from None
