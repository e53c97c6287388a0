"""What a training step is made of, for every loop that trains a Re-ID network (``train``, ``retrain``,
``search``, the NNI Lightning glue): where it runs (:class:`Runtime`), the forward and its loss terms
(:func:`loss_terms`), the IB bound's collaborator (:class:`IBTerm`: warm-up, input, refresh), the weights'
update (:class:`WeightUpdate`: optimizer, schedule, centres, GradScaler), the work at the start of an epoch
(:func:`begin_weight_epoch`) and the plain weight step (:func:`weight_step`).

A *step* is a callable ``step(images, pids) -> StepResult``: it runs as many forward and backward passes and
optimizer steps as it needs on one batch (the search's runs a weight step, then an architecture step on a
batch of its own) and returns its loss terms and the DCS statistics of its forwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import nn

from dcsnas.attention import DCSAttention
from dcsnas.attention.token_dcs import TokenAttention
from dcsnas.data.loaders import build_test_loader
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.distributed import DistContext, all_reduce_mean, broadcast_tensors, gather_strided
from dcsnas.engine.health import batch_health
from dcsnas.errors import ConfigError
from dcsnas.losses import InformationBottleneck
from dcsnas.losses.criterion import ReIDCriterion
from dcsnas.utils.progress import progress


class StepResult(NamedTuple):
    """What a step returns: ``terms`` (name → 0-dim tensor; averaged over the epoch and logged every
    ``log_every`` steps) and ``dcs_kept`` (DCS module name → kept-channel ratio of the step's last forward)."""

    terms: dict[str, torch.Tensor]
    dcs_kept: dict[str, torch.Tensor]


Step = Callable[[torch.Tensor, torch.Tensor], StepResult]


@dataclass
class Runtime:
    """Where a loop runs: the process group, the device, AMP's dtype (``None``: float32), channels-last
    inputs, progress bars."""

    dist: DistContext
    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    show_progress: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch on the device (channels-last on CUDA when asked)."""
        images = images.to(self.device, non_blocking=True)
        if self.cuda and self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


def dcs_modules(model: nn.Module) -> list[nn.Module]:
    """The DCS attention modules of ``model`` (those with a gate temperature ``tau``: CNN blocks and the
    gated attention of ViT blocks)."""
    return [m for m in model.modules()
            if isinstance(m, DCSAttention) or (isinstance(m, TokenAttention) and m.gate is not None)]


def tau_at(epoch: int, epochs: int, start: float, end: float) -> float:
    """Exponential schedule from ``start`` (epoch 0) to ``end`` (last epoch)."""
    return start * (end / start) ** (epoch / max(epochs - 1, 1))


class IBTerm:
    """The IB bound of DESIGN §4 in a loop: k = ``loss.ib_clusters`` (default: the training identities) for
    F and X; active from ``loss.ib_start_epoch``; its X is the input pooled to ``loss.ib_input_size``."""

    def __init__(self, cfg: TrainConfig, num_classes: int, device: torch.device):
        self.cfg, self.num_classes = cfg, num_classes
        k = cfg.loss.ib_clusters or num_classes
        self.bound = InformationBottleneck(num_feature_clusters=k, num_input_clusters=k, seed=cfg.seed,
                                           ixf=cfg.loss.ib_ixf).to(device)

    def active(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) trains with the IB term (its warm-up is over)."""
        return epoch >= self.cfg.loss.ib_start_epoch(self.cfg.optim.epochs)

    def input(self, images: torch.Tensor) -> torch.Tensor:
        """The bound's X: ``images`` [B, 3, H, W] average-pooled to ``loss.ib_input_size``, flattened [B, D]."""
        return nn.functional.adaptive_avg_pool2d(images.float(), self.cfg.loss.ib_input_size).flatten(1)

    def terms(self, pooled: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``ib_ixf``, ``ib_iyf`` (detached) and ``ib`` (weighted by ``loss.ib_weight``) of a batch."""
        ib = self.bound(pooled.float(), self.input(images), labels)
        return {"ib_ixf": ib["ixf"].detach(), "ib_iyf": ib["iyf"].detach(), "ib": self.cfg.loss.ib_weight * ib["total"]}

    @torch.no_grad()
    def refresh(self, model: nn.Module, records: list, transform, rt: Runtime) -> None:
        """Recompute F's centroids and Q(a|y) (and, the first time, X's centroids) on ``records``: eval
        transforms, BN in eval mode, no gradient. Under DDP each rank embeds every world_size-th image, the
        features are all-gathered in the split's order, rank 0 clusters them and broadcasts the result, so
        every rank holds the same centroids and Q."""
        features, inputs, labels = [], [], []
        was_training = model.training
        model.eval()
        loader = build_test_loader(records[rt.dist.rank::rt.dist.world_size], transform,
                                   self.cfg.data.test_batch_size, self.cfg.data.num_workers)
        for images, pids, _, _ in progress(loader, "IB refresh", enabled=rt.show_progress):
            images = images.to(rt.device)
            with rt.autocast():
                fmap = model.forward_features(images)
            features.append(fmap.float().mean(dim=(2, 3)))
            inputs.append(self.input(images))
            labels.append(pids.to(rt.device))
        model.train(was_training)
        gathered = [gather_strided(torch.cat(t), rt.dist) for t in (features, inputs, labels)]
        if rt.dist.is_main:
            self.bound.refresh(*gathered, self.num_classes)
        state = broadcast_tensors(self.bound.state_dict() if rt.dist.is_main else None, rt.dist, rt.device)
        self.bound.load_state_dict(state)

    def state_dict(self) -> dict:
        return self.bound.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.bound.load_state_dict(state)


def loss_terms(forward: Callable, images: torch.Tensor, pids: torch.Tensor, criterion: ReIDCriterion,
               ib: IBTerm | None, rt: Runtime, lr: float) -> tuple[dict[str, torch.Tensor], dict]:
    """Forward one batch through ``forward`` (the model, or its DDP wrapper); the criterion's terms, plus
    ``ib`` (weighted, in ``total``) when ``ib`` is given, and the batch's ``health/*`` figures (not in
    ``total``); and the model's training outputs. A non-finite total is a :class:`ConfigError` (``lr``: the
    learning rate it names)."""
    images = rt.inputs(images)
    labels = pids.to(rt.device, non_blocking=True)
    with rt.autocast():
        outputs = forward(images)
    terms = criterion(outputs, labels)
    logits = outputs.get("logits")
    terms.update(batch_health(outputs["features"], logits[0] if logits else None, labels,
                              logits[0].shape[1] if logits else 0))
    if ib is not None:
        terms.update(ib.terms(outputs["pooled"], images, labels))
        terms["total"] = terms["total"] + terms["ib"]
    if not torch.isfinite(terms["total"]):
        raise ConfigError(f"training diverged: the loss is {terms['total'].item()} (optim.lr = {lr}); lower "
                          "optim.lr or switch amp off")
    return terms, outputs


class WeightUpdate:
    """The weights' optimizer, the centre loss's optimizer (or ``None``) and the GradScaler; ``update(total)``
    is one step of them."""

    def __init__(self, optimizer: torch.optim.Optimizer, center_optimizer: torch.optim.Optimizer | None,
                 scaler: torch.amp.GradScaler, criterion: ReIDCriterion, center_weight: float, dist: DistContext):
        self.optimizer, self.center_optimizer, self.scaler = optimizer, center_optimizer, scaler
        self.criterion, self.center_weight, self.dist = criterion, center_weight, dist

    def update(self, total: torch.Tensor) -> None:
        """Backward ``total`` and step the weights (and the centres)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.center_optimizer is not None:
            self.center_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        if self.center_optimizer is not None:
            self._step_centers()
        self.scaler.update()

    def _step_centers(self) -> None:
        """Center loss: its gradient is divided by the loss weight so ``center_lr`` alone sets the centres'
        step (BoT); averaged over DDP ranks."""
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.center_optimizer)
        for p in self.criterion.center.parameters():
            if p.grad is not None:
                p.grad = all_reduce_mean(p.grad / self.center_weight, self.dist)
        self.scaler.step(self.center_optimizer)


def begin_weight_epoch(epoch: int, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                       ib: IBTerm | None, refresh_ib: Callable[[], None]) -> None:
    """The start of epoch ``epoch`` (0-based): the DCS temperature schedule, PCB-RPP (refined head; only the
    part classifier learns in its first epochs) and, once the IB warm-up is over, ``refresh_ib()``."""
    for module in dcs_modules(model):
        module.tau = tau_at(epoch, cfg.optim.epochs, cfg.schedule.dcs_tau_start, cfg.schedule.dcs_tau_end)
    rpp_start = cfg.schedule.rpp_start_epoch
    if rpp_start >= 0 and epoch >= rpp_start:
        model.head.refined = True
        if epoch < rpp_start + cfg.schedule.rpp_classifier_epochs:
            for group in optimizer.param_groups:
                if group["name"] != "part_classifier":
                    group["lr"] = 0.0
    if ib is not None and ib.active(epoch):
        refresh_ib()


def weight_step(forward: Callable, criterion: ReIDCriterion, ib: IBTerm | None, updates: WeightUpdate,
                rt: Runtime, lr: float) -> Step:
    """The step of ``train`` and ``retrain``: one update of the weights (and the centres) on a batch, with the
    IB term when ``ib`` is given (pass ``None`` during its warm-up)."""

    def step(images: torch.Tensor, pids: torch.Tensor) -> StepResult:
        terms, outputs = loss_terms(forward, images, pids, criterion, ib, rt, lr)
        updates.update(terms["total"])
        return StepResult(terms, outputs.get("dcs_kept", {}))

    return step
