"""The Lightning side of an NNI search: the data (:class:`ReIDData`), the module NNI trains (:class:`ReIDModule`)
and NNI's evaluator around them (:class:`ReIDEvaluator`).

The module composes the engine's own step pieces (:mod:`dcsnas.engine.steps`), not copies of them: the epoch
start (:func:`~dcsnas.engine.steps.begin_weight_epoch`: DCS τ schedule, PCB-RPP, IB warm-up and refresh),
the loss terms of a batch (:func:`~dcsnas.engine.steps.loss_terms`: criterion + weighted IB bound,
divergence check) and the evaluation (:meth:`dcsnas.engine.trainer.ReIDData.evaluate`), on the NNI model and
the data module's splits. Lightning does the rest (optimizer steps, AMP, device placement); NNI's one-shot
strategies add their architecture steps around it.

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
from dcsnas.engine.device import resolve_device
from dcsnas.engine.distributed import DistContext
from dcsnas.engine.optim import build_optimizer, build_scheduler
from dcsnas.engine.steps import IBTerm, Runtime, begin_weight_epoch, loss_terms
from dcsnas.engine.trainer import ReIDData as RunData
from dcsnas.engine.trainer import pk_loader
from dcsnas.losses.criterion import ReIDCriterion
from dcsnas.nas.split import split_for_search
from dcsnas.nni.config import NNISearchConfig
from dcsnas.nni.deps import Lightning, LightningModule, LightningTrainer, TensorBoardLogger, nni, pl


class ReIDData(pl.LightningDataModule):
    """The data of an NNI search (``config``: a :class:`~dcsnas.nni.config.NNISearchConfig` mapping): the
    engine's :class:`~dcsnas.engine.trainer.ReIDData` (``data``: training identities without the
    ``eval.val_identities`` held-out ones, which become the validation split); for one-shot strategies split
    into the weight split (``train_dataloader``) and the architecture split (``val_dataloader``). The P×K
    loaders are built once and their sampler's epoch set at every epoch start, so every trial sees the same
    batches."""

    def __init__(self, config: dict[str, Any], oneshot: bool):
        super().__init__()
        cfg = self.cfg = from_dict(NNISearchConfig, config)
        dist = DistContext()  # NNI's sequential engine: one process
        self.data = data = RunData.load(cfg)
        self.num_classes = data.num_classes
        weights, arch = (split_for_search(data.train_records, cfg.search.arch_fraction, "per_identity", cfg.seed)
                         if oneshot else (data.train_records, None))
        self.loaders = [pk_loader(weights, data.train_transform, cfg, cfg.seed, "weight" if oneshot else "training",
                                  dist)]
        if arch is not None:
            self.loaders.append(pk_loader(arch, data.train_transform, cfg, cfg.seed + 1, "architecture", dist))

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            loader.batch_sampler.set_epoch(epoch)

    def train_dataloader(self):
        return self.loaders[0]

    def val_dataloader(self):
        return self.loaders[1] if len(self.loaders) > 1 else []


@nni.trace
class ReIDModule(LightningModule):
    """Trains the model NNI sets (``self.model``: a sampled network or the one-shot supernet; ``.model`` its
    :class:`~dcsnas.models.builder.ReIDModel`) with the engine's step pieces (our Re-ID criterion, the IB
    bound after its warm-up, the DCS τ schedule) and evaluates it with our metrics every ``eval.every`` epochs
    and at the end, on the data module's validation split (or the test split); each evaluation's mAP goes to
    ``nni.report_intermediate_result``, the last to ``nni.report_final_result``."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.cfg = from_dict(NNISearchConfig, config)
        self.criterion, self.optimizer, self.result = None, None, None
        self.run_cfg, self.rt, self.ib = self.cfg, None, None

    def setup(self, stage: str) -> None:
        self.criterion = ReIDCriterion(self.cfg.loss, self.trainer.datamodule.num_classes, self.model.embedding_dim)

    def forward(self, x: torch.Tensor):
        return self.model(x)

    def configure_optimizers(self):
        self.optimizer = build_optimizer(self.model, self.cfg.optim)
        return [self.optimizer], [{"scheduler": build_scheduler(self.optimizer, self.cfg.optim), "interval": "epoch"}]

    def on_train_start(self) -> None:
        """The config of this run of ``max_epochs`` epochs (τ and the IB warm-up follow it), the device
        Lightning placed the model on, the IB term."""
        cfg = self.cfg
        self.run_cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, epochs=self.trainer.max_epochs))
        cuda = self.device.type == "cuda"
        # the dtype of Lightning's autocast (see _lightning_trainer); None: fp32, as Lightning runs then
        self.rt = Runtime(DistContext(), self.device, getattr(torch, cfg.amp_dtype) if cfg.amp and cuda else None,
                          cfg.channels_last)
        self.ib = IBTerm(self.run_cfg, self.trainer.datamodule.num_classes, self.device) if cfg.loss.ib_weight > 0 \
            else None

    def refresh_ib(self) -> None:
        data = self.trainer.datamodule.data
        self.ib.refresh(self.model.model, data.train_records, data.test_transform, self.rt)

    def on_train_epoch_start(self) -> None:
        epoch = self.trainer.current_epoch
        begin_weight_epoch(epoch, self.run_cfg, self.model.model, self.optimizer, self.ib, self.refresh_ib)
        self.trainer.datamodule.set_epoch(epoch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, pids = batch[0], batch[1]
        ib = self.ib if self.ib is not None and self.ib.active(self.trainer.current_epoch) else None
        terms, _ = loss_terms(self.model, images, pids, self.criterion, ib, self.rt, self.run_cfg.optim.lr)
        self.log("train/loss", terms["total"].detach(), on_step=False, on_epoch=True, batch_size=len(pids))
        return terms["total"]

    def evaluate(self) -> dict[str, Any]:
        data = self.trainer.datamodule.data
        return data.evaluate(self.model.model, "test" if data.val_split is None else "val", self.run_cfg, self.rt,
                             show_progress=False)

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
