"""The DCS-DNAS search loop (DESIGN §6) of ``dcsnas search``.

The training images are split into a weight split and an architecture split
(:func:`~dcsnas.nas.split.split_for_search`). For ``warmup_epochs`` epochs only the weights train (paths
still sampled from α = 0, i.e. uniformly); then every step is a weight step (the engine's optimizer on the
weights: task loss + IB on a weight-split batch) followed by an architecture step (Adam on α: task loss
with the cost term of :class:`~dcsnas.nas.cost.CostLoss`, + IB, on an architecture-split batch).

:class:`Searcher` is the training engine (:class:`~dcsnas.engine.trainer.Trainer`) with the supernet as
its model: it inherits the epoch loop, the DCS temperature schedule, the IB refresh, evaluation (of the
current argmax architecture, with the shared weights), atomic checkpoints and exact ``--resume``. Each
epoch TensorBoard gets every loss term of both steps, τ, the mean entropy of the choices, the argmax
architecture's FLOPs and parameters, the expected FLOPs, a heat map of the choice probabilities and the
argmax architecture as text. At the end ``arch.json`` is written into the run directory.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch

from dcsnas.config import config_hash
from dcsnas.data.base import hold_out_identities
from dcsnas.data.loaders import build_train_loader
from dcsnas.data.transforms import build_transforms
from dcsnas.engine.checkpoint import load_checkpoint
from dcsnas.engine.distributed import DistContext
from dcsnas.engine.logging import RunLogger, progress
from dcsnas.engine.optim import build_optimizer, build_scheduler
from dcsnas.engine.rundir import RunDir
from dcsnas.attention import DCSAttention
from dcsnas.engine.trainer import Trainer, resolve_device
from dcsnas.errors import ConfigError
from dcsnas.losses.criterion import ReIDCriterion
from dcsnas.nas.arch import Arch, derive_arch, write_arch
from dcsnas.nas.config import SearchConfig
from dcsnas.nas.cost import CostLoss, cached_costs
from dcsnas.nas.space import SearchSpace, load_space, parse_space
from dcsnas.nas.split import split_for_search
from dcsnas.nas.supernet import SuperNet
from dcsnas.utils.io import atomic_write_text
from dcsnas.utils.seed import seed_everything

SPACE_FILE, COST_FILE = "space.yaml", "cost_table.pt"


def search_info(cfg: SearchConfig, space: SearchSpace) -> dict[str, str]:
    """The ``search`` entry of arch.json: hashes of the search config and of the space."""
    return {"config_hash": config_hash(cfg), "space_hash": config_hash(space)}


def run_space(run: RunDir) -> SearchSpace:
    """The search space a run searched (its copy in the run directory)."""
    from dcsnas.config import read_yaml

    path = run.path / SPACE_FILE
    if not path.is_file():
        raise ConfigError(f"'{run.path}' is not the run directory of a search: {SPACE_FILE} is missing")
    return parse_space(read_yaml(path), str(path))


class Searcher(Trainer):
    """Searches ``cfg.search.space`` into the run directory ``run``; ``fit()`` returns the metrics and
    writes ``arch.json``. Single process (no DDP).

    ``__init__`` builds what ``Trainer.__init__`` builds, with the supernet as the model and the two splits,
    and sets every attribute the inherited methods read (``tests/test_search.py`` checks the list).
    """

    def __init__(self, cfg: SearchConfig, run: RunDir, show_progress: bool = True):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("dcsnas search runs in a single process; start it without torchrun")
        nas = cfg.search
        self.cfg, self.run, self.dist = cfg, run, DistContext()
        self.device = device = resolve_device(cfg.device)
        self.show_progress = show_progress
        seed_everything(cfg.seed)

        self.space = load_space(nas.space)
        self._keep_space_copy(Path(nas.space))
        self.costs = cached_costs(self.space, (cfg.data.transforms.height, cfg.data.transforms.width),
                                  run.path / COST_FILE)
        self.cost_loss = CostLoss(nas.cost, self.costs)
        self.dataset = cfg.data.load()
        train, self.val_split = self.dataset.train, None
        if cfg.eval.val_identities > 0:
            train, val_query, val_gallery = hold_out_identities(train, cfg.eval.val_identities, cfg.seed)
            self.val_split = (val_query, val_gallery)
        self.train_records, self.arch_records = split_for_search(train, nas.arch_fraction, nas.split, cfg.seed)
        self.num_classes = len({r.pid for r in self.train_records})

        self.model = SuperNet(self.space, self.num_classes, cfg.head, nas.mode, nas.tau_start).to(device)
        self.cuda = device.type == "cuda"
        if self.cuda and cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_model = self.model
        self.amp_dtype = getattr(torch, cfg.amp_dtype) if (cfg.amp and self.cuda) else None
        self.criterion = ReIDCriterion(cfg.loss, self.num_classes, self.model.embedding_dim).to(device)
        self.arch_criterion = self.criterion if nas.split == "per_identity" else ReIDCriterion(
            replace(cfg.loss, ce_weight=0.0, center_weight=0.0), self.num_classes, self.model.embedding_dim)
        self.optimizer = build_optimizer(self.model.weight_modules(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim)
        self.center_optimizer = (torch.optim.SGD(self.criterion.center.parameters(), lr=cfg.loss.center_lr)
                                 if self.criterion.center is not None else None)
        self.arch_optimizer = torch.optim.Adam(self.model.arch.parameters(), lr=nas.arch_lr, betas=(0.5, 0.999),
                                               weight_decay=nas.arch_weight_decay)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.ib = self._build_ib() if cfg.loss.ib_weight > 0 else None

        transform = build_transforms(cfg.data.transforms, True)
        self.train_loader = self._loader(self.train_records, transform, cfg.seed, "weight")
        self.arch_loader = self._loader(self.arch_records, transform, cfg.seed + 1, "architecture")
        self.test_transform = build_transforms(cfg.data.transforms, False)

        self.logger = RunLogger(run.tensorboard)
        self.start_epoch, self.elapsed, self.history, self.best, self.untrained = 0, 0.0, [], None, None

    def _keep_space_copy(self, source: Path) -> None:
        """Copy the space file into the run directory (``derive`` reads it there); a run directory that
        already holds another space is refused (``--resume`` after the space file changed, or a reused --out)."""
        copy = self.run.path / SPACE_FILE
        if copy.is_file() and run_space(self.run) != self.space:
            raise ConfigError(f"the run directory '{self.run.path}' holds a search of another space than "
                              f"'{source}' ({copy}); restore that file or search into a new --out")
        atomic_write_text(copy, source.read_text())

    def _loader(self, records, transform, seed: int, split: str):
        cfg = self.cfg.data
        pids = len({r.pid for r in records})
        if pids < cfg.p or len(loader := build_train_loader(records, transform, cfg.p, cfg.k, cfg.num_workers,
                                                             seed)) == 0:
            raise ConfigError(f"data.p × data.k = {cfg.p}×{cfg.k} yields no batch on the {split} split of the "
                              f"search ({len(records)} images of {pids} identities); lower data.p or data.k")
        return loader

    # ----------------------------------------------------------------------------------------- state
    def state(self, epoch: int) -> dict[str, Any]:
        return {**super().state(epoch), "arch_optimizer": self.arch_optimizer.state_dict()}

    def resume(self) -> None:
        super().resume()
        self.arch_optimizer.load_state_dict(load_checkpoint(self.run.checkpoints / "last.pt")["arch_optimizer"])

    # ----------------------------------------------------------------------------------------- epochs
    def begin_epoch(self, epoch: int) -> None:
        super().begin_epoch(epoch)
        nas = self.cfg.search
        self.model.tau = nas.tau_start * nas.tau_decay ** epoch
        self.arch_loader.batch_sampler.set_epoch(epoch)

    def loss_terms(self, images: torch.Tensor, pids: torch.Tensor, criterion: ReIDCriterion,
                   ib_on: bool) -> dict[str, torch.Tensor]:
        """Forward one batch; the criterion's terms, plus ``ib`` (weighted, in ``total``) when ``ib_on``."""
        images = images.to(self.device, non_blocking=True)
        if self.cuda and self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = pids.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.model(images)
        terms = criterion(outputs, labels)
        if ib_on:
            ib = self.ib(outputs["pooled"].float(), self.ib_input(images), labels)
            terms["ib_ixf"], terms["ib_iyf"] = ib["ixf"].detach(), ib["iyf"].detach()
            terms["ib"] = self.cfg.loss.ib_weight * ib["total"]
            terms["total"] = terms["total"] + terms["ib"]
        if not torch.isfinite(terms["total"]):
            raise FloatingPointError(f"the search loss is {terms['total'].item()}; lower optim.lr or search.arch_lr")
        return terms

    def weight_step(self, images: torch.Tensor, pids: torch.Tensor, ib_on: bool) -> dict[str, torch.Tensor]:
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

    def arch_step(self, images: torch.Tensor, pids: torch.Tensor, ib_on: bool) -> dict[str, torch.Tensor]:
        """L = cost(L_task) + η·IBB on an architecture-split batch; only α is updated."""
        disjoint = self.cfg.search.split == "identity_disjoint"
        terms = self.loss_terms(images, pids, self.arch_criterion, ib_on and not disjoint)
        ib = terms.get("ib", torch.zeros((), device=self.device))
        total, flops = self.cost_loss(terms["total"] - ib, self.model.arch, self.model.selection.weights)
        terms["total"] = total + ib
        terms["mflops"] = flops.detach() / 1e6
        self.arch_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.scaler.step(self.arch_optimizer)
        self.scaler.update()
        return {f"arch_step/{k}": v for k, v in terms.items()}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        arch_on = epoch >= cfg.search.warmup_epochs
        ib_on = self.ib is not None and epoch >= cfg.loss.ib_warmup_epochs
        arch_batches = _cycle(self.arch_loader)
        sums: dict[str, float] = {}
        steps = len(self.train_loader)
        bar = progress(self.train_loader, f"search {epoch + 1}/{cfg.optim.epochs}", enabled=self.show_progress)
        for step, (images, pids, _, _) in enumerate(bar):
            terms = self.weight_step(images, pids, ib_on)
            if arch_on:
                arch_images, arch_pids, _, _ = next(arch_batches)
                terms.update(self.arch_step(arch_images, arch_pids, ib_on))
            values = {k: float(v.detach()) for k, v in terms.items()}
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
            if self.show_progress:
                bar.set_postfix(loss=f"{values['total']:.3f}")
            if (step + 1) % cfg.log_every == 0:
                self.logger.scalars(values, epoch * steps + step, "train_step/")
        stats = {key: value / steps for key, value in sums.items()}
        return {**stats, **self.arch_stats()}

    @torch.no_grad()
    def arch_stats(self) -> dict[str, float]:
        """Scalars of the architecture distribution: ``arch/entropy`` (mean over choices, nats), τ, FLOPs
        (MFLOPs) and parameters (M) of the argmax architecture, expected FLOPs."""
        arch = self.model.arch
        argmax = arch.argmax()
        return {"arch/entropy": arch.entropy(), "arch/tau": self.model.tau,
                "arch/argmax_mflops": self.costs.exact(argmax, "flops") / 1e6,
                "arch/argmax_mparams": self.costs.exact(argmax, "params") / 1e6,
                "arch/expected_mflops": float(self.costs.expected(arch.probabilities(), "flops")) / 1e6}

    def log_epoch(self, epoch: int, train_stats: dict[str, float]) -> None:
        from dcsnas.nas.plots import probability_heatmap

        super().log_epoch(epoch, {k: v for k, v in train_stats.items() if not k.startswith("arch/")})
        self.logger.scalars({k: v for k, v in train_stats.items() if k.startswith("arch/")}, epoch + 1)
        kept = {f"attention/{name}/dcs_kept_ratio": float(m.kept_ratio) for name, m in self.model.named_modules()
                if isinstance(m, DCSAttention) and m.kept_ratio is not None}
        self.logger.scalars(kept, epoch + 1)
        self.logger.figure("arch/probabilities", probability_heatmap(self.model.arch), epoch + 1)
        argmax, choices = self.model.arch.argmax(), self.model.arch.choices
        text = "  \n".join(f"{k}: {c.labels[argmax[k]]}" for k, c in choices.items() if c.searchable)
        self.logger.text("arch/argmax", text, epoch + 1)

    def derive(self) -> Arch:
        """The current argmax architecture."""
        return derive_arch(self.space, self.model.arch.argmax(), self.costs, search_info(self.cfg, self.space))

    def fit(self) -> dict:
        metrics = super().fit()
        arch = self.derive()
        write_arch(self.run.arch, arch)
        metrics["arch"] = {"path": str(self.run.arch), "flops": arch.flops, "params": arch.params}
        self.run.write_metrics(metrics)
        return metrics


def _cycle(loader) -> Iterator:
    """The loader's batches, over and over (the architecture split may give fewer batches per epoch)."""
    while True:
        yield from loader
