"""The DCS-DNAS search loop (DESIGN §6) of ``dcsnas search``.

The training images are split into a weight split and an architecture split
(:func:`~dcsnas.nas.split.split_for_search`). For ``warmup_epochs`` epochs only the weights train (paths
still sampled from α = 0, i.e. uniformly); then every step is a weight step (the engine's optimizer on the
weights: task loss + IB on a weight-split batch) followed by an architecture step (Adam on α: task loss
with the cost term of :class:`~dcsnas.nas.cost.CostLoss`, FLOPs or latency (:mod:`dcsnas.nas.latency`), + IB, on
an architecture-split batch). The architecture step has its own GradScaler and differentiates with respect to α only
(``torch.autograd.grad``): no weight gradient is computed, and the weights' ``.grad`` are left alone.

:class:`Searcher` composes the engine's pieces (:mod:`dcsnas.engine.steps`, :mod:`dcsnas.engine.trainer`)
around the supernet and hands them to the engine's loop (:class:`~dcsnas.engine.loop.Loop`), with the step
of :func:`dcs_step`: the loop's epochs, the DCS temperature schedule, the IB refresh, evaluation (of the
current argmax architecture, with the shared weights, after re-estimating the BatchNorm statistics of that
path on ``search.bn_recalibration_batches`` weight-split batches; the IB refresh too), atomic checkpoints
and exact ``--resume`` are the engine's. :meth:`Searcher.evaluate_architecture` evaluates any architecture
of the space that way. Each epoch TensorBoard gets every loss term of both steps, τ, the mean entropy of
the choices, the argmax architecture's FLOPs and parameters, the expected FLOPs, a heat map of the choice
probabilities and the argmax architecture as text (:class:`SearchReport`). At the end ``arch.json`` is
written into the run directory.

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
- Rank 0 alone writes: the space copy, the cost table (and the latency table), TensorBoard, checkpoints,
  metrics.json, arch.json, the progress bars; the epoch's loss averages are the means over all ranks' steps.
  ``--resume`` reads ``last.pt`` on every rank (on several nodes, ``--out`` must be on a file system they share).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from dcsnas.config import config_hash, from_dict, read_yaml
from dcsnas.data.base import query_gallery
from dcsnas.data.loaders import build_train_loader
from dcsnas.engine.checkpoint import load_checkpoint, load_model_state
from dcsnas.engine.console import LOG_FILE, Console
from dcsnas.engine.distributed import average_gradients, barrier, broadcast_object, broadcast_tensors
from dcsnas.engine.evaluator import evaluate_model
from dcsnas.engine.health import HealthMonitor
from dcsnas.engine.logging import RunLogger
from dcsnas.engine.loop import Loop
from dcsnas.engine.rundir import RunDir, create_run_dir, open_run_dir
from dcsnas.engine.steps import Step, StepResult, begin_weight_epoch, loss_terms, weight_step
from dcsnas.engine.trainer import (
    LoopHandle,
    ReIDData,
    WeightReport,
    WeightTraining,
    open_runtime,
    pk_loader,
    prepare_model,
    wrap_ddp,
)
from dcsnas.errors import ConfigError
from dcsnas.losses.criterion import ReIDCriterion
from dcsnas.losses.distillation import soft_label_distillation
from dcsnas.models.arch import Arch, write_arch
from dcsnas.models.builder import arch_params
from dcsnas.nas.arch import SPACE_FILE, derive_arch
from dcsnas.nas.config import SearchConfig
from dcsnas.nas.cost import CostLoss, CostModel, cached_costs
from dcsnas.nas.latency import TABLE_FILE as LATENCY_FILE
from dcsnas.nas.latency import match_space, measure_table, read_table, write_table
from dcsnas.nas.paths import fair_paths, sandwich_paths, uniform_path
from dcsnas.nas.plots import probability_heatmap
from dcsnas.nas.recalibration import recalibrate_bn
from dcsnas.nas.space import SearchSpace, load_space, parse_space
from dcsnas.nas.split import split_for_search
from dcsnas.nas.supernet import SuperNet
from dcsnas.utils.io import atomic_write_text

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


class GeneratorState:
    """A generator as a checkpoint entry (``state_dict``: its state tensor)."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


class Searcher(LoopHandle):
    """Searches ``cfg.search.space`` into the run directory ``run``; ``fit()`` (after ``resume()`` for
    ``--resume``) returns the metrics and writes ``arch.json``. One process, or DDP under ``torchrun``
    (module docstring). The collaborators are built here, in the order of a seed's random draws, and the
    engine's loop (:class:`~dcsnas.engine.loop.Loop`) gets them with the epoch's step, which
    ``strategy(searcher, epoch)`` makes (default :func:`dcs_step`; docs/architecture.md, "Add a search
    strategy")."""

    def __init__(self, cfg: SearchConfig, run: RunDir, show_progress: bool = True,
                 strategy: Callable[[Searcher, int], Step] | None = None):
        nas = cfg.search
        self.cfg, self.run = cfg, run
        self.strategy = strategy or dcs_step
        self.space = load_space(nas.space)
        self.rt = rt = open_runtime(cfg, run, show_progress)  # under torchrun: after the rendezvous
        if nas.sampling in ("fair", "sandwich") and rt.dist.enabled:
            raise ConfigError(f"search.sampling = {nas.sampling!r} runs several forward passes before one backward "
                              "and is not supported under torchrun (DDP); use one process or search.sampling: "
                              "uniform")
        data = ReIDData.load(cfg)
        # the weights train on the weight split, α on the architecture split
        weight_split, self.arch_records = split_for_search(data.train_records, nas.arch_fraction, nas.split, cfg.seed)
        self.data = replace(data, train_records=weight_split, num_classes=len({r.pid for r in weight_split}))
        num_classes = self.data.num_classes
        supernet = SuperNet(self.space, num_classes, cfg.head, nas.mode, nas.tau_start, nas.op_weights)
        self.model = prepare_model(supernet, cfg, rt)
        self.training = WeightTraining(cfg, self.model, self.model.weight_modules(), num_classes, rt)
        # DDP over the weight modules only (α is no DDP parameter); unused parameters: hard mode's single path
        self.train_model = wrap_ddp(WeightModules(self.model), rt, nas.mode == "hard" or cfg.head == "pcb"
                                    or bool(cfg.loss.ib_weight))
        self.train_loader = pk_loader(weight_split, self.data.train_transform, cfg, cfg.seed,
                                      "weight split of the search", rt.dist)
        self.logger = RunLogger(run.tensorboard, enabled=rt.dist.is_main)
        self.console = Console(run.path / LOG_FILE, enabled=rt.dist.is_main)
        self._keep_space_copy(Path(nas.space))
        self.costs = self._cost_table()
        self.cost_loss = CostLoss(nas.cost, self.costs)
        generator = torch.Generator(rt.device)
        generator.manual_seed(cfg.seed + 3)  # the loaders use seed, seed + 1, seed + 2
        self.model.arch.generator = generator
        # every rank starts from rank 0's α (DDP broadcasts the weights)
        self.model.arch.load_state_dict(broadcast_tensors(
            self.model.arch.state_dict() if rt.dist.is_main else None, rt.dist, rt.device))
        self.arch_criterion = self.training.criterion if nas.split == "per_identity" else ReIDCriterion(
            replace(cfg.loss, ce_weight=0.0, center_weight=0.0), num_classes, self.model.embedding_dim)
        self.arch_optimizer = torch.optim.Adam(self.model.arch.parameters(), lr=nas.arch_lr, betas=(0.5, 0.999),
                                               weight_decay=nas.arch_weight_decay)
        self.arch_scaler = torch.amp.GradScaler(rt.device.type, enabled=self.training.updates.scaler.is_enabled())
        self.arch_loader = pk_loader(self.arch_records, self.data.train_transform, cfg, cfg.seed + 1,
                                     "architecture split of the search", rt.dist)
        # the same batches on every rank (not sharded): every rank re-estimates the same statistics
        self.recalibration_loader = (build_train_loader(weight_split, self.data.train_transform, cfg.data.p,
                                                        cfg.data.k, cfg.data.num_workers, cfg.seed + 2)
                                     if nas.bn_recalibration_batches > 0 else None)
        self.loop = Loop(
            cfg=cfg, run=run, rt=rt, model=self.model, loader=self.train_loader, begin=self.begin_epoch,
            scheduler=self.training.scheduler, evaluate=self.evaluate,
            report=SearchReport(self, WeightReport(self.logger, self.model, self.training.optimizer)),
            states={**self.training.states(), "arch_optimizer": self.arch_optimizer, "arch_scaler": self.arch_scaler,
                    "arch_rng": GeneratorState(generator)},
            logger=self.logger, console=self.console,
            health=HealthMonitor.for_run(cfg.optim.epochs, cfg.optim.warmup_epochs), title="search",
            summary=self.model_summary, dataset=self.data.dataset, num_classes=num_classes,
            validation=self.data.val_split is not None, finish=self.finish, step_title="search")

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
        sent to the other ranks; measuring draws random weights, so it runs on a forked generator. With
        ``search.cost.metric: latency`` the latency table is attached (:meth:`_latency_table`)."""
        costs = None
        if self.dist.is_main:
            size = (self.cfg.data.transforms.height, self.cfg.data.transforms.width)
            device = self.rt.device  # the latency table draws random inputs on it
            devices = [] if device.type != "cuda" else [torch.cuda.current_device() if device.index is None
                                                         else device.index]
            with torch.random.fork_rng(devices=devices):
                costs = cached_costs(self.space, size, self.run.path / COST_FILE)
                if self.cfg.search.cost.metric == "latency":
                    costs = costs.with_latency(self._latency_table(size))
        return broadcast_object(costs, self.dist)

    def _latency_table(self, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The latency tables (ms) of ``search.cost.metric: latency`` (rank 0): the run directory's
        ``latency_table.json`` on ``--resume``; else the file ``search.cost.table``, checked against the space,
        input size and ``search.cost.batch`` and copied into the run directory; else measured now on the search's
        device and threads and written there."""
        cost, copy = self.cfg.search.cost, self.run.path / LATENCY_FILE
        if copy.is_file():
            _, tables = read_table(copy, self.space, size, cost.batch)
            return tables
        if cost.table is not None:
            doc, tables = read_table(cost.table, self.space, size, cost.batch)
            self.console.print(f"latency table '{cost.table}' ({doc['device_name']}, batch {doc['batch']}, "
                               f"{doc['threads']} threads)")
        else:
            self.console.print(f"measuring the latency table of the space on {self.rt.device} at batch {cost.batch} "
                               f"({torch.get_num_threads()} threads)")
            doc = measure_table(self.space, size, cost.batch, self.rt.device)
            tables = match_space(doc, self.space, str(copy))
        write_table(doc, copy)
        return tables

    # ----------------------------------------------------------------------------------------- steps
    def begin_epoch(self, epoch: int) -> Step:
        """Start epoch ``epoch`` (0-based): BatchNorm buffers from rank 0, the engine's epoch start (DCS τ,
        PCB-RPP, IB refresh), the samplers' epoch, the supernet's τ; the epoch's step (``strategy``)."""
        nas = self.cfg.search
        if self.dist.enabled:  # rank 0's BatchNorm statistics (those it evaluated and saved) on every rank
            buffers = dict(self.model.named_buffers())
            received = broadcast_tensors(buffers if self.dist.is_main else None, self.dist, self.rt.device)
            with torch.no_grad():
                for name, value in received.items():
                    buffers[name].copy_(value)
        begin_weight_epoch(epoch, self.cfg, self.model, self.training.optimizer, self.training.ib, self.refresh_ib)
        self.train_loader.batch_sampler.set_epoch(epoch)
        self.model.tau = nas.tau_start * nas.tau_decay ** epoch
        self.arch_loader.batch_sampler.set_epoch(epoch)
        return self.strategy(self, epoch)

    def weight_step(self, epoch: int) -> Step:
        """The weight step of ``search.sampling`` (task loss, + IB after its warm-up; :mod:`dcsnas.nas.paths`):
        ``gumbel``, the engine's weight step on the supernet, which draws its path from α; ``uniform``, the
        same on a path drawn uniformly; ``fair`` and ``sandwich``, one update on the summed losses of the paths
        of :func:`~dcsnas.nas.paths.fair_paths` or :func:`~dcsnas.nas.paths.sandwich_paths` on the batch (its
        terms: their means; ``sandwich`` adds the distillation term ``distill``)."""
        ib = self.training.ib if self.training.ib is not None and self.training.ib.active(epoch) else None
        lr, criterion, model = self.cfg.optim.lr, self.training.criterion, self.model
        plain = weight_step(self.train_model, criterion, ib, self.training.updates, self.rt, lr)
        sampling, generator = self.cfg.search.sampling, model.arch.generator
        if sampling == "gumbel":
            return plain

        def uniform(images: torch.Tensor, pids: torch.Tensor) -> StepResult:
            with model.fixed_architecture(uniform_path(model.arch.choices, generator)):
                return plain(images, pids)

        def several(images: torch.Tensor, pids: torch.Tensor, paths: list[dict[str, int]],
                    distill: bool) -> StepResult:
            """One update on the summed losses of ``paths`` on the batch (``distill``: the first path's logits
            teach the others); its terms: their means, the distillation term's over all paths."""
            runs, teacher = [], None
            for path in paths:
                with model.fixed_architecture(path):
                    terms, outputs = loss_terms(self.train_model, images, pids, criterion, ib, self.rt, lr)
                if distill:
                    teacher = teacher if teacher is not None else outputs["logits"]
                    terms["distill"] = soft_label_distillation(outputs["logits"], teacher)
                    terms["total"] = terms["total"] + self.cfg.search.distill_weight * terms["distill"]
                runs.append(terms)
            self.training.updates.update(sum(terms["total"] for terms in runs))
            return StepResult({key: torch.stack([terms[key].detach() for terms in runs]).mean() for key in runs[0]},
                              {})

        def fair(images: torch.Tensor, pids: torch.Tensor) -> StepResult:
            return several(images, pids, fair_paths(model.arch.choices, generator), distill=False)

        extremes = self.costs.extremes("flops") if sampling == "sandwich" else None

        def sandwich(images: torch.Tensor, pids: torch.Tensor) -> StepResult:
            paths = sandwich_paths(model.arch.choices, *extremes, self.cfg.search.sandwich_paths, generator)
            return several(images, pids, paths, distill=True)

        return {"uniform": uniform, "fair": fair, "sandwich": sandwich}[sampling]

    def arch_step(self, images: torch.Tensor, pids: torch.Tensor, ib_on: bool) -> StepResult:
        """L = cost(L_task) + η·IBB on an architecture-split batch; only α gets gradients and is updated."""
        disjoint = self.cfg.search.split == "identity_disjoint"
        ib = self.training.ib if ib_on and not disjoint else None
        terms, outputs = loss_terms(self.model, images, pids, self.arch_criterion, ib, self.rt, self.cfg.optim.lr)
        ib_term = terms.get("ib", torch.zeros((), device=self.rt.device))
        total, cost = self.cost_loss(terms["total"] - ib_term, self.model.arch, outputs["arch_weights"])
        terms["total"] = total + ib_term
        if self.cfg.search.cost.metric == "latency":
            terms["latency_ms"] = cost.detach()
        else:
            terms["mflops"] = cost.detach() / 1e6
        alphas = list(self.model.arch.parameters())
        grads = torch.autograd.grad(self.arch_scaler.scale(terms["total"]), alphas, allow_unused=True)
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad
        average_gradients(alphas, self.dist)  # the same α on every rank after the step
        self.arch_scaler.step(self.arch_optimizer)
        self.arch_scaler.update()
        return StepResult({f"arch_step/{k}": v for k, v in terms.items()}, outputs.get("dcs_kept", {}))

    # ----------------------------------------------------------------------------------------- evaluation
    def recalibrate(self) -> None:
        """Re-estimate the BatchNorm statistics of the path the supernet evaluates on
        ``search.bn_recalibration_batches`` weight-split batches (the same ones every time); 0: nothing."""
        if self.recalibration_loader is not None:
            recalibrate_bn(self.model, self.recalibration_loader, self.cfg.search.bn_recalibration_batches,
                           seed=self.cfg.seed)

    def refresh_ib(self) -> None:
        """The engine's IB refresh, on features of the argmax path with its recalibrated statistics."""
        self.recalibrate()
        self.training.ib.refresh(self.model, self.data.train_records, self.data.test_transform, self.rt)

    def evaluate(self, split: str = "test", show_progress: bool | None = None) -> dict:
        """The engine's evaluation of the supernet's current path (the argmax architecture, or the one of
        :meth:`evaluate_architecture`) after recalibrating its BatchNorm statistics. ``split``: ``test``, ``val``
        (``eval.val_identities``) or ``arch``: retrieval among the architecture split's images (per identity the
        first image of each camera a query, the rest gallery), which the weights never trained on."""
        self.recalibrate()
        progress = self.rt.show_progress if show_progress is None else show_progress
        if split != "arch":
            return self.data.evaluate(self.model, split, self.cfg, self.rt, progress)
        query, gallery = query_gallery(self.arch_records)
        return evaluate_model(self.model, query, gallery, self.data.test_transform, self.cfg.eval,
                              self.cfg.data.test_batch_size, self.rt.device, self.cfg.data.num_workers,
                              self.rt.amp_dtype, progress)

    def evaluate_architecture(self, indices: dict[str, int], split: str = "test",
                              show_progress: bool | None = None) -> dict:
        """Metrics of the architecture ``indices`` (choice key → option index) with the shared weights,
        after BatchNorm recalibration of its path; α, the weights and the RNG are untouched (the BatchNorm
        statistics are those of this architecture afterwards)."""
        with self.model.fixed_architecture(indices):
            return self.evaluate(split, show_progress)

    # ----------------------------------------------------------------------------------------- reports
    def genotype(self) -> list[str]:
        """``choice: option`` of the argmax architecture, one per searchable choice."""
        argmax, choices = self.model.arch.argmax(), self.model.arch.choices
        return [f"{k}: {c.labels[argmax[k]]}" for k, c in choices.items() if c.searchable]

    def model_summary(self) -> str:
        low, high = self.costs.bounds("flops")
        shape = self.costs.input_size
        latency = ""
        if self.costs.has_latency:
            fast, slow = self.costs.span("latency")
            latency = f", {fast:.3g}–{slow:.3g} ms per batch of {self.cfg.search.cost.batch} (latency table)"
        return (f"supernet of the space '{self.cfg.search.space}': {len(self.genotype())} searchable choices, "
                f"{low / 1e6:.2f}–{high / 1e6:.2f} MFLOPs per image at {shape[0]}×{shape[1]} "
                f"(cheapest–costliest architecture){latency}, {self.cfg.search.mode} mode, "
                f"{self.cfg.search.sampling} paths for the weights")

    def derive(self) -> Arch:
        """The current argmax architecture."""
        return derive_arch(self.space, self.model.arch.argmax(), self.costs, search_info(self.cfg, self.space))

    def finish(self, metrics: dict, files: dict[str, Any]) -> dict[str, Any]:
        """``arch.json`` (the argmax architecture) and its entry in the metrics; the files of the results
        block, with the heat maps."""
        arch = self.derive()
        write_arch(self.run.arch, arch)
        metrics["arch"] = {"path": str(self.run.arch), "flops": arch.flops, "params": arch.params}
        if self.costs.has_latency:
            metrics["arch"]["latency_ms"] = self.costs.value(self.model.arch.argmax(), "latency")
        self.console.print(f"derived architecture ({arch.flops / 1e6:.2f} MFLOPs, "
                           f"{arch_params(str(self.run.arch)) / 1e6:.4g} M parameters at inference): "
                           + ", ".join(self.genotype()))
        return {**files, "arch": self.run.arch, "α heat maps": self.run.path / ALPHA_DIR}


class SearchReport:
    """The search's epoch report: the engine's scalars (``weights``: a
    :class:`~dcsnas.engine.trainer.WeightReport`), the architecture's (``arch/*``: entropy, τ, argmax and
    expected costs), every DCS candidate's kept ratio, and the heat map of softmax(α) with the argmax marked
    (to TensorBoard and as ``alpha/epoch_NNN.png``); the console line's note is the argmax architecture."""

    def __init__(self, searcher: Searcher, weights: WeightReport):
        self.searcher, self.weights = searcher, weights

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        """``arch/entropy`` (mean over choices, nats), τ, FLOPs (MFLOPs) and parameters (M) of the argmax
        architecture, expected FLOPs; with a latency table the argmax's and the expected latency (ms)."""
        model, costs = self.searcher.model, self.searcher.costs
        arch = model.arch
        argmax = arch.argmax()
        stats = {"arch/entropy": arch.entropy(), "arch/tau": model.tau,
                 "arch/argmax_mflops": costs.exact(argmax, "flops") / 1e6,
                 "arch/argmax_mparams": costs.exact(argmax, "params") / 1e6,
                 "arch/expected_mflops": float(costs.expected(arch.probabilities(), "flops")) / 1e6}
        if costs.has_latency:
            stats["arch/argmax_latency_ms"] = costs.value(argmax, "latency")
            stats["arch/expected_latency_ms"] = float(costs.expected(arch.probabilities(), "latency"))
        return stats

    def log(self, epoch: int, stats: dict[str, float], kept: dict[str, float]) -> dict[str, float]:
        searcher, logger = self.searcher, self.weights.logger
        log = self.weights.log(epoch, {k: v for k, v in stats.items() if not k.startswith("arch/")}, {})
        arch_stats = {k: v for k, v in stats.items() if k.startswith("arch/")}
        logger.scalars(arch_stats, epoch + 1)
        kept = {f"attention/{name}/dcs_kept_ratio": ratio for name, ratio in kept.items()}
        logger.scalars(kept, epoch + 1)
        title = (f"softmax(α) after epoch {epoch + 1}/{searcher.cfg.optim.epochs} (τ = {searcher.model.tau:.3g}); "
                 f"argmax boxed: {arch_stats['arch/argmax_mflops']:.2f} MFLOPs, "
                 f"{arch_stats['arch/argmax_mparams']:.4g} M params")
        figure = probability_heatmap(searcher.model.arch, title)
        (searcher.run.path / ALPHA_DIR).mkdir(exist_ok=True)
        figure.savefig(searcher.run.path / ALPHA_DIR / f"epoch_{epoch + 1:03d}.png", dpi=120)
        logger.figure("arch/probabilities", figure, epoch + 1)
        logger.text("arch/argmax", "  \n".join(searcher.genotype()), epoch + 1)
        return {**log, **arch_stats, **kept}

    def note(self) -> str:
        return "argmax " + ", ".join(self.searcher.genotype())


def load_supernet(search_run: str | Path, scratch: str | Path) -> Searcher:
    """The trained supernet of the search run directory ``search_run`` (its saved config, space copy, cost
    table and last checkpoint's weights and α) in a :class:`Searcher` whose run directory is ``scratch`` (new;
    its log and TensorBoard files go there), so that the search's run directory is only read. Its
    :meth:`~Searcher.evaluate_architecture` scores architectures with the shared weights."""
    search = open_run_dir(search_run)
    cfg = from_dict(SearchConfig, search.saved_config())
    run_space(search)  # a clear error when it is no search's run directory
    cfg.search.space = str(search.path / SPACE_FILE)
    checkpoint = search.checkpoints / "last.pt"
    if not checkpoint.is_file():
        raise ConfigError(f"'{search.path}' holds no trained supernet yet: {checkpoint} is missing")
    run = create_run_dir(scratch, "search", cfg)
    if (search.path / COST_FILE).is_file():  # the search's table: not measured again
        shutil.copyfile(search.path / COST_FILE, run.path / COST_FILE)
    searcher = Searcher(cfg, run, show_progress=False)
    load_model_state(searcher.model, load_checkpoint(checkpoint)["model"], str(checkpoint))
    return searcher


def dcs_step(searcher: Searcher, epoch: int) -> Step:
    """DCS-DNAS's step of epoch ``epoch``: a weight step on a weight-split batch, after the warm-up
    (``search.warmup_epochs``) followed by an architecture step on the next architecture-split batch."""
    weights = searcher.weight_step(epoch)
    if epoch < searcher.cfg.search.warmup_epochs:
        return weights
    ib_on = searcher.training.ib is not None and searcher.training.ib.active(epoch)
    arch_batches = _cycle(searcher.arch_loader)

    def step(images: torch.Tensor, pids: torch.Tensor) -> StepResult:
        weight = weights(images, pids)
        arch_images, arch_pids, _, _ = next(arch_batches)
        arch = searcher.arch_step(arch_images, arch_pids, ib_on)
        return StepResult({**weight.terms, **arch.terms}, {**weight.dcs_kept, **arch.dcs_kept})

    return step


def _cycle(loader) -> Iterator:
    """The loader's batches, over and over (the architecture split may give fewer batches per epoch)."""
    while True:
        yield from loader
