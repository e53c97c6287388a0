"""The DCS-DNAS search loop (DESIGN §6) of ``dcsnas search``.

The training images are split into a weight split and an architecture split
(:func:`~dcsnas.nas.split.split_for_search`). For ``warmup_epochs`` epochs only the weights train (paths
still sampled from α = 0, i.e. uniformly); then every step is a weight step (the engine's optimizer on the
weights: task loss + IB on a weight-split batch) followed by an architecture step (Adam on α: task loss
with the cost term of :class:`~dcsnas.nas.cost.CostLoss`, + IB, on an architecture-split batch). The
architecture step has its own GradScaler and differentiates with respect to α only
(``torch.autograd.grad``): no weight gradient is computed, and the weights' ``.grad`` are left alone.

:class:`Searcher` is the training engine (:class:`~dcsnas.engine.trainer.Trainer`) with the supernet as
its model: it inherits the epoch loop, the DCS temperature schedule, the IB refresh, evaluation (of the
current argmax architecture, with the shared weights, after re-estimating the BatchNorm statistics of that
path on ``search.bn_recalibration_batches`` weight-split batches; the IB refresh too), atomic checkpoints and exact
``--resume``. :meth:`Searcher.evaluate_architecture` evaluates any architecture of the space that way. Each
epoch TensorBoard gets every loss term of both steps, τ, the mean entropy of the choices, the argmax
architecture's FLOPs and parameters, the expected FLOPs, a heat map of the choice probabilities and the
argmax architecture as text. At the end ``arch.json`` is written into the run directory.

**DDP** (``torchrun --nproc_per_node N -m dcsnas.cli search …``, gloo on CPU, nccl on CUDA, multi-node with
torchrun's usual ``--nnodes``/``--rdzv-*`` options): every rank holds the same supernet, α, optimizers and
generators, and the ranks stay in lockstep.

- Data: both splits are sharded disjointly per epoch (the P×K batch list is a function of (seed, epoch);
  rank r takes the batches r, r + N, …, every rank the same number). The BatchNorm recalibration batches are
  not sharded: every rank re-estimates on the same batches, so all ranks (and a single process) hold the
  same statistics for the IB refresh. DDP gives every rank rank 0's buffers before each weight step's
  forward; the architecture step (plain supernet) updates them locally, so they are broadcast again at the
  start of every epoch, before the IB refresh reads them.
- Architecture samples: the Gumbel noise of α comes from a generator of its own
  (``ArchDistribution.generator``, seeded by ``seed + 3``, saved in the checkpoint), so every rank draws the
  same architecture at every step (the same path of the supernet), whatever the ranks' other random draws
  (augmentations, DCS gate noise). Per-rank samples would average the weight gradients of a candidate with
  the zeros of ranks that did not sample it; shared samples keep a step equal to a single process's step on
  the union of the ranks' batches (up to what is per batch: BatchNorm batch statistics, triplet mining).
- Weight step: DistributedDataParallel over :class:`WeightModules` (the backbone and the head: α is no
  DDP parameter, so DDP neither broadcasts nor reduces it). In hard mode a step runs one path, so
  ``find_unused_parameters`` is on: DDP finds the unused candidates by a walk of the autograd graph, and
  as they are unused on every rank (shared samples) it leaves their ``.grad`` at None, so the optimizer
  skips them exactly as in a single process. Soft mode runs every candidate (no walk).
- Architecture step: forward through the plain supernet (no DDP hook: only α is differentiated), then α's
  gradients are averaged over the ranks (:func:`~dcsnas.engine.distributed.average_gradients`) before the
  arch GradScaler's step (an overflow on one rank is then one on all: they skip the step together); the cost term
  multiplies each rank's task loss, so it is computed on every rank (α gets the mean of the ranks'
  gradients, as a single process on the union batch would). The cost *table* is measured (or read) and
  written by rank 0 and broadcast to the others.
- The IB refresh is the engine's (rank-sharded features, all-gathered, clustered on rank 0, broadcast).
- Rank 0 alone writes: the space copy, the cost table, TensorBoard, checkpoints, metrics.json, arch.json,
  the progress bars; the epoch's loss averages are the means over all ranks' steps. ``--resume`` reads
  ``last.pt`` on every rank (on several nodes, ``--out`` must be on a file system they share).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from dcsnas.attention import DCSAttention
from dcsnas.config import config_hash, read_yaml
from dcsnas.data.loaders import build_train_loader
from dcsnas.engine.checkpoint import load_checkpoint
from dcsnas.engine.distributed import all_reduce_mean, average_gradients, barrier, broadcast_object, broadcast_tensors
from dcsnas.engine.rundir import RunDir
from dcsnas.engine.trainer import Trainer
from dcsnas.errors import ConfigError
from dcsnas.losses.criterion import ReIDCriterion
from dcsnas.models.arch import Arch, write_arch
from dcsnas.models.builder import arch_params
from dcsnas.nas.arch import SPACE_FILE, derive_arch
from dcsnas.nas.config import SearchConfig
from dcsnas.nas.cost import CostLoss, CostModel, cached_costs
from dcsnas.nas.plots import probability_heatmap
from dcsnas.nas.recalibration import recalibrate_bn
from dcsnas.nas.space import SearchSpace, load_space, parse_space
from dcsnas.nas.split import split_for_search
from dcsnas.nas.supernet import SuperNet
from dcsnas.utils.io import atomic_write_text
from dcsnas.utils.progress import progress

COST_FILE = "cost_table.pt"
ALPHA_DIR = "alpha"  # the heat maps of softmax(α), one PNG per epoch


def search_info(cfg: SearchConfig, space: SearchSpace) -> dict[str, str]:
    """The ``search`` entry of arch.json: hashes of the search config and of the space."""
    return {"config_hash": config_hash(cfg), "space_hash": config_hash(space)}


def run_space(run: RunDir) -> SearchSpace:
    """The search space a run searched (its copy in the run directory)."""
    path = run.path / SPACE_FILE
    if not path.is_file():
        raise ConfigError(f"'{run.path}' is not the run directory of a search: {SPACE_FILE} is missing")
    return parse_space(read_yaml(path), str(path))


class WeightModules(nn.Module):
    """The supernet's forward with only its weight modules (backbone, head) registered: the module that DDP
    wraps in a search, so that α is no DDP parameter."""

    def __init__(self, supernet: SuperNet):
        super().__init__()
        self.weights = supernet.weight_modules()
        self._supernet = (supernet,)  # a tuple: not registered as a submodule

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._supernet[0](images)


class Searcher(Trainer):
    """Searches ``cfg.search.space`` into the run directory ``run``; ``fit()`` returns the metrics and
    writes ``arch.json``. One process, or DDP under ``torchrun`` (module docstring).

    ``__init__`` builds what ``Trainer.__init__`` builds, with the supernet as the model and the two splits,
    and sets every attribute the inherited methods read (``tests/test_search.py`` checks the list).
    """

    train_split_name = "weight split of the search"
    title = "search"

    def __init__(self, cfg: SearchConfig, run: RunDir, show_progress: bool = True):
        nas = cfg.search
        self.cfg, self.run = cfg, run
        self.space = load_space(nas.space)
        super().__init__(cfg, run, show_progress)  # under torchrun: after the rendezvous, rank 0 holds the lock
        self._keep_space_copy(Path(nas.space))
        self.costs = self._cost_table()
        self.cost_loss = CostLoss(nas.cost, self.costs)
        generator = torch.Generator(self.device)
        generator.manual_seed(cfg.seed + 3)  # the loaders use seed, seed + 1, seed + 2
        self.model.arch.generator = generator
        # every rank starts from rank 0's α (DDP broadcasts the weights)
        self.model.arch.load_state_dict(broadcast_tensors(
            self.model.arch.state_dict() if self.dist.is_main else None, self.dist, self.device))
        self.arch_criterion = self.criterion if nas.split == "per_identity" else ReIDCriterion(
            replace(cfg.loss, ce_weight=0.0, center_weight=0.0), self.num_classes, self.model.embedding_dim)
        self.arch_optimizer = torch.optim.Adam(self.model.arch.parameters(), lr=nas.arch_lr, betas=(0.5, 0.999),
                                               weight_decay=nas.arch_weight_decay)
        self.arch_scaler = torch.amp.GradScaler(self.device.type, enabled=self.scaler.is_enabled())
        self.arch_loader = self.build_loader(self.arch_records, cfg.seed + 1, "architecture split of the search")
        # the same batches on every rank (not sharded): every rank re-estimates the same statistics
        self.recalibration_loader = (build_train_loader(self.train_records, self.train_transform, cfg.data.p,
                                                        cfg.data.k, cfg.data.num_workers, cfg.seed + 2)
                                     if nas.bn_recalibration_batches > 0 else None)

    def wrap_ddp(self) -> nn.Module:
        """DDP over :class:`WeightModules`; ``find_unused_parameters`` for hard mode's single path (and, as in
        the engine, for PCB and the IB term)."""
        cfg = self.cfg
        return nn.parallel.DistributedDataParallel(
            WeightModules(self.model), device_ids=[self.device.index] if self.cuda else None,
            find_unused_parameters=cfg.search.mode == "hard" or cfg.head == "pcb" or bool(cfg.loss.ib_weight))

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
        """Copy the space file into the run directory (``derive`` reads it there; rank 0 writes it); a run
        directory that already holds another space is refused on every rank (``--resume`` after the space
        file changed, or a reused --out)."""
        copy = self.run.path / SPACE_FILE
        if copy.is_file() and run_space(self.run) != self.space:
            raise ConfigError(f"the run directory '{self.run.path}' holds a search of another space than "
                              f"'{source}' ({copy}); restore that file or search into a new --out")
        barrier(self.dist)  # every rank has read the old copy before rank 0 replaces it
        if self.dist.is_main:
            atomic_write_text(copy, source.read_text())

    def _cost_table(self) -> CostModel:
        """The space's cost table at the input size, measured and cached in the run directory by rank 0 and
        sent to the other ranks; measuring draws random weights, so it runs on a forked generator."""
        costs = None
        if self.dist.is_main:
            with torch.random.fork_rng(devices=[]):
                costs = cached_costs(self.space, (self.cfg.data.transforms.height, self.cfg.data.transforms.width),
                                     self.run.path / COST_FILE)
        return broadcast_object(costs, self.dist)

    # ----------------------------------------------------------------------------------------- state
    def state(self, epoch: int) -> dict[str, Any]:
        return {**super().state(epoch), "arch_optimizer": self.arch_optimizer.state_dict(),
                "arch_scaler": self.arch_scaler.state_dict(), "arch_rng": self.model.arch.generator.get_state()}

    def resume(self) -> None:
        super().resume()
        ckpt = load_checkpoint(self.run.checkpoints / "last.pt")
        self.arch_optimizer.load_state_dict(ckpt["arch_optimizer"])
        if "arch_scaler" in ckpt:  # checkpoints of searches that shared one scaler have none
            self.arch_scaler.load_state_dict(ckpt["arch_scaler"])
        if "arch_rng" in ckpt:  # nor those of searches that drew α's noise from the global generator
            self.model.arch.generator.set_state(ckpt["arch_rng"])

    # ----------------------------------------------------------------------------------------- epochs
    def begin_epoch(self, epoch: int) -> None:
        if self.dist.enabled:  # rank 0's BatchNorm statistics (those it evaluated and saved) on every rank
            buffers = dict(self.model.named_buffers())
            received = broadcast_tensors(buffers if self.dist.is_main else None, self.dist, self.device)
            with torch.no_grad():
                for name, value in received.items():
                    buffers[name].copy_(value)
        super().begin_epoch(epoch)
        nas = self.cfg.search
        self.model.tau = nas.tau_start * nas.tau_decay ** epoch
        self.arch_loader.batch_sampler.set_epoch(epoch)

    def arch_step(self, images: torch.Tensor, pids: torch.Tensor, ib_on: bool) -> dict[str, torch.Tensor]:
        """L = cost(L_task) + η·IBB on an architecture-split batch; only α gets gradients and is updated."""
        disjoint = self.cfg.search.split == "identity_disjoint"
        terms, outputs = self.loss_terms(images, pids, self.arch_criterion, ib_on and not disjoint, return_outputs=True)
        ib = terms.get("ib", torch.zeros((), device=self.device))
        total, flops = self.cost_loss(terms["total"] - ib, self.model.arch, outputs["arch_weights"])
        terms["total"] = total + ib
        terms["mflops"] = flops.detach() / 1e6
        alphas = list(self.model.arch.parameters())
        grads = torch.autograd.grad(self.arch_scaler.scale(terms["total"]), alphas, allow_unused=True)
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad
        average_gradients(alphas, self.dist)  # the same α on every rank after the step
        self.arch_scaler.step(self.arch_optimizer)
        self.arch_scaler.update()
        return {f"arch_step/{k}": v for k, v in terms.items()}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        arch_on = epoch >= cfg.search.warmup_epochs
        ib_on = self.ib_active(epoch)
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
        keys = sorted(sums)  # the means over every rank's steps (each rank has run ``steps`` steps)
        means = all_reduce_mean(torch.tensor([sums[k] / steps for k in keys], dtype=torch.float64,
                                             device=self.device), self.dist)
        return {**{k: float(v) for k, v in zip(keys, means)}, **self.arch_stats()}

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

    def log_epoch(self, epoch: int, train_stats: dict[str, float]) -> dict[str, float]:
        """The engine's scalars, the architecture's, and the heat map of softmax(α) with the argmax marked: to
        TensorBoard and as ``alpha/epoch_NNN.png`` in the run directory."""
        log = super().log_epoch(epoch, {k: v for k, v in train_stats.items() if not k.startswith("arch/")})
        arch_stats = {k: v for k, v in train_stats.items() if k.startswith("arch/")}
        self.logger.scalars(arch_stats, epoch + 1)
        kept = {f"attention/{name}/dcs_kept_ratio": float(m.kept_ratio) for name, m in self.model.named_modules()
                if isinstance(m, DCSAttention) and m.kept_ratio is not None}
        self.logger.scalars(kept, epoch + 1)
        title = (f"softmax(α) after epoch {epoch + 1}/{self.cfg.optim.epochs} (τ = {self.model.tau:.3g}); "
                 f"argmax boxed: {arch_stats['arch/argmax_mflops']:.2f} MFLOPs, "
                 f"{arch_stats['arch/argmax_mparams']:.4g} M params")
        figure = probability_heatmap(self.model.arch, title)
        (self.run.path / ALPHA_DIR).mkdir(exist_ok=True)
        figure.savefig(self.run.path / ALPHA_DIR / f"epoch_{epoch + 1:03d}.png", dpi=120)
        self.logger.figure("arch/probabilities", figure, epoch + 1)
        self.logger.text("arch/argmax", "  \n".join(self.genotype()), epoch + 1)
        return {**log, **arch_stats, **kept}

    def genotype(self) -> list[str]:
        """``choice: option`` of the argmax architecture, one per searchable choice."""
        argmax, choices = self.model.arch.argmax(), self.model.arch.choices
        return [f"{k}: {c.labels[argmax[k]]}" for k, c in choices.items() if c.searchable]

    def epoch_note(self) -> str:
        return "argmax " + ", ".join(self.genotype())

    def model_summary(self) -> str:
        low, high = self.costs.bounds("flops")
        shape = self.costs.input_size
        return (f"supernet of the space '{self.cfg.search.space}': {len(self.genotype())} searchable choices, "
                f"{low / 1e6:.2f}–{high / 1e6:.2f} MFLOPs per image at {shape[0]}×{shape[1]} "
                f"(cheapest–costliest architecture), {self.cfg.search.mode} sampling")

    def recalibrate(self) -> None:
        """Re-estimate the BatchNorm statistics of the path the supernet evaluates on
        ``search.bn_recalibration_batches`` weight-split batches (the same ones every time); 0: nothing."""
        if self.recalibration_loader is not None:
            recalibrate_bn(self.model, self.recalibration_loader, self.cfg.search.bn_recalibration_batches,
                           seed=self.cfg.seed)

    def refresh_ib(self) -> None:
        """The engine's IB refresh, on features of the argmax path with its recalibrated statistics."""
        self.recalibrate()
        super().refresh_ib()

    def evaluate(self, split: str = "test", show_progress: bool | None = None) -> dict:
        """The engine's evaluation of the supernet's current path (the argmax architecture, or the one of
        :meth:`evaluate_architecture`) after recalibrating its BatchNorm statistics."""
        self.recalibrate()
        return super().evaluate(split, show_progress)

    def evaluate_architecture(self, indices: dict[str, int], split: str = "test",
                              show_progress: bool | None = None) -> dict:
        """Metrics of the architecture ``indices`` (choice key → option index) with the shared weights,
        after BatchNorm recalibration of its path; α, the weights and the RNG are untouched (the BatchNorm
        statistics are those of this architecture afterwards)."""
        with self.model.fixed_architecture(indices):
            return self.evaluate(split, show_progress)

    def derive(self) -> Arch:
        """The current argmax architecture."""
        return derive_arch(self.space, self.model.arch.argmax(), self.costs, search_info(self.cfg, self.space))

    def finish(self, metrics: dict) -> dict[str, Any]:
        """``arch.json`` (the argmax architecture) and its entry in the metrics; the files of the results
        block, with the heat maps."""
        arch = self.derive()
        write_arch(self.run.arch, arch)
        metrics["arch"] = {"path": str(self.run.arch), "flops": arch.flops, "params": arch.params}
        self.console.print(f"derived architecture ({arch.flops / 1e6:.2f} MFLOPs, "
                           f"{arch_params(str(self.run.arch)) / 1e6:.4g} M parameters at inference): "
                           + ", ".join(self.genotype()))
        return {**super().finish(metrics), "arch": self.run.arch, "α heat maps": self.run.path / ALPHA_DIR}


def _cycle(loader) -> Iterator:
    """The loader's batches, over and over (the architecture split may give fewer batches per epoch)."""
    while True:
        yield from loader
