"""The Lightning side of an NNI search: the data (:class:`ReIDData`), the module NNI trains (:class:`ReIDModule`)
and NNI's evaluator around them (:class:`ReIDEvaluator`).

The module drives the project's own :class:`~dcsnas.engine.trainer.Trainer` pieces, not copies of them: the
epoch start (DCS τ schedule, PCB-RPP, IB warm-up and refresh, the P×K sampler's epoch), the loss terms of a
batch (criterion + weighted IB bound, divergence check) and the evaluation are the Trainer's methods, run by
:class:`TrainerSteps` on the NNI model and the data module's splits. Lightning does the rest (optimizer
steps, AMP, device placement); NNI's one-shot strategies add their architecture steps around it.

NNI 3.0's Lightning evaluator reuses one Lightning trainer for every trial, which has then already reached
``max_epochs``; :class:`ReIDEvaluator` makes a fresh one (and a fresh module) per trial.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dcsnas.config import from_dict
from dcsnas.data.base import hold_out_identities
from dcsnas.data.transforms import build_transforms
from dcsnas.engine.device import resolve_device
from dcsnas.engine.distributed import DistContext
from dcsnas.engine.optim import build_optimizer, build_scheduler
from dcsnas.engine.trainer import Trainer
from dcsnas.losses.criterion import ReIDCriterion
from dcsnas.nas.split import split_for_search
from dcsnas.nni.config import NNISearchConfig
from dcsnas.nni.deps import Lightning, LightningModule, LightningTrainer, TensorBoardLogger, nni, pl


class ReIDData(pl.LightningDataModule):
    """The data of an NNI search (``config``: a :class:`~dcsnas.nni.config.NNISearchConfig` mapping): the
    training identities (without ``eval.val_identities`` held-out ones, which become the validation split);
    for one-shot strategies split into the weight split (``train_dataloader``) and the architecture split
    (``val_dataloader``). The P×K loaders are built once (the Trainer's :meth:`~Trainer.build_loader`) and
    their sampler's epoch set at every epoch start, so every trial sees the same batches."""

    build_loader = Trainer.build_loader  # reads cfg, dist, train_transform

    def __init__(self, config: dict[str, Any], oneshot: bool):
        super().__init__()
        cfg = self.cfg = from_dict(NNISearchConfig, config)
        self.dist = DistContext()  # NNI's sequential engine: one process
        self.dataset = cfg.data.load()
        train, self.val_split = self.dataset.train, None
        if cfg.eval.val_identities > 0:
            train, query, gallery = hold_out_identities(train, cfg.eval.val_identities, cfg.seed)
            self.val_split = (query, gallery)
        self.train_records = train
        self.num_classes = len({r.pid for r in train})
        self.train_transform = build_transforms(cfg.data.transforms, True)
        self.test_transform = build_transforms(cfg.data.transforms, False)
        weights, arch = (split_for_search(train, cfg.search.arch_fraction, "per_identity", cfg.seed)
                         if oneshot else (train, None))
        self.loaders = [self.build_loader(weights, cfg.seed, "weight" if oneshot else "training")]
        if arch is not None:
            self.loaders.append(self.build_loader(arch, cfg.seed + 1, "architecture"))

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            loader.batch_sampler.set_epoch(epoch)

    def train_dataloader(self):
        return self.loaders[0]

    def val_dataloader(self):
        return self.loaders[1] if len(self.loaders) > 1 else []


class TrainerSteps:
    """The :class:`~dcsnas.engine.trainer.Trainer`'s epoch and batch steps on an NNI model: its methods
    ``begin_epoch``, ``ib_active``, ``ib_input``, ``refresh_ib``, ``loss_terms`` and ``evaluate``, with the
    attributes they read. ``net`` is the model NNI set (a sampled network or the one-shot supernet; its
    forward is a :class:`~dcsnas.models.builder.ReIDModel`'s), ``cfg`` the config of this run of ``epochs``
    epochs (τ and the IB warm-up follow it), ``optimizer`` the weights' optimizer (PCB-RPP's learning rates)."""

    begin_epoch = Trainer.begin_epoch
    ib_active = Trainer.ib_active
    ib_input = Trainer.ib_input
    refresh_ib = Trainer.refresh_ib
    loss_terms = Trainer.loss_terms
    evaluate = Trainer.evaluate
    _build_ib = Trainer._build_ib

    def __init__(self, cfg: NNISearchConfig, net: nn.Module, data: ReIDData, optimizer: torch.optim.Optimizer,
                 device: torch.device):
        self.cfg, self.device, self.optimizer = cfg, device, optimizer
        self.train_model, self.model = net, net.model  # loss_terms calls the former, the rest use the latter
        self.cuda = device.type == "cuda"
        # the dtype of Lightning's autocast (see _lightning_trainer); None: fp32, as Lightning runs then
        self.amp_dtype = getattr(torch, cfg.amp_dtype) if cfg.amp and self.cuda else None
        self.dist, self.show_progress = DistContext(), False
        self.dataset, self.val_split = data.dataset, data.val_split
        self.train_records, self.num_classes = data.train_records, data.num_classes
        self.test_transform, self.train_loader = data.test_transform, data.loaders[0]
        self.ib = self._build_ib() if cfg.loss.ib_weight > 0 else None


@nni.trace
class ReIDModule(LightningModule):
    """Trains the model NNI sets with the Trainer's steps (:class:`TrainerSteps`: our Re-ID criterion, the IB
    bound after its warm-up, the DCS τ schedule) and evaluates it with our metrics every ``eval.every``
    epochs and at the end, on the data module's validation split (or the test split); each evaluation's mAP
    goes to ``nni.report_intermediate_result``, the last to ``nni.report_final_result``."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.cfg = from_dict(NNISearchConfig, config)
        self.criterion, self.optimizer, self.steps, self.result = None, None, None, None

    def setup(self, stage: str) -> None:
        self.criterion = ReIDCriterion(self.cfg.loss, self.trainer.datamodule.num_classes, self.model.embedding_dim)

    def forward(self, x: torch.Tensor):
        return self.model(x)

    def configure_optimizers(self):
        self.optimizer = build_optimizer(self.model, self.cfg.optim)
        return [self.optimizer], [{"scheduler": build_scheduler(self.optimizer, self.cfg.optim), "interval": "epoch"}]

    def on_train_start(self) -> None:
        """The Trainer's steps for this run of ``max_epochs`` epochs, on the device Lightning placed the model."""
        cfg = self.cfg
        run_cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, epochs=self.trainer.max_epochs))
        self.steps = TrainerSteps(run_cfg, self.model, self.trainer.datamodule, self.optimizer, self.device)

    def on_train_epoch_start(self) -> None:
        epoch = self.trainer.current_epoch
        self.steps.begin_epoch(epoch)
        self.trainer.datamodule.set_epoch(epoch)  # the architecture split's loader too

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, pids = batch[0], batch[1]
        terms = self.steps.loss_terms(images, pids, self.criterion, self.steps.ib_active(self.trainer.current_epoch))
        self.log("train/loss", terms["total"].detach(), on_step=False, on_epoch=True, batch_size=len(pids))
        return terms["total"]

    def evaluate(self) -> dict[str, Any]:
        return self.steps.evaluate("test" if self.steps.val_split is None else "val", show_progress=False)

    def on_train_epoch_end(self) -> None:
        epoch, every = self.trainer.current_epoch + 1, self.cfg.eval.every
        if epoch == self.trainer.max_epochs or (every > 0 and epoch % every == 0):
            self.result = self.evaluate()
            self.log("eval/mAP", self.result["mAP"])
            nni.report_intermediate_result(self.result["mAP"])

    def on_fit_end(self) -> None:
        if self.result is not None:
            nni.report_final_result(self.result["mAP"])


def _lightning_trainer(cfg: NNISearchConfig, root: Path, epochs: int, show_progress: bool):
    """NNI's traced Lightning trainer: logs (TensorBoard) under ``root``, no checkpoints, bf16 AMP on CUDA."""
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    return LightningTrainer(
        max_epochs=epochs, accelerator="gpu" if cuda else "cpu",
        devices=[device.index or 0] if cuda else 1,
        precision=("bf16-mixed" if cfg.amp_dtype == "bfloat16" else "16-mixed") if cfg.amp and cuda else "32-true",
        default_root_dir=str(root), logger=TensorBoardLogger(str(root), name="tb", version=""),
        enable_checkpointing=False, enable_progress_bar=show_progress, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=cfg.log_every)


@nni.trace
class ReIDEvaluator(Lightning):
    """NNI's Lightning evaluator with :class:`ReIDModule` and :class:`ReIDData`. Multi-trial strategies
    evaluate many models with it: each gets a fresh module and trainer (see the module docstring), logging to
    ``root/trials/<n>``."""

    def __init__(self, config: dict[str, Any], root: str, oneshot: bool, show_progress: bool = True):
        cfg = from_dict(NNISearchConfig, config)
        self.config, self.root, self.show_progress = config, Path(root), show_progress
        self.epochs = cfg.optim.epochs if oneshot else cfg.nni.trial_epochs or cfg.optim.epochs
        self.trials = 0
        super().__init__(ReIDModule(config), _lightning_trainer(cfg, self.root, self.epochs, show_progress),
                         datamodule=ReIDData(config, oneshot))

    def evaluate(self, model: nn.Module):
        self.trials += 1
        cfg = from_dict(NNISearchConfig, self.config)
        self.module = ReIDModule(self.config)
        self.trainer = _lightning_trainer(cfg, self.root / "trials" / str(self.trials), self.epochs,
                                          self.show_progress)
        return super().evaluate(model)
