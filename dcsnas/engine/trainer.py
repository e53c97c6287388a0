"""The training engine of ``dcsnas train`` and ``dcsnas retrain``: P×K batches, the Re-ID losses, the
schedules, AMP and channels-last on CUDA, DDP under ``torchrun``, TensorBoard and progress bars,
evaluation, and an atomic checkpoint at the end of every epoch from which ``--resume`` continues exactly.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import Any

import torch
from torch import nn

from dcsnas.attention import DCSAttention
from dcsnas.attention.token_dcs import TokenAttention
from dcsnas.config import to_dict
from dcsnas.data.base import hold_out_identities
from dcsnas.data.loaders import build_test_loader, build_train_loader
from dcsnas.data.transforms import build_transforms
from dcsnas.engine.checkpoint import load_checkpoint, load_model_state, rng_state, save_checkpoint, set_rng_state
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.console import LOG_FILE, Console, epoch_line, results_block, startup_block
from dcsnas.engine.device import resolve_device
from dcsnas.engine.distributed import (
    all_reduce_mean,
    barrier,
    broadcast_tensors,
    gather_object,
    gather_strided,
    init_distributed,
)
from dcsnas.engine.evaluator import evaluate_model
from dcsnas.engine.health import HealthMonitor, batch_health, head_health
from dcsnas.engine.logging import RunLogger
from dcsnas.engine.optim import build_optimizer, build_scheduler
from dcsnas.engine.rundir import RunDir, lock_run_dir, same_config
from dcsnas.errors import ConfigError
from dcsnas.losses import InformationBottleneck
from dcsnas.losses.criterion import ReIDCriterion
from dcsnas.models.builder import create_model
from dcsnas.utils.flops import count_flops, count_inference_params, count_params
from dcsnas.utils.io import atomic_write_bytes
from dcsnas.utils.progress import progress
from dcsnas.utils.seed import rank_seed, seed_everything
from dcsnas.utils.threads import default_threads


def dcs_modules(model: nn.Module) -> list[nn.Module]:
    """The DCS attention modules of ``model`` (those with a gate temperature ``tau``: CNN blocks and the
    gated attention of ViT blocks)."""
    return [m for m in model.modules()
            if isinstance(m, DCSAttention) or (isinstance(m, TokenAttention) and m.gate is not None)]


def tau_at(epoch: int, epochs: int, start: float, end: float) -> float:
    """Exponential schedule from ``start`` (epoch 0) to ``end`` (last epoch)."""
    return start * (end / start) ** (epoch / max(epochs - 1, 1))


class Trainer:
    """Builds everything from a :class:`TrainConfig` and trains into a run directory."""

    train_split_name = "training"
    title = "training"  # the start-up block's first line

    def __init__(self, cfg: TrainConfig, run: RunDir, show_progress: bool = True):
        self.cfg, self.run = cfg, run
        device = resolve_device(cfg.device)
        self.dist = self.init_distributed(device)
        if device.type == "cuda" and self.dist.enabled:
            device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        self.cuda = device.type == "cuda"
        self.show_progress = show_progress and self.dist.is_main and sys.stderr.isatty()  # no bar frames in a log
        if self.dist.is_main:  # one writer per run directory; leftovers of a killed write are removed
            lock_run_dir(run)
            stale = run.remove_stale_temp_files()
            if stale:
                warnings.warn(f"removed {len(stale)} temporary file(s) of an interrupted write in '{run.path}' "
                              f"(e.g. {stale[0].name})")
        torch.set_num_threads(cfg.threads or default_threads())
        seed_everything(cfg.seed)

        self.dataset = cfg.data.load()
        train, self.val_split = self.dataset.train, None
        if cfg.eval.val_identities > 0:
            train, val_query, val_gallery = hold_out_identities(train, cfg.eval.val_identities, cfg.seed)
            self.val_split = (val_query, val_gallery)
        self.train_records = self.training_records(train)
        self.num_classes = len({r.pid for r in self.train_records})

        self.model = self.build_model().to(device)
        if self.cuda and cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = getattr(torch, cfg.amp_dtype) if (cfg.amp and self.cuda) else None
        self.criterion = ReIDCriterion(cfg.loss, self.num_classes, self.model.embedding_dim).to(device)
        self.optimizer = build_optimizer(self.weights(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim)
        self.center_optimizer = (torch.optim.SGD(self.criterion.center.parameters(), lr=cfg.loss.center_lr)
                                 if self.criterion.center is not None else None)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.ib = self._build_ib() if cfg.loss.ib_weight > 0 else None
        self.train_model = self.wrap_ddp() if self.dist.enabled else self.model
        self.train_transform = build_transforms(cfg.data.transforms, True)
        self.train_loader = self.build_loader(self.train_records, cfg.seed, self.train_split_name)
        self.test_transform = build_transforms(cfg.data.transforms, False)
        self.logger = RunLogger(run.tensorboard, enabled=self.dist.is_main)
        self.console = Console(run.path / LOG_FILE, enabled=self.dist.is_main)
        self.start_epoch, self.elapsed, self.history, self.best, self.untrained = 0, 0.0, [], None, None
        self.health = HealthMonitor.for_run(cfg.optim.epochs, cfg.optim.warmup_epochs)

    # ----------------------------------------------------------------------------------------- building
    # Subclasses (the architecture search) override these to train another model on other splits.
    def init_distributed(self, device: torch.device):
        """The process group under ``torchrun`` (a single process otherwise)."""
        return init_distributed(device)

    def training_records(self, train: list) -> list:
        """The records the weights train on (all training images not held out for validation)."""
        return train

    def build_model(self) -> nn.Module:
        return create_model(self.cfg.model, self.num_classes)

    def weights(self) -> nn.Module:
        """The module whose parameters the optimizer trains."""
        return self.model

    def wrap_ddp(self) -> nn.Module:
        """Under DDP, the module the weight steps call: ``self.model`` in DistributedDataParallel."""
        return nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.cuda else None,
            find_unused_parameters=self.cfg.model.head == "pcb" or bool(self.cfg.loss.ib_weight))

    def build_loader(self, records: list, seed: int, split: str):
        """A P×K loader (this rank's share) over ``records``; an error when P×K yields no batch."""
        cfg = self.cfg.data
        pids = len({r.pid for r in records})
        error = ConfigError(f"data.p × data.k = {cfg.p}×{cfg.k} yields no batch on the {split} split "
                            f"({len(records)} images of {pids} identities); lower data.p or data.k")
        if pids < cfg.p:
            raise error
        loader = build_train_loader(records, self.train_transform, cfg.p, cfg.k, cfg.num_workers, seed,
                                    self.dist.rank, self.dist.world_size)
        if len(loader) == 0:
            raise error
        return loader

    # ----------------------------------------------------------------------------------------- state
    def _build_ib(self):
        """The IB bound of DESIGN §4: k = ``loss.ib_clusters`` (default: the training identities) for F and X."""
        k = self.cfg.loss.ib_clusters or self.num_classes
        return InformationBottleneck(num_feature_clusters=k, num_input_clusters=k, seed=self.cfg.seed,
                                     ixf=self.cfg.loss.ib_ixf).to(self.device)

    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch, "model": self.model.state_dict(), "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "center_optimizer": self.center_optimizer.state_dict() if self.center_optimizer else None,
            "scaler": self.scaler.state_dict(), "ib": self.ib.state_dict() if self.ib is not None else None,
            "elapsed": self.elapsed, "history": self.history, "best": self.best, "untrained": self.untrained,
            "health": self.health.state_dict(), "config": to_dict(self.cfg),
            "num_classes": self.num_classes, "threads": torch.get_num_threads(),
        }

    def resume(self) -> None:
        """Continue from ``checkpoints/last.pt``: the config must match the saved one (except optim.epochs,
        device and threads). ``optim.epochs`` may grow (training continues to the new end) but not drop
        below the epochs already trained (an error: the history and metrics would describe a longer run).
        A missing or stale ``best.pt`` is rebuilt from ``last.pt`` when that is the best epoch."""
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
        load_model_state(self.model, ckpt["model"], str(self.run.checkpoints / "last.pt"))
        self.criterion.load_state_dict(ckpt["criterion"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.center_optimizer is not None:
            self.center_optimizer.load_state_dict(ckpt["center_optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ib is not None:
            self.ib.load_state_dict(ckpt["ib"])
        self.start_epoch = ckpt["epoch"] + 1
        self.elapsed, self.history, self.best = ckpt["elapsed"], ckpt["history"], ckpt["best"]
        self.untrained = ckpt["untrained"]
        if "health" in ckpt:  # checkpoints of older versions have none
            self.health.load_state_dict(ckpt["health"])
        self._restore_rng(ckpt)
        if self.dist.is_main:
            left = f"continuing with epoch {done + 1} of {epochs}" if done < epochs else "no epoch left to train"
            print(f"dcsnas: resuming '{self.run.path}' from the checkpoint of epoch {done} ({left})", file=sys.stderr)
            if ckpt.get("threads", torch.get_num_threads()) != torch.get_num_threads() and not self.cuda:
                warnings.warn(f"the run trained with {ckpt['threads']} CPU threads and resumes with "
                              f"{torch.get_num_threads()}: it will not be bit-identical to an uninterrupted run "
                              f"(set threads: {ckpt['threads']})")
            self._repair_best(done)

    def _restore_rng(self, ckpt: dict[str, Any]) -> None:
        """This rank's random state of the checkpoint: every rank's is saved (``rng_ranks``), so a resume with
        the same number of processes is exact; with another number, ranks > 0 start fresh streams (a warning)."""
        states = ckpt.get("rng_ranks")
        if states is not None and len(states) == self.dist.world_size:
            set_rng_state(states[self.dist.rank])
            return
        set_rng_state(ckpt["rng"])
        if self.dist.rank > 0:
            seed_everything(rank_seed(self.cfg.seed + self.start_epoch, self.dist.rank))
        if self.dist.is_main and self.dist.enabled:
            warnings.warn(f"the checkpoint holds the random states of {len(states or [1])} process(es) and the run "
                          f"resumes with {self.dist.world_size}: ranks other than 0 draw new random streams")

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
    def begin_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        for module in dcs_modules(self.model):
            module.tau = tau_at(epoch, cfg.optim.epochs, cfg.schedule.dcs_tau_start, cfg.schedule.dcs_tau_end)
        rpp_start = cfg.schedule.rpp_start_epoch
        if rpp_start >= 0 and epoch >= rpp_start:
            self.model.head.refined = True
            if epoch < rpp_start + cfg.schedule.rpp_classifier_epochs:  # only the part classifier learns
                for group in self.optimizer.param_groups:
                    if group["name"] != "part_classifier":
                        group["lr"] = 0.0
        if self.ib_active(epoch):
            self.refresh_ib()
        self.train_loader.batch_sampler.set_epoch(epoch)

    def ib_active(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) trains with the IB term (its warm-up is over)."""
        return self.ib is not None and epoch >= self.cfg.loss.ib_start_epoch(self.cfg.optim.epochs)

    def ib_input(self, images: torch.Tensor) -> torch.Tensor:
        """The IB bound's X: the input image average-pooled to ``loss.ib_input_size`` and flattened."""
        return nn.functional.adaptive_avg_pool2d(images.float(), self.cfg.loss.ib_input_size).flatten(1)

    @torch.no_grad()
    def refresh_ib(self) -> None:
        """Recompute the IB's F centroids and Q(a|y) (and, the first time, X's centroids) on the training split:
        eval transforms, BN in eval mode, no gradient. Under DDP each rank embeds every world_size-th image,
        the features are all-gathered in the split's order, rank 0 clusters them and broadcasts the result,
        so every rank holds the same centroids and Q."""
        features, inputs, labels = [], [], []
        was_training = self.model.training
        self.model.eval()
        shard = self.train_records[self.dist.rank::self.dist.world_size]
        loader = build_test_loader(shard, self.test_transform, self.cfg.data.test_batch_size,
                                   self.cfg.data.num_workers)
        for images, pids, _, _ in progress(loader, "IB refresh", enabled=self.show_progress):
            images = images.to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                fmap = self.model.forward_features(images)
            features.append(fmap.float().mean(dim=(2, 3)))
            inputs.append(self.ib_input(images))
            labels.append(pids.to(self.device))
        self.model.train(was_training)
        gathered = [gather_strided(torch.cat(t), self.dist) for t in (features, inputs, labels)]
        if self.dist.is_main:
            self.ib.refresh(*gathered, self.num_classes)
        state = broadcast_tensors(self.ib.state_dict() if self.dist.is_main else None, self.dist, self.device)
        self.ib.load_state_dict(state)

    def loss_terms(self, images: torch.Tensor, pids: torch.Tensor, criterion: ReIDCriterion,
                   ib_on: bool) -> dict[str, torch.Tensor]:
        """Forward one batch; the criterion's terms, plus ``ib`` (weighted, in ``total``) when ``ib_on``, and the
        batch's ``health/*`` figures (:func:`~dcsnas.engine.health.batch_health`, not in ``total``)."""
        images = images.to(self.device, non_blocking=True)
        if self.cuda and self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = pids.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.train_model(images)
        terms = criterion(outputs, labels)
        logits = outputs.get("logits")
        terms.update(batch_health(outputs["features"], logits[0] if logits else None, labels,
                                  logits[0].shape[1] if logits else 0))
        if ib_on:
            ib = self.ib(outputs["pooled"].float(), self.ib_input(images), labels)
            terms["ib_ixf"], terms["ib_iyf"] = ib["ixf"].detach(), ib["iyf"].detach()
            terms["ib"] = self.cfg.loss.ib_weight * ib["total"]
            terms["total"] = terms["total"] + terms["ib"]
        if not torch.isfinite(terms["total"]):
            raise ConfigError(f"training diverged: the loss is {terms['total'].item()} (optim.lr = "
                              f"{self.cfg.optim.lr}); lower optim.lr or switch amp off")
        return terms

    def train_step(self, images: torch.Tensor, pids: torch.Tensor, ib_on: bool) -> dict[str, torch.Tensor]:
        """One optimizer step of the weights (and the centres) on a batch; returns the loss terms."""
        terms = self.loss_terms(images, pids, self.criterion, ib_on)
        self.optimizer.zero_grad(set_to_none=True)
        if self.center_optimizer is not None:
            self.center_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.scaler.step(self.optimizer)
        if self.center_optimizer is not None:
            self._step_centers()
        self.scaler.update()
        return terms

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        self.train_model.train()
        sums: dict[str, float] = {}
        steps = len(self.train_loader)
        ib_on = self.ib_active(epoch)
        bar = progress(self.train_loader, f"epoch {epoch + 1}/{cfg.optim.epochs}", enabled=self.show_progress)
        for step, (images, pids, _, _) in enumerate(bar):
            values = {k: float(v.detach()) for k, v in self.train_step(images, pids, ib_on).items()}
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
            if self.show_progress:
                bar.set_postfix(loss=f"{values['total']:.3f}")
            if self.dist.is_main and (step + 1) % cfg.log_every == 0:
                self.logger.scalars(values, epoch * steps + step, "train_step/")
        return {key: value / steps for key, value in sums.items()}

    def _step_centers(self) -> None:
        """Center loss: its gradient is divided by the loss weight so ``center_lr`` alone sets the centres'
        step (BoT); averaged over DDP ranks."""
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.center_optimizer)
        for p in self.criterion.center.parameters():
            if p.grad is not None:
                p.grad = all_reduce_mean(p.grad / self.cfg.loss.center_weight, self.dist)
        self.scaler.step(self.center_optimizer)

    def evaluate(self, split: str = "test", show_progress: bool | None = None) -> dict:
        """Metrics on the test split (``split='test'``) or the validation split carved from training."""
        query, gallery = (self.dataset.query, self.dataset.gallery) if split == "test" else self.val_split
        return evaluate_model(self.model, query, gallery, self.test_transform, self.cfg.eval,
                              self.cfg.data.test_batch_size, self.device, self.cfg.data.num_workers,
                              self.amp_dtype, self.show_progress if show_progress is None else show_progress)

    def log_epoch(self, epoch: int, train_stats: dict[str, float]) -> dict[str, float]:
        """The epoch's scalars to TensorBoard; returns them (the console's epoch line prints them)."""
        log = {k if k.startswith("health/") else f"loss/{k}": v for k, v in train_stats.items()}
        for group in self.optimizer.param_groups:
            log[f"lr/{group['name']}"] = group["lr"]
        for name, module in self.model.attentions.items():
            log[f"attention/{name}/gamma"] = module.gamma.detach().item()
            if hasattr(module, "kept_ratio") and module.kept_ratio is not None:
                log[f"attention/{name}/dcs_kept_ratio"] = float(module.kept_ratio)
        self.logger.scalars(log, epoch + 1)
        return log

    # ----------------------------------------------------------------------------------------- console
    def model_summary(self) -> str:
        """One line: the network, its parameters (those the inference forward uses) and FLOPs per image."""
        cfg = self.cfg.model
        shape = (1, 3, self.cfg.data.transforms.height, self.cfg.data.transforms.width)
        with torch.random.fork_rng(devices=[self.device] if self.cuda else []):
            used = count_inference_params(self.model, shape, self.device)
            flops = count_flops(self.model, shape, self.device)
        attention = ", ".join(f"{a.name}@{a.stage}" for a in cfg.attention) or "no attention"
        return (f"model: {cfg.backbone} ({attention}, {cfg.head} head): {used / 1e6:.3f} M parameters at "
                f"inference ({count_params(self.model) / 1e6:.3f} M with the training-only classifiers), "
                f"{flops / 1e6:.1f} MFLOPs per image at {shape[2]}×{shape[3]}")

    def epoch_note(self) -> str:
        """Text the epoch line adds after the scalars (the search: its argmax architecture)."""
        return ""

    def finish(self, metrics: dict) -> dict[str, Any]:
        """Last step of :meth:`fit` on the main rank, before metrics.json is written; returns the run's files
        for the results block (label → path)."""
        return {"metrics": self.run.metrics, "checkpoints": self.run.checkpoints, "TensorBoard": self.run.tensorboard,
                "log": self.run.path / LOG_FILE}

    def fit(self) -> dict:
        """Train from ``start_epoch`` to ``optim.epochs``; returns (and writes) the run's metrics."""
        cfg, epochs = self.cfg, self.cfg.optim.epochs
        last_test = None
        if self.dist.is_main:
            for line in startup_block(self.title, self.run.path, self.device, self.dataset.stats(),
                                      self.model_summary()):
                self.console.print(line)
        if cfg.eval.before_training and self.start_epoch == 0 and self.dist.is_main:
            self.untrained = self.evaluate("test")
            self.logger.scalars(_scalars(self.untrained), 0, "test/")
            self.console.print(epoch_line(0, epochs, {}, evals={"untrained test": self.untrained}))
        if self.start_epoch == 0 and self.dist.rank > 0:
            # each rank its own stream (augmentations without workers, DCS gate noise); everything built so far
            # (weights, centres) was drawn alike on every rank. Rank 0 keeps the single-process stream.
            seed_everything(rank_seed(cfg.seed, self.dist.rank))
        for epoch in range(self.start_epoch, epochs):
            tic = time.perf_counter()
            self.begin_epoch(epoch)
            train_stats = {**self.train_epoch(epoch), **head_health(self.model)}
            self.scheduler.step()
            seconds = time.perf_counter() - tic
            self.elapsed += seconds
            record: dict[str, Any] = {"epoch": epoch + 1, "train": train_stats}
            due = epoch + 1 == epochs or (cfg.eval.every > 0 and (epoch + 1) % cfg.eval.every == 0)
            rng_ranks = gather_object(rng_state(), self.dist) if self.dist.enabled else None
            if self.dist.is_main:
                self.health.check(epoch, train_stats)
                scalars = self.log_epoch(epoch, train_stats)
                if due and self.val_split is not None:
                    record["val"] = self.evaluate("val")
                    self.logger.scalars(_scalars(record["val"]), epoch + 1, "val/")
                if due:
                    record["test"] = last_test = self.evaluate("test")
                    self.logger.scalars(_scalars(record["test"]), epoch + 1, "test/")
                self.history.append(record)
                images = len(self.train_loader) * cfg.data.p * cfg.data.k * self.dist.world_size
                evals = {split: record[split] for split in ("val", "test") if split in record}
                self.console.print(epoch_line(epoch + 1, epochs, scalars, seconds, images, evals, self.epoch_note()))
                improved = "val" in record and (self.best is None or record["val"]["mAP"] > self.best["mAP"])
                if improved:
                    self.best = {"epoch": epoch + 1, **_scalars(record["val"])}
                state = self.state(epoch)
                if rng_ranks is not None:
                    state["rng_ranks"] = rng_ranks
                if improved:  # best.pt first: last.pt never records a best epoch whose checkpoint is missing
                    save_checkpoint(self.run.checkpoints / "best.pt", **state)
                save_checkpoint(self.run.checkpoints / "last.pt", **state)
                self.logger.flush()
            barrier(self.dist)
        metrics = {}
        if self.dist.is_main:
            if last_test is None:  # resumed after the last epoch: evaluate the final weights
                last_test = self.evaluate("test")
            metrics = {"dataset": self.dataset.name, "protocol": cfg.eval.protocol, "epochs": epochs,
                       "num_classes": self.num_classes, "train_time_s": self.elapsed, "test": last_test,
                       "untrained_test": self.untrained, "best_val": self.best,
                       "health": dict(self.health.events), "history": self.history}
            files = self.finish(metrics)
            self.run.write_metrics(metrics)
            self.logger.close()
            for line in results_block(metrics, files):
                self.console.print(line)
        return metrics


def _scalars(result: dict) -> dict[str, float]:
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}
