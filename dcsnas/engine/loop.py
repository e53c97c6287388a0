"""The training loop shared by ``train``, ``retrain`` and ``search``: :func:`train_epoch` runs a step callable
(:mod:`dcsnas.engine.steps`) over an epoch's batches, :class:`Loop` runs the epochs with their explicit
collaborators: the epoch's step, evaluation, the epoch report (TensorBoard and the console line), the
checkpoint entries, the health monitor. It evaluates every ``eval.every`` epochs and at the end, keeps
``best.pt`` (best validation mAP) and ``last.pt`` atomically, and ``--resume`` continues from ``last.pt``
exactly.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from dcsnas.config import to_dict
from dcsnas.engine.checkpoint import load_checkpoint, load_model_state, rng_state, save_checkpoint, set_rng_state
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.console import LOG_FILE, Console, epoch_line, results_block, startup_block
from dcsnas.engine.distributed import all_reduce_mean, barrier, gather_object
from dcsnas.engine.health import HealthMonitor, head_health
from dcsnas.engine.logging import RunLogger
from dcsnas.engine.rundir import RunDir, same_config
from dcsnas.engine.steps import Runtime, Step
from dcsnas.errors import ConfigError
from dcsnas.utils.io import atomic_write_bytes
from dcsnas.utils.progress import progress
from dcsnas.utils.seed import rank_seed, seed_everything


def train_epoch(step: Step, loader, title: str, rt: Runtime, logger: RunLogger, log_every: int,
                first_step: int) -> tuple[dict[str, float], dict[str, float]]:
    """Run ``step`` on every batch of ``loader``; returns the means of its terms over the epoch's steps of
    every rank, and the DCS kept ratios of its last forwards (module name → ratio). Every ``log_every``
    steps the step's terms go to TensorBoard at global step ``first_step + i`` (prefix ``train_step/``)."""
    sums: dict[str, float] = {}
    kept: dict[str, float] = {}
    steps = len(loader)
    bar = progress(loader, title, enabled=rt.show_progress)
    for i, (images, pids, _, _) in enumerate(bar):
        result = step(images, pids)
        values = {k: float(v.detach()) for k, v in result.terms.items()}
        kept.update({k: float(v) for k, v in result.dcs_kept.items()})
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
        if rt.show_progress:
            bar.set_postfix(loss=f"{values['total']:.3f}")
        if (i + 1) % log_every == 0:
            logger.scalars(values, first_step + i, "train_step/")
    keys = list(sums)  # the same keys in the same order on every rank (every rank has run ``steps`` steps)
    means = all_reduce_mean(torch.tensor([sums[k] / steps for k in keys], dtype=torch.float64,
                                         device=rt.device), rt.dist)
    return {k: float(v) for k, v in zip(keys, means)}, kept


class Stateful(Protocol):
    """A checkpoint entry: a module, an optimizer, a scheduler, a GradScaler, …"""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class EpochReport(Protocol):
    """What a loop shows of an epoch: ``stats()`` adds scalars to the epoch's training statistics (the
    search's architecture figures); ``log(epoch, stats, kept)`` writes the epoch's scalars (and figures) to
    TensorBoard and returns those the console line prints; ``note()`` is text the line adds."""

    def stats(self) -> dict[str, float]: ...

    def log(self, epoch: int, stats: dict[str, float], kept: dict[str, float]) -> dict[str, float]: ...

    def note(self) -> str: ...


@dataclass
class Loop:
    """The epochs of a run: ``begin(epoch)`` starts an epoch (it sets the sampler's epoch of ``loader``, the
    P×K loader of the weights) and returns its step, run over ``loader``; then the schedule steps,
    the health monitor checks the epoch's means, ``report`` logs them, ``evaluate(split)`` evaluates, and the
    checkpoint holds the model, ``states`` (checkpoint key → holder of a state dict, or ``None``) and the
    loop's progress. ``validation``: evaluate the validation split too. ``finish(metrics, files)`` runs last
    on the main rank and returns the result block's files (label → path)."""

    cfg: TrainConfig
    run: RunDir
    rt: Runtime
    model: torch.nn.Module
    loader: Any
    begin: Callable[[int], Step]
    scheduler: Any
    evaluate: Callable[[str], dict]
    report: EpochReport
    states: dict[str, Stateful]
    logger: RunLogger
    console: Console
    health: HealthMonitor
    title: str
    summary: Callable[[], str]
    dataset: Any
    num_classes: int
    validation: bool = False
    finish: Callable[[dict, dict], dict] | None = None
    step_title: str = "epoch"
    start_epoch: int = 0
    elapsed: float = 0.0
    history: list = field(default_factory=list)
    best: dict | None = None
    untrained: dict | None = None
    kept: dict[str, float] = field(default_factory=dict)

    # ----------------------------------------------------------------------------------------- checkpoints
    def state(self, epoch: int) -> dict[str, Any]:
        """The checkpoint of epoch ``epoch`` (0-based)."""
        state = {"epoch": epoch, "model": self.model.state_dict()}
        state.update({key: holder.state_dict() if holder is not None else None for key, holder in self.states.items()})
        return {**state, "elapsed": self.elapsed, "history": self.history, "best": self.best,
                "untrained": self.untrained, "health": self.health.state_dict(), "config": to_dict(self.cfg),
                "num_classes": self.num_classes, "threads": torch.get_num_threads()}

    def resume(self) -> None:
        """Continue from ``checkpoints/last.pt``: the config must match the saved one (except optim.epochs,
        device and threads). ``optim.epochs`` may grow (training continues to the new end) but not drop
        below the epochs already trained (an error: the history and metrics would describe a longer run).
        A missing or stale ``best.pt`` is rebuilt from ``last.pt`` when that is the best epoch; entries that
        checkpoints of older versions lack are left as built."""
        changed = same_config(self.cfg, self.run, ignore=("optim.epochs", "device", "threads"))
        if changed:
            raise ConfigError(f"--resume: the config differs from the run's saved config in {', '.join(changed)}")
        last = self.run.checkpoints / "last.pt"
        if not last.is_file():
            raise ConfigError(f"--resume: '{self.run.path}' has no checkpoint yet ({last} is missing): the run "
                              "stopped before its first epoch ended; start it over with --force")
        ckpt = load_checkpoint(last)
        done, epochs = ckpt["epoch"] + 1, self.cfg.optim.epochs
        if done > epochs:
            raise ConfigError(f"--resume: the run in '{self.run.path}' has already trained {done} epochs, more than "
                              f"optim.epochs = {epochs}; resume with optim.epochs >= {done}, or evaluate it with "
                              f"dcsnas eval --run {self.run.path}")
        load_model_state(self.model, ckpt["model"], str(last))
        for key, holder in self.states.items():
            if holder is not None and ckpt.get(key) is not None:  # older searches lack arch_scaler, arch_rng
                holder.load_state_dict(ckpt[key])
        self.start_epoch = done
        self.elapsed, self.history, self.best, self.untrained = (ckpt["elapsed"], ckpt["history"], ckpt["best"],
                                                                 ckpt["untrained"])
        if "health" in ckpt:  # checkpoints of older versions have none
            self.health.load_state_dict(ckpt["health"])
        restore_rng(ckpt, self.rt, self.cfg.seed, self.start_epoch)
        if self.rt.dist.is_main:
            left = f"continuing with epoch {done + 1} of {epochs}" if done < epochs else "no epoch left to train"
            print(f"dcsnas: resuming '{self.run.path}' from the checkpoint of epoch {done} ({left})", file=sys.stderr)
            if ckpt.get("threads", torch.get_num_threads()) != torch.get_num_threads() and not self.rt.cuda:
                warnings.warn(f"the run trained with {ckpt['threads']} CPU threads and resumes with "
                              f"{torch.get_num_threads()}: it will not be bit-identical to an uninterrupted run "
                              f"(set threads: {ckpt['threads']})")
            self._repair_best(done)

    def _repair_best(self, done: int) -> None:
        """Make ``best.pt`` the checkpoint of ``self.best["epoch"]``: rebuilt from ``last.pt`` when that is the
        best epoch (a kill between the two writes of older versions); otherwise a warning."""
        if self.best is None:
            return
        best, last = self.run.checkpoints / "best.pt", self.run.checkpoints / "last.pt"
        wanted = self.best["epoch"]
        found = load_checkpoint(best)["epoch"] + 1 if best.is_file() else None
        if found == wanted:
            return
        state = "is missing" if found is None else f"holds epoch {found}"
        if wanted == done:
            atomic_write_bytes(best, last.read_bytes())
            print(f"dcsnas: {best} {state}; rebuilt it from last.pt (epoch {done}, the best on validation)",
                  file=sys.stderr)
        else:
            warnings.warn(f"{best} {state} instead of the best validation epoch {wanted}, and last.pt (epoch "
                          f"{done}) cannot replace it; best_val in metrics.json names an epoch without checkpoint "
                          "until a better epoch is saved")

    # ----------------------------------------------------------------------------------------- epochs
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Epoch ``epoch`` (0-based): its step over its batches; the means of the terms, the report's
        statistics and the head's health figures."""
        step = self.begin(epoch)
        self.model.train()
        means, kept = train_epoch(step, self.loader, f"{self.step_title} {epoch + 1}/{self.cfg.optim.epochs}",
                                  self.rt, self.logger, self.cfg.log_every, epoch * len(self.loader))
        self.kept.update(kept)  # a module no step ran this epoch keeps its last ratio
        return {**means, **self.report.stats(), **head_health(self.model)}

    def fit(self) -> dict:
        """Train from ``start_epoch`` to ``optim.epochs``; returns (and writes) the run's metrics."""
        cfg, epochs, dist = self.cfg, self.cfg.optim.epochs, self.rt.dist
        last_test = None
        if dist.is_main:
            for line in startup_block(self.title, self.run.path, self.rt.device, self.dataset.stats(),
                                      self.summary()):
                self.console.print(line)
        if cfg.eval.before_training and self.start_epoch == 0 and dist.is_main:
            self.untrained = self.evaluate("test")
            self.logger.scalars(_scalars(self.untrained), 0, "test/")
            self.console.print(epoch_line(0, epochs, {}, evals={"untrained test": self.untrained}))
        if self.start_epoch == 0 and dist.rank > 0:
            # each rank its own stream (augmentations without workers, DCS gate noise); everything built so far
            # (weights, centres) was drawn alike on every rank. Rank 0 keeps the single-process stream.
            seed_everything(rank_seed(cfg.seed, dist.rank))
        for epoch in range(self.start_epoch, epochs):
            tic = time.perf_counter()
            train_stats = self.train_epoch(epoch)
            self.scheduler.step()
            seconds = time.perf_counter() - tic
            self.elapsed += seconds
            record: dict[str, Any] = {"epoch": epoch + 1, "train": train_stats}
            due = epoch + 1 == epochs or (cfg.eval.every > 0 and (epoch + 1) % cfg.eval.every == 0)
            rng_ranks = gather_object(rng_state(), dist) if dist.enabled else None
            if dist.is_main:
                self._end_epoch(epoch, record, due, seconds, rng_ranks)
                if due:
                    last_test = record["test"]
            barrier(dist)
        metrics = {}
        if dist.is_main:
            if last_test is None:  # resumed after the last epoch: evaluate the final weights
                last_test = self.evaluate("test")
            metrics = {"dataset": self.dataset.name, "protocol": cfg.eval.protocol, "epochs": epochs,
                       "num_classes": self.num_classes, "train_time_s": self.elapsed, "test": last_test,
                       "untrained_test": self.untrained, "best_val": self.best,
                       "health": dict(self.health.events), "history": self.history}
            files = {"metrics": self.run.metrics, "checkpoints": self.run.checkpoints,
                     "TensorBoard": self.run.tensorboard, "log": self.run.path / LOG_FILE}
            if self.finish is not None:
                files = self.finish(metrics, files)
            self.run.write_metrics(metrics)
            self.logger.close()
            for line in results_block(metrics, files):
                self.console.print(line)
        return metrics

    def _end_epoch(self, epoch: int, record: dict, due: bool, seconds: float, rng_ranks) -> None:
        """On the main rank: health, the epoch's scalars, evaluation when ``due``, the console line and the
        checkpoints (``best.pt`` first: ``last.pt`` never records a best epoch whose checkpoint is missing)."""
        cfg, train_stats = self.cfg, record["train"]
        self.health.check(epoch, train_stats)
        scalars = self.report.log(epoch, train_stats, self.kept)
        if due and self.validation:
            record["val"] = self.evaluate("val")
            self.logger.scalars(_scalars(record["val"]), epoch + 1, "val/")
        if due:
            record["test"] = self.evaluate("test")
            self.logger.scalars(_scalars(record["test"]), epoch + 1, "test/")
        self.history.append(record)
        images = len(self.loader) * cfg.data.p * cfg.data.k * self.rt.dist.world_size
        evals = {split: record[split] for split in ("val", "test") if split in record}
        self.console.print(epoch_line(epoch + 1, cfg.optim.epochs, scalars, seconds, images, evals,
                                      self.report.note()))
        improved = "val" in record and (self.best is None or record["val"]["mAP"] > self.best["mAP"])
        if improved:
            self.best = {"epoch": epoch + 1, **_scalars(record["val"])}
        state = self.state(epoch)
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        if improved:
            save_checkpoint(self.run.checkpoints / "best.pt", **state)
        save_checkpoint(self.run.checkpoints / "last.pt", **state)
        self.logger.flush()


def restore_rng(ckpt: dict[str, Any], rt: Runtime, seed: int, start_epoch: int) -> None:
    """This rank's random state of the checkpoint: every rank's is saved (``rng_ranks``), so a resume with
    the same number of processes is exact; with another number, ranks > 0 start fresh streams (a warning)."""
    dist = rt.dist
    states = ckpt.get("rng_ranks")
    if states is not None and len(states) == dist.world_size:
        set_rng_state(states[dist.rank])
        return
    set_rng_state(ckpt["rng"])
    if dist.rank > 0:
        seed_everything(rank_seed(seed + start_epoch, dist.rank))
    if dist.is_main and dist.enabled:
        warnings.warn(f"the checkpoint holds the random states of {len(states or [1])} process(es) and the run "
                      f"resumes with {dist.world_size}: ranks other than 0 draw new random streams")


def _scalars(result: dict) -> dict[str, float]:
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}
