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
from dcsnas.engine.checkpoint import load_checkpoint
from dcsnas.engine.distributed import DistContext
from dcsnas.engine.logging import progress
from dcsnas.engine.rundir import RunDir
from dcsnas.attention import DCSAttention
from dcsnas.engine.trainer import Trainer
from dcsnas.errors import ConfigError
from dcsnas.losses.criterion import ReIDCriterion
from dcsnas.nas.arch import Arch, derive_arch, write_arch
from dcsnas.nas.config import SearchConfig
from dcsnas.nas.cost import CostLoss, cached_costs
from dcsnas.nas.space import SearchSpace, load_space, parse_space
from dcsnas.nas.split import split_for_search
from dcsnas.nas.supernet import SuperNet
from dcsnas.utils.io import atomic_write_text

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

    train_split_name = "weight split of the search"

    def __init__(self, cfg: SearchConfig, run: RunDir, show_progress: bool = True):
        nas = cfg.search
        self.cfg, self.run = cfg, run
        self.space = load_space(nas.space)
        self._keep_space_copy(Path(nas.space))
        self.costs = cached_costs(self.space, (cfg.data.transforms.height, cfg.data.transforms.width),
                                  run.path / COST_FILE)
        self.cost_loss = CostLoss(nas.cost, self.costs)
        super().__init__(cfg, run, show_progress)
        self.arch_criterion = self.criterion if nas.split == "per_identity" else ReIDCriterion(
            replace(cfg.loss, ce_weight=0.0, center_weight=0.0), self.num_classes, self.model.embedding_dim)
        self.arch_optimizer = torch.optim.Adam(self.model.arch.parameters(), lr=nas.arch_lr, betas=(0.5, 0.999),
                                               weight_decay=nas.arch_weight_decay)
        self.arch_loader = self.build_loader(self.arch_records, cfg.seed + 1, "architecture split of the search")

    def init_distributed(self, device: torch.device) -> DistContext:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("dcsnas search runs in a single process; start it without torchrun")
        return DistContext()

    def training_records(self, train: list) -> list:
        """The weight split; the architecture split goes to ``arch_records``."""
        weight_split, self.arch_records = split_for_search(train, self.cfg.search.arch_fraction,
                                                           self.cfg.search.split, self.cfg.seed)
        return weight_split

    def build_model(self) -> SuperNet:
        nas = self.cfg.search
        return SuperNet(self.space, self.num_classes, self.cfg.head, nas.mode, nas.tau_start)

    def weights(self):
        return self.model.weight_modules()

    def _keep_space_copy(self, source: Path) -> None:
        """Copy the space file into the run directory (``derive`` reads it there); a run directory that
        already holds another space is refused (``--resume`` after the space file changed, or a reused --out)."""
        copy = self.run.path / SPACE_FILE
        if copy.is_file() and run_space(self.run) != self.space:
            raise ConfigError(f"the run directory '{self.run.path}' holds a search of another space than "
                              f"'{source}' ({copy}); restore that file or search into a new --out")
        atomic_write_text(copy, source.read_text())

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
            terms = self.train_step(images, pids, ib_on)
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
