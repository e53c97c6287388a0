"""The training engine of ``dcsnas train`` and ``dcsnas retrain``: P×K batches, the Re-ID losses, the
schedules, AMP and channels-last on CUDA, DDP under ``torchrun``, TensorBoard and progress bars,
evaluation, and an atomic checkpoint at the end of every epoch from which ``--resume`` continues exactly.

The pieces the search and the NNI glue compose as well: :func:`open_runtime` (device, process group, run
directory lock, threads, seed), :class:`ReIDData` (the splits, transforms and P×K loaders),
:class:`WeightTraining` (criterion, optimizers, schedule, scaler, IB) and :class:`WeightReport` (the epoch's
scalars). :class:`Trainer` builds them from a :class:`TrainConfig` and hands them, with the weight step of
:mod:`dcsnas.engine.steps`, to the loop of :mod:`dcsnas.engine.loop`.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from dcsnas.data.base import hold_out_identities
from dcsnas.data.loaders import build_train_loader
from dcsnas.data.transforms import build_transforms
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.console import LOG_FILE, Console
from dcsnas.engine.device import resolve_device
from dcsnas.engine.distributed import DistContext, init_distributed
from dcsnas.engine.evaluator import evaluate_model
from dcsnas.engine.health import HealthMonitor
from dcsnas.engine.logging import RunLogger
from dcsnas.engine.loop import Loop
from dcsnas.engine.optim import build_optimizer, build_scheduler
from dcsnas.engine.rundir import RunDir, lock_run_dir
from dcsnas.engine.steps import IBTerm, Runtime, Step, WeightUpdate, begin_weight_epoch, weight_step
from dcsnas.errors import ConfigError
from dcsnas.losses.criterion import ReIDCriterion
from dcsnas.models.builder import create_model
from dcsnas.utils.flops import count_flops, count_inference_params, count_params
from dcsnas.utils.seed import seed_everything
from dcsnas.utils.threads import default_threads


def open_runtime(cfg: TrainConfig, run: RunDir, show_progress: bool) -> Runtime:
    """The device and process group of a run (under ``torchrun``: after the rendezvous, each rank on its
    GPU); rank 0 locks the run directory and removes leftovers of a killed write; threads; ``seed``."""
    device = resolve_device(cfg.device)
    dist = init_distributed(device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    cuda = device.type == "cuda"
    if dist.is_main:
        lock_run_dir(run)
        stale = run.remove_stale_temp_files()
        if stale:
            warnings.warn(f"removed {len(stale)} temporary file(s) of an interrupted write in '{run.path}' "
                          f"(e.g. {stale[0].name})")
    torch.set_num_threads(cfg.threads or default_threads())
    seed_everything(cfg.seed)
    return Runtime(dist, device, getattr(torch, cfg.amp_dtype) if (cfg.amp and cuda) else None,
                   cfg.channels_last, show_progress and dist.is_main and sys.stderr.isatty())  # no bars in a log


def pk_loader(records: list, transform, cfg: TrainConfig, seed: int, split: str, dist: DistContext):
    """A P×K loader (this rank's share) over ``records``; an error when P×K yields no batch."""
    data = cfg.data
    pids = len({r.pid for r in records})
    error = ConfigError(f"data.p × data.k = {data.p}×{data.k} yields no batch on the {split} split "
                        f"({len(records)} images of {pids} identities); lower data.p or data.k")
    if pids < data.p:
        raise error
    loader = build_train_loader(records, transform, data.p, data.k, data.num_workers, seed, dist.rank, dist.world_size)
    if len(loader) == 0:
        raise error
    return loader


@dataclass
class ReIDData:
    """The data of a run: the data set, the training records (without the ``eval.val_identities`` held-out
    identities, which become ``val_split`` = (query, gallery)), their number of identities, the transforms."""

    dataset: object
    train_records: list
    val_split: tuple | None
    num_classes: int
    train_transform: object
    test_transform: object

    @classmethod
    def load(cls, cfg: TrainConfig) -> ReIDData:
        dataset = cfg.data.load()
        train, val_split = dataset.train, None
        if cfg.eval.val_identities > 0:
            train, query, gallery = hold_out_identities(train, cfg.eval.val_identities, cfg.seed)
            val_split = (query, gallery)
        return cls(dataset, train, val_split, len({r.pid for r in train}),
                   build_transforms(cfg.data.transforms, True), build_transforms(cfg.data.transforms, False))

    def evaluate(self, model: nn.Module, split: str, cfg: TrainConfig, rt: Runtime, show_progress: bool) -> dict:
        """Metrics of ``model`` on the test split (``split='test'``) or the validation split."""
        query, gallery = (self.dataset.query, self.dataset.gallery) if split == "test" else self.val_split
        return evaluate_model(model, query, gallery, self.test_transform, cfg.eval, cfg.data.test_batch_size,
                              rt.device, cfg.data.num_workers, rt.amp_dtype, show_progress)


class WeightTraining:
    """What trains the weights of ``model``: the criterion, the optimizer of ``params`` (a module) and its
    schedule, the centre loss's optimizer, the GradScaler (:class:`~dcsnas.engine.steps.WeightUpdate`), and
    the IB term (``None`` without ``loss.ib_weight``). Built in this order (the random draws of a seed)."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, params: nn.Module, num_classes: int, rt: Runtime):
        self.criterion = ReIDCriterion(cfg.loss, num_classes, model.embedding_dim).to(rt.device)
        self.optimizer = build_optimizer(params, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim)
        center = (torch.optim.SGD(self.criterion.center.parameters(), lr=cfg.loss.center_lr)
                  if self.criterion.center is not None else None)
        scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
        self.updates = WeightUpdate(self.optimizer, center, scaler, self.criterion, cfg.loss.center_weight, rt.dist)
        self.ib = IBTerm(cfg, num_classes, rt.device) if cfg.loss.ib_weight > 0 else None

    def states(self) -> dict:
        """The checkpoint entries (key → holder of a state dict, or ``None``)."""
        return {"criterion": self.criterion, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "center_optimizer": self.updates.center_optimizer, "scaler": self.updates.scaler, "ib": self.ib}


def prepare_model(model: nn.Module, cfg: TrainConfig, rt: Runtime) -> nn.Module:
    """``model`` on the run's device, channels-last on CUDA when asked."""
    model = model.to(rt.device)
    return model.to(memory_format=torch.channels_last) if rt.cuda and cfg.channels_last else model


def wrap_ddp(module: nn.Module, rt: Runtime, find_unused_parameters: bool) -> nn.Module:
    """``module`` in DistributedDataParallel under ``torchrun`` (itself otherwise)."""
    if not rt.dist.enabled:
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[rt.device.index] if rt.cuda else None,
                                               find_unused_parameters=find_unused_parameters)


class WeightReport:
    """The epoch report of a network trained by weight steps: ``loss/*`` (and ``health/*``) means, the
    learning rates, each attention's ``gamma`` and DCS kept ratio, to TensorBoard; the console line prints
    them."""

    def __init__(self, logger: RunLogger, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.logger, self.model, self.optimizer = logger, model, optimizer

    def stats(self) -> dict[str, float]:
        return {}

    def log(self, epoch: int, stats: dict[str, float], kept: dict[str, float]) -> dict[str, float]:
        log = {k if k.startswith("health/") else f"loss/{k}": v for k, v in stats.items()}
        for group in self.optimizer.param_groups:
            log[f"lr/{group['name']}"] = group["lr"]
        for name, module in self.model.attentions.items():
            if hasattr(module, "gamma"):  # a supernet's attention slot holds a choice, not one block
                log[f"attention/{name}/gamma"] = module.gamma.detach().item()
            if name in kept:
                log[f"attention/{name}/dcs_kept_ratio"] = kept[name]
        for name, ratio in kept.items():  # DCS inside a backbone stage (a ViT's blocks), after its attentions
            log.setdefault(f"attention/{name}/dcs_kept_ratio", ratio)
        self.logger.scalars(log, epoch + 1)
        return log

    def note(self) -> str:
        return ""


class LoopHandle:
    """What the commands hold of a run: its loop (``loop``), its runtime (``rt``), ``run``; ``resume()`` then
    ``fit()``. :class:`Trainer` and :class:`~dcsnas.nas.search.Searcher` build the loop."""

    loop: Loop
    rt: Runtime
    run: RunDir

    @property
    def dist(self) -> DistContext:
        return self.rt.dist

    @property
    def start_epoch(self) -> int:
        """The first epoch (0-based) :meth:`fit` trains."""
        return self.loop.start_epoch

    def resume(self) -> None:
        """Continue from the run's ``last.pt`` (:meth:`~dcsnas.engine.loop.Loop.resume`)."""
        self.loop.resume()

    def fit(self) -> dict:
        """Train the remaining epochs; returns (and writes) the run's metrics."""
        return self.loop.fit()


class Trainer(LoopHandle):
    """Trains ``cfg.model`` into the run directory ``run``: ``fit()`` (after ``resume()`` for ``--resume``)
    returns the metrics. The collaborators are built here, in the order of a seed's random draws, and the
    loop (:class:`~dcsnas.engine.loop.Loop`) gets them with the epoch's weight step."""

    def __init__(self, cfg: TrainConfig, run: RunDir, show_progress: bool = True):
        self.cfg, self.run = cfg, run
        self.rt = rt = open_runtime(cfg, run, show_progress)
        self.data = ReIDData.load(cfg)
        self.model = prepare_model(create_model(cfg.model, self.data.num_classes), cfg, rt)
        self.training = WeightTraining(cfg, self.model, self.model, self.data.num_classes, rt)
        self.train_model = wrap_ddp(self.model, rt, cfg.model.head == "pcb" or bool(cfg.loss.ib_weight))
        self.train_loader = pk_loader(self.data.train_records, self.data.train_transform, cfg, cfg.seed, "training",
                                      rt.dist)
        logger = RunLogger(run.tensorboard, enabled=rt.dist.is_main)
        self.loop = Loop(
            cfg=cfg, run=run, rt=rt, model=self.model, loader=self.train_loader, begin=self.begin_epoch,
            scheduler=self.training.scheduler, evaluate=self.evaluate,
            report=WeightReport(logger, self.model, self.training.optimizer), states=self.training.states(),
            logger=logger, console=Console(run.path / LOG_FILE, enabled=rt.dist.is_main),
            health=HealthMonitor.for_run(cfg.optim.epochs, cfg.optim.warmup_epochs), title="training",
            summary=self.model_summary, dataset=self.data.dataset, num_classes=self.data.num_classes,
            validation=self.data.val_split is not None)

    def refresh_ib(self) -> None:
        self.training.ib.refresh(self.model, self.data.train_records, self.data.test_transform, self.rt)

    def begin_epoch(self, epoch: int) -> Step:
        """Start epoch ``epoch`` (0-based; schedules, IB refresh, the sampler's epoch); its weight step."""
        ib = self.training.ib
        begin_weight_epoch(epoch, self.cfg, self.model, self.training.optimizer, ib, self.refresh_ib)
        self.train_loader.batch_sampler.set_epoch(epoch)
        return weight_step(self.train_model, self.training.criterion, ib if ib is not None and ib.active(epoch)
                           else None, self.training.updates, self.rt, self.cfg.optim.lr)

    def evaluate(self, split: str = "test", show_progress: bool | None = None) -> dict:
        """Metrics on the test split (``split='test'``) or the validation split carved from training."""
        return self.data.evaluate(self.model, split, self.cfg, self.rt,
                                  self.rt.show_progress if show_progress is None else show_progress)

    def model_summary(self) -> str:
        """One line: the network, its parameters (those the inference forward uses) and FLOPs per image."""
        cfg = self.cfg.model
        shape = (1, 3, self.cfg.data.transforms.height, self.cfg.data.transforms.width)
        with torch.random.fork_rng(devices=[self.rt.device] if self.rt.cuda else []):
            used = count_inference_params(self.model, shape, self.rt.device)
            flops = count_flops(self.model, shape, self.rt.device)
        attention = ", ".join(f"{a.name}@{a.stage}" for a in cfg.attention) or "no attention"
        return (f"model: {cfg.backbone} ({attention}, {cfg.head} head): {used / 1e6:.3f} M parameters at "
                f"inference ({count_params(self.model) / 1e6:.3f} M with the training-only classifiers), "
                f"{flops / 1e6:.1f} MFLOPs per image at {shape[2]}×{shape[3]}")
