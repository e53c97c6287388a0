"""Run directories: every command that produces results writes them into one folder.

Layout: ``config.yaml`` (the resolved config), ``metrics.json``, ``tb/`` (TensorBoard events),
``checkpoints/``, for searches ``arch.json``, and ``.lock`` while a process writes into it.

Safety: a run directory that holds anything is never overwritten silently (:func:`create_run_dir` refuses
it unless ``force``, which moves the old content aside); the lock file holds the writer's host and PID for
the life of the process, so a second process on the same directory is refused naming the holder, and a
lock whose process is gone is taken over with a warning (:func:`lock_run_dir`).
"""

from __future__ import annotations

import atexit
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dcsnas.config import MAX_YAML_BYTES, PATH_KEYS, load_yaml, save_config, to_dict
from dcsnas.errors import ConfigError
from dcsnas.utils.io import atomic_write_json
from dcsnas.utils.outpath import check_force_dir, owning_run

LOCK_NAME = ".lock"
_HELD: set[Path] = set()  # run directories whose lock this process holds


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory; ``replaced``: where :func:`create_run_dir` with ``force`` moved the
    previous content (None when it moved nothing)."""

    path: Path
    replaced: Optional[Path] = field(default=None, compare=False)

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

    @property
    def lock(self) -> Path:
        return self.path / LOCK_NAME

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.metrics, metrics)

    def saved_config(self) -> dict:
        """The resolved config stored in this run directory, as a plain mapping."""
        if not self.config.is_file():
            raise ConfigError(f"'{self.path}' is not a run directory: {self.config.name} is missing")
        if self.config.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"run directory '{self.path}': {self.config.name} is larger than {MAX_YAML_BYTES} bytes")
        try:
            data = load_yaml(self.config.read_text(encoding="utf-8"),
                             f"run directory '{self.path}': {self.config.name}")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"run directory '{self.path}': {self.config.name} is not valid YAML "
                              f"({' '.join(str(exc).split())})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"run directory '{self.path}': {self.config.name} does not hold a config mapping")
        return data

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temporary files of atomic writes a killed process left (``.<name>.*.tmp``); call it
        while holding the lock, so no live writer owns them. Returns the removed paths."""
        removed = []
        for folder in (self.path, self.checkpoints):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def lock_holder(run: RunDir) -> str | None:
    """Who is writing ``run`` now: ``"process PID"`` (or ``"process PID on host HOST"``) when its lock is held by
    a live process other than this one (or by any process of another host), else None."""
    try:
        host, pid = run.lock.read_text().split()[:2]
        pid_number = int(pid)
    except (OSError, ValueError):
        return None
    if host != socket.gethostname():
        return f"process {pid} on host {host}"
    return f"process {pid_number}" if pid_number != os.getpid() and _pid_alive(pid_number) else None


def _release(path: Path) -> None:
    lock = path / LOCK_NAME
    try:
        if lock.read_text().split() == [socket.gethostname(), str(os.getpid())]:
            lock.unlink()
    except OSError:
        pass
    _HELD.discard(path)


def lock_run_dir(run: RunDir) -> None:
    """Hold ``run``'s lock until :func:`unlock_run_dir` or the end of this process (re-entrant within one
    process). A lock of a live process is a :class:`ConfigError` naming its PID; a stale one is taken over."""
    path = run.path.resolve()
    if path in _HELD:
        return
    path.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}\n"
    for _ in range(2):
        try:
            fd = os.open(path / LOCK_NAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                host, pid = (path / LOCK_NAME).read_text().split()[:2]
                pid_number = int(pid)
            except (OSError, ValueError):
                host, pid_number = "", -1
            if host == socket.gethostname() and pid_number == os.getpid():
                break
            if host != socket.gethostname() and host:
                raise ConfigError(f"run directory '{run.path}' is in use by process {pid} on host {host} (lock file "
                                  f"{path / LOCK_NAME}); wait for it, or delete the lock file if that process is gone")
            if pid_number > 0 and _pid_alive(pid_number):
                raise ConfigError(f"run directory '{run.path}' is in use by process {pid_number} (lock file "
                                  f"{path / LOCK_NAME}); wait for it to finish or use another --out")
            warnings.warn(f"run directory '{run.path}': taking over the stale lock of process "
                          f"{pid_number if pid_number > 0 else '?'}, which is no longer running")
            (path / LOCK_NAME).unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    else:
        raise ConfigError(f"run directory '{run.path}': another process took its lock at the same time; retry")
    _HELD.add(path)


def unlock_run_dir(run: RunDir) -> None:
    """Release ``run``'s lock if this process holds it."""
    _release(run.path.resolve())


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        _release(path)


def _contents(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.name != LOCK_NAME] if path.is_dir() else []


def new_run_path(command: str, root: str | Path = "runs") -> Path:
    """``<root>/<command>-<YYYYmmdd-HHMMSS>``, with a numeric suffix when that name exists."""
    base = Path(root) / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def create_run_dir(out: str | Path | None, command: str, cfg: Any, root: str | Path = "runs",
                   force: bool = False, config_file: str | Path | None = None) -> RunDir:
    """Create a run directory, lock it and save the resolved config in it.

    ``out=None`` makes :func:`new_run_path`. An explicit ``out`` that holds anything is refused, unless
    ``force``: its content is then moved aside to ``<out>.replaced-<YYYYmmdd-HHMMSS>`` (said in one warning
    line; :attr:`RunDir.replaced`). ``force`` replaces only what :func:`~dcsnas.utils.outpath.check_force_dir`
    allows (a run or an empty folder; never a folder that holds the working directory, the home, the data root
    ``cfg.data.root`` or ``config_file``); a symlinked ``out`` is refused.
    """
    if out is None:
        path = new_run_path(command, root)
    else:
        path = Path(out)
        if path.is_symlink():
            raise ConfigError(f"--out '{path}' is a symbolic link (to '{os.path.realpath(path)}'); give the real path")
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out '{path}' is a file, not a folder")
        if owning_run(path) is not None:
            raise ConfigError(f"--out '{path}' lies inside the files of the run directory '{owning_run(path)}'; "
                              "choose a folder outside it")
        if force:
            data = getattr(cfg, "data", None)
            check_force_dir(path, (getattr(data, "root", None), config_file))
    run = RunDir(path)
    lock_run_dir(run)
    if _contents(path):
        if not force:
            unlock_run_dir(run)
            raise ConfigError(f"--out '{path}' already holds a run (or other files); continue it with --resume, "
                              "start it over with --force (the old content is moved aside), or choose another --out")
        aside, i = Path(f"{path}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"), 1
        while aside.exists():
            aside, i = Path(f"{path}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{i}"), i + 1
        aside.mkdir(parents=True)
        for item in _contents(path):
            item.rename(aside / item.name)
        warnings.warn(f"--force: moved the previous content of '{path}' to '{aside}'")
        run = RunDir(path, replaced=aside)
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


def pipeline_step_state(run: RunDir, cfg: Any, needs_arch: bool, owner: str) -> str:
    """What a pipeline of runs (the demo, a benchmark) finds in one step's run directory: ``"done"``
    (metrics.json, and arch.json for a search), ``"resume"`` (a checkpoint to continue from) or ``"new"``.
    A finished or stopped run of another config (paths aside) is a :class:`ConfigError` telling the user of
    ``owner`` to pick another ``--out``."""
    done = run.metrics.is_file() and (not needs_arch or run.arch.is_file())
    resume = not done and (run.checkpoints / "last.pt").is_file()
    if done or resume:
        changed = same_config(cfg, open_run_dir(run.path), ignore=PATH_KEYS)
        if changed:
            raise ConfigError(f"'{run.path}' holds a run of another config (it differs in {', '.join(changed)}); "
                              f"give the {owner} another --out or remove that folder")
    return "done" if done else "resume" if resume else "new"
