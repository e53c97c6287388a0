"""The NNI 3.0 bridge (DESIGN §6): NNI's NAS strategies on our search spaces, and NNI's hyper-parameter
experiments over ``dcsnas`` trials. The only dcsnas module that imports NNI; no other module imports it at
module level, so dcsnas works without NNI, and importing it without NNI raises a
:class:`~dcsnas.errors.ConfigError` with the install command.

**Model space** (:class:`ReIDSpace`): a search-space file as an NNI ``ModelSpace`` built from the blocks of
:mod:`dcsnas.models.blocks`, the attentions and the Re-ID heads. Every searchable choice of the file is one
NNI mutable with the same label (``s1/0/op``) and candidates: op and attention choices are ``LayerChoice``s
(candidate names ``ir_k3_e3``, ``none``, ``csalr-g2``), width choices ``nni.choice``s of the widths. A
sampled (frozen) model holds exactly the modules :func:`~dcsnas.models.searched.build_searched_backbone`
builds for that architecture. For the one-shot strategies, blocks whose widths are searched become the
FBNetV2 channel-masked ops of :mod:`dcsnas.nas.ops` weighted by NNI's architecture parameters
(:class:`_WidthMixed`); op and attention choices are NNI's own mixed layers. :func:`sample_indices` turns
an NNI sample back into option indices, so every search ends in the same ``arch.json``.

**Search** (:func:`run_nni_search`, ``dcsnas search --strategy nni:*``): random and regularized evolution
train each sampled architecture with :class:`ReIDModule` (our losses, our metrics; mAP reported to NNI);
DARTS and GumbelDARTS train the supernet with it (weight steps on the weight split, architecture steps on
the architecture split of :func:`~dcsnas.nas.split.split_for_search`). All run in this process (NNI's
sequential engine), so no NNI manager or web UI is started.

**Tune** (:func:`run_tune`, ``dcsnas tune``): an NNI HPO experiment whose trials run
``python -m dcsnas.nas.nni_bridge trial ...`` (:func:`run_trial`): a ``dcsnas train``/``retrain`` run that
reports its metric to NNI after every evaluation and at the end.

NNI 3.0 with torch 2.x and Lightning 2.x, worked around here: NNI's warnings on import are silenced and its
console log too (it goes to ``experiment.log`` in the run directory); NNI's Lightning evaluator reuses one
Lightning trainer for every trial, so :class:`ReIDEvaluator` makes a fresh one per trial; the NNI manager's
HTTP server listens on all interfaces, so a ``--require`` preload for its Node.js process binds it to
loopback (:func:`_manager_environment`).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from dcsnas.errors import ConfigError
from dcsnas.tune import INSTALL_HINT

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NNI 3.0 warns about torch internals on import
        import nni
        import pytorch_lightning as pl
        from nni.mutable import Categorical, ensure_frozen, label_scope
        from nni.nas.evaluator.pytorch import Lightning, LightningModule
        from nni.nas.evaluator.pytorch import Trainer as LightningTrainer
        from nni.nas.nn.pytorch import LayerChoice, ModelSpace, ParametrizedModule
        from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
        from nni.runtime.log import silence_stdout
except ImportError as exc:
    raise ConfigError(f"NNI is not available ({exc}); install it with: {INSTALL_HINT}") from None

from dcsnas.config import from_dict, read_yaml, to_dict
from dcsnas.engine.rundir import RunDir
from dcsnas.models.blocks import build_op, conv_head, parse_op, stem
from dcsnas.models.builder import ReIDModel
from dcsnas.models.heads import HEADS
from dcsnas.nas.ops import MaskedInvertedResidual, MaskedSkip, channel_mask, mask_matrix
from dcsnas.nas.space import CONV_HEAD, STEM, Choice, MobileNetV2Space, SearchSpace, parse_space
from dcsnas.tune import NNI_STRATEGIES, NNISearchConfig, TuneConfig, check_trial_keys, write_summary

ONESHOT = ("nni:darts", "nni:gumbel-darts")

# ------------------------------------------------------------------------------------------ model space


def _labelled(key: str, make: Callable[[str], Any]) -> Any:
    """``make(name)`` inside NNI label scopes, so that the mutable's label is our choice key ``a/b/name``
    (NNI forbids ``/`` in a label and builds hierarchical labels from scopes)."""
    *scopes, name = key.split("/")
    with ExitStack() as stack:
        for scope in scopes:
            stack.enter_context(label_scope(scope))
        return make(name)


class _Candidate(ParametrizedModule):
    """A candidate whose keyword arguments may be ``nni.choice``s: ``build(**arguments)`` at their default
    values in the model space; in a frozen model, the built module itself at the sampled values."""

    build: Callable[..., nn.Module]

    def __init__(self, **arguments: Any):
        super().__init__()
        self.body = type(self).build(**arguments)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    @classmethod
    def should_invoke_fixed_module(cls) -> bool:
        return True

    @classmethod
    def create_fixed_module(cls, sample: dict, *args: Any, **kwargs: Any) -> nn.Module:
        _, kwargs = cls.freeze_init_arguments(sample, **kwargs)
        return cls.build(**kwargs)


def _attention(name: str, options: dict[str, Any], channels: int) -> nn.Module:
    from dcsnas.attention import create_attention

    return create_attention(name, channels, **options)


class _Op(_Candidate, disable_init_wrapper=True):
    build = staticmethod(build_op)  # (name, in_channels, out_channels, stride)


class _Attention(_Candidate, disable_init_wrapper=True):
    build = staticmethod(_attention)  # (name, options, channels)


class _ConvHead(_Candidate, disable_init_wrapper=True):
    build = staticmethod(conv_head)  # (in_channels, out_channels)


class _SpaceBuilder:
    """NNI mutables for the choices of one space: one ``nni.choice`` object per width key, a
    ``LayerChoice`` per op or attention choice (a searchable one; a fixed choice is its only option)."""

    def __init__(self) -> None:
        self.widths: dict[str, Any] = {}

    def width(self, choice: Choice) -> Any:
        if not choice.searchable:
            return choice.options[0]
        if choice.key not in self.widths:
            self.widths[choice.key] = _labelled(choice.key, lambda name: nni.choice(name, list(choice.options)))
        return self.widths[choice.key]

    @staticmethod
    def layer(choice: Choice, build: Callable[[Any], nn.Module]) -> nn.Module:
        if not choice.searchable:
            return build(choice.options[0])
        candidates = {label: build(option) for label, option in zip(choice.labels, choice.options)}
        return _labelled(choice.key, lambda name: LayerChoice(candidates, label=name))

    def attention(self, choice: Choice, channels: Any) -> nn.Module:
        return self.layer(choice, lambda c: nn.Identity() if c is None else _Attention(
            name=c.name, options=dict(c.options), channels=channels))


def _space_backbone(space: SearchSpace):
    """The backbone of the model space of ``space`` (see the module docstring)."""
    from dcsnas.models.backbones import Backbone, resnet50

    build = _SpaceBuilder()
    if not isinstance(space, MobileNetV2Space):
        net = resnet50(space.pretrained, space.last_stride)
        searched = {s.name: i for i, s in enumerate(space.stages)}
        stages = {name: nn.Sequential(module, build.attention(space.attention_choice(searched[name]),
                                                              net.stage_channels[name]))
                  if name in searched else module for name, module in net.stages.items()}
        return Backbone(stages, net.stage_channels, net.stage_strides)
    stages: dict[str, nn.Module] = {STEM: stem(space.stem_channels, space.stem_stride)}
    channels, strides = {STEM: space.stem_channels}, {STEM: space.stem_stride}
    slots, stride = list(space.blocks()), space.stem_stride
    for i, stage in enumerate(space.stages):
        blocks = [build.layer(s.op, lambda op, s=s: _Op(name=op, in_channels=build.width(s.width_in),
                                                        out_channels=build.width(s.width_out), stride=s.stride))
                  for s in slots if s.stage == stage.name]
        width = build.width(space.width_choice(i))
        stages[stage.name] = nn.Sequential(*blocks, build.attention(space.attention_choice(i), width))
        stride *= stage.stride
        channels[stage.name], strides[stage.name] = ensure_frozen(width), stride
    stages[CONV_HEAD] = _ConvHead(in_channels=build.width(space.width_choice(len(space.stages) - 1)),
                                  out_channels=space.head_channels)
    channels[CONV_HEAD], strides[CONV_HEAD] = space.head_channels, stride
    return Backbone(stages, channels, strides)


class ReIDSpace(ModelSpace):
    """The NNI model space of a search space (the YAML mapping ``space``) with a Re-ID ``head`` for
    ``num_classes`` identities; ``forward`` is that of :class:`~dcsnas.models.builder.ReIDModel`."""

    def __init__(self, space: dict[str, Any], num_classes: int, head: str = "bnneck"):
        super().__init__()
        backbone = _space_backbone(parse_space(space, str(space.get("name", "search space"))))
        self.model = ReIDModel(backbone, HEADS[head](backbone.out_channels, num_classes), {}, {})

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim

    def forward(self, x: torch.Tensor):
        return self.model(x)

    def extra_oneshot_hooks(self, strategy) -> list[Callable]:
        """One-shot strategies: candidates with searched widths become :class:`_WidthMixed`."""
        return [_WidthMixed.mutate]


class _MaskedAttention(nn.Module):
    """``forward(x, w)``: the attention at the widest width, its output masked to the width weights ``w``."""

    def __init__(self, attention: nn.Module, widths: tuple[int, ...]):
        super().__init__()
        self.attention = attention
        self.register_buffer("masks", mask_matrix(widths), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = self.attention(x)
        return y * channel_mask(w, self.masks, y) if len(w) > 1 else y


class _Widest(nn.Module):
    """``forward(x, *weights)``: the module at the widest input width (channels beyond the active width are 0)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class _WidthMixed(BaseSuperNetModule):
    """One-shot form of a :class:`_Candidate` whose widths are searched: ``body(x, *w)`` at the widest
    widths, with w = softmax(α) of NNI's architecture parameter per width label (``[1.]`` for a fixed width);
    ``softmax`` is the strategy's (Gumbel-softmax for GumbelDARTS). Exports the argmax width per label."""

    def __init__(self, body: nn.Module, widths: list[tuple[Optional[str], tuple[int, ...], Optional[nn.Parameter]]],
                 softmax: nn.Module):
        super().__init__()
        self.body, self.softmax = body, softmax
        self.widths = [(label, values) for label, values, _ in widths]
        self.alphas = nn.ParameterList([alpha for _, _, alpha in widths if alpha is not None])

    def _weights(self) -> list[torch.Tensor]:
        alphas = iter(self.alphas)
        return [self.softmax(next(alphas)) if label is not None else torch.ones(1, device=self.alphas[0].device)
                for label, _ in self.widths]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x, *self._weights())

    def _searched(self) -> Iterator[tuple[str, tuple[int, ...], nn.Parameter]]:
        alphas = iter(self.alphas)
        for label, values in self.widths:
            if label is not None:
                yield label, values, next(alphas)

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {}

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {label: values[int(alpha.argmax())] for label, values, alpha in self._searched() if label not in memo}

    def export_probs(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {label: dict(zip(values, self.softmax(alpha).tolist()))
                for label, values, alpha in self._searched() if label not in memo}

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.alphas

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]):
        if not isinstance(module, _Candidate) or not module.mutables:
            return None
        args = module.trace_kwargs

        def width(value) -> tuple[Optional[str], tuple[int, ...], Optional[nn.Parameter]]:
            if isinstance(value, Categorical):
                return value.label, tuple(value.values), memo[value.label]
            return None, (value,), None

        if isinstance(module, _Op):
            w_in, w_out = width(args["in_channels"]), width(args["out_channels"])
            spec = parse_op(args["name"])
            body = MaskedSkip() if spec is None else MaskedInvertedResidual(
                w_in[1], w_out[1], args["stride"], *spec, shared=w_in[0] is not None and w_in[0] == w_out[0])
            widths = [w_in, w_out]
        elif isinstance(module, _Attention):
            widths = [width(args["channels"])]
            body = _MaskedAttention(_attention(args["name"], args["options"], max(widths[0][1])), widths[0][1])
        else:
            widths = [width(args["in_channels"])]
            body = _Widest(conv_head(max(widths[0][1]), args["out_channels"]))
        return cls(body, widths, mutate_kwargs["softmax"])


def sample_indices(space: SearchSpace, sample: dict[str, Any]) -> dict[str, int]:
    """NNI's sample (label → candidate name or width) as the option index of every choice of ``space``."""
    indices = {}
    for choice in space.choices():
        if not choice.searchable:
            indices[choice.key] = 0
            continue
        if choice.key not in sample:
            raise ValueError(f"NNI's architecture has no value for the choice {choice.key!r}")
        indices[choice.key] = choice.labels.index(str(sample[choice.key]))
    return indices


# ------------------------------------------------------------------------------------------ evaluator


class ReIDData(pl.LightningDataModule):
    """The data of an NNI search (``config``: a :class:`~dcsnas.tune.NNISearchConfig` mapping): the
    training identities (without ``eval.val_identities`` held-out ones); for one-shot strategies split into
    the weight split (``train_dataloader``) and the architecture split (``val_dataloader``)."""

    def __init__(self, config: dict[str, Any], oneshot: bool):
        from dcsnas.data.base import hold_out_identities
        from dcsnas.data.transforms import build_transforms
        from dcsnas.nas.split import split_for_search

        super().__init__()
        cfg = self.cfg = from_dict(NNISearchConfig, config)
        dataset = cfg.data.load()
        train, self.eval_split = dataset.train, (dataset.query, dataset.gallery)
        if cfg.eval.val_identities > 0:
            train, query, gallery = hold_out_identities(train, cfg.eval.val_identities, cfg.seed)
            self.eval_split = (query, gallery)
        self.train_records = train
        self.num_classes = len({r.pid for r in train})
        self.splits = (split_for_search(train, cfg.search.arch_fraction, "per_identity", cfg.seed)
                       if oneshot else (train, None))
        self.train_transform = build_transforms(cfg.data.transforms, True)
        self.test_transform = build_transforms(cfg.data.transforms, False)

    def _loader(self, records, seed: int):
        from dcsnas.data.loaders import build_train_loader

        cfg = self.cfg.data
        loader = build_train_loader(records, self.train_transform, cfg.p, cfg.k, cfg.num_workers, seed)
        if len(loader) == 0:
            raise ConfigError(f"data.p × data.k = {cfg.p}×{cfg.k} yields no batch on a split of {len(records)} "
                              "images; lower data.p or data.k")
        return loader

    def train_dataloader(self):
        return self._loader(self.splits[0], self.cfg.seed)

    def val_dataloader(self):
        return [] if self.splits[1] is None else self._loader(self.splits[1], self.cfg.seed + 1)


@nni.trace
class ReIDModule(LightningModule):
    """Trains the model NNI sets (a sampled network or the one-shot supernet) with our Re-ID criterion
    (+ the IB bound after its warm-up, DCS temperature schedule as in the trainer) and evaluates it with our
    metrics every ``eval.every`` epochs and at the end, on the data module's validation split (or the test
    split); each evaluation's mAP goes to ``nni.report_intermediate_result``, the last to
    ``nni.report_final_result``."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.cfg = from_dict(NNISearchConfig, config)
        self.criterion, self.ib, self.result = None, None, None

    def setup(self, stage: str) -> None:
        from dcsnas.losses import InformationBottleneck
        from dcsnas.losses.criterion import ReIDCriterion

        classes = self.trainer.datamodule.num_classes
        self.criterion = ReIDCriterion(self.cfg.loss, classes, self.model.embedding_dim)
        if self.cfg.loss.ib_weight > 0:
            k = self.cfg.loss.ib_clusters or classes
            self.ib = InformationBottleneck(num_feature_clusters=k, num_input_clusters=k)

    def forward(self, x: torch.Tensor):
        return self.model(x)

    def _ib_on(self) -> bool:
        return self.ib is not None and self.trainer.current_epoch >= self.cfg.loss.ib_warmup_epochs

    def _ib_input(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(images.float(), self.cfg.loss.ib_input_size).flatten(1)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, pids = batch[0], batch[1]
        outputs = self.model(images)
        terms = self.criterion(outputs, pids)
        if self._ib_on():
            ib = self.ib(outputs["pooled"].float(), self._ib_input(images), pids)
            terms["total"] = terms["total"] + self.cfg.loss.ib_weight * ib["total"]
        self.log("train/loss", terms["total"].detach(), on_step=False, on_epoch=True, batch_size=len(pids))
        return terms["total"]

    def configure_optimizers(self):
        from dcsnas.engine.optim import build_optimizer, build_scheduler

        optimizer = build_optimizer(self.model, self.cfg.optim)
        return [optimizer], [{"scheduler": build_scheduler(optimizer, self.cfg.optim), "interval": "epoch"}]

    def on_train_epoch_start(self) -> None:
        from dcsnas.engine.trainer import dcs_modules, tau_at

        schedule = self.cfg.schedule
        for module in dcs_modules(self.model):
            module.tau = tau_at(self.trainer.current_epoch, self.trainer.max_epochs, schedule.dcs_tau_start,
                                schedule.dcs_tau_end)
        if self._ib_on():
            self._refresh_ib()

    @torch.no_grad()
    def _refresh_ib(self) -> None:
        """The IB centroids and Q(a|y) on the training identities (eval transforms), as the trainer does."""
        from dcsnas.data.loaders import build_test_loader

        data, was_training = self.trainer.datamodule, self.model.training
        self.model.eval()
        features, inputs, labels = [], [], []
        for images, pids, _, _ in build_test_loader(data.train_records, data.test_transform,
                                                    self.cfg.data.test_batch_size, self.cfg.data.num_workers):
            images = images.to(self.device)
            features.append(self.model.model.forward_features(images).mean(dim=(2, 3)))
            inputs.append(self._ib_input(images))
            labels.append(pids.to(self.device))
        self.model.train(was_training)
        self.ib.to(self.device).refresh(torch.cat(features), torch.cat(inputs), torch.cat(labels), data.num_classes)

    def evaluate(self) -> dict[str, Any]:
        from dcsnas.engine.evaluator import evaluate_model

        cfg = self.cfg
        query, gallery = self.trainer.datamodule.eval_split
        return evaluate_model(self.model, query, gallery, self.trainer.datamodule.test_transform, cfg.eval,
                              cfg.data.test_batch_size, self.device, cfg.data.num_workers, show_progress=False)

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
    from pytorch_lightning.loggers import TensorBoardLogger

    from dcsnas.engine.trainer import resolve_device

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
    evaluate many models with it: each gets a fresh module and trainer (NNI 3.0 would reuse one Lightning
    trainer, which has then already reached ``max_epochs``), logging to ``root/trials/<n>``."""

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


# ------------------------------------------------------------------------------------------ search


def _strategy(name: str, cfg: NNISearchConfig):
    from nni.nas import strategy

    nas = cfg.search
    if name == "nni:random":
        return strategy.Random(seed=cfg.seed)
    if name == "nni:evolution":
        return strategy.RegularizedEvolution(population_size=cfg.nni.population_size,
                                             sample_size=cfg.nni.sample_size, mutation_prob=cfg.nni.mutation_prob,
                                             seed=cfg.seed)
    darts = {"arc_learning_rate": nas.arch_lr, "warmup_epochs": nas.warmup_epochs}
    if name == "nni:darts":
        return strategy.DARTS(**darts)
    # NNI anneals linearly from the first to the second temperature; ours ends at tau_start · tau_decay^(E-1)
    return strategy.GumbelDARTS(temperature=(nas.tau_start, nas.tau_start * nas.tau_decay ** (cfg.optim.epochs - 1)),
                                **darts)


def _check_search(cfg: NNISearchConfig, strategy: str) -> None:
    if strategy not in NNI_STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r}; allowed: dcs, {', '.join(NNI_STRATEGIES)}")
    if cfg.loss.center_weight > 0:
        raise ConfigError("loss.center_weight > 0: the center loss needs its own optimizer, which NNI's one-shot "
                          "strategies do not allow; set loss.center_weight=0 for NNI strategies")
    if cfg.search.split != "per_identity":
        raise ConfigError("search.split = identity_disjoint: NNI's architecture steps use the full task loss, "
                          "which needs the classifier's identities; use search.split=per_identity")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("dcsnas search --strategy nni:* runs in a single process; start it without torchrun")
    if strategy not in ONESHOT and cfg.eval.val_identities == 0:
        warnings.warn("eval.val_identities = 0: the architectures are ranked by their test-split mAP; hold out "
                      "identities for validation with eval.val_identities")
    if cfg.search.cost.kind != "none":
        warnings.warn(f"search.cost.kind = {cfg.search.cost.kind}: NNI's strategies search without a cost term "
                      "(compare the FLOPs in arch.json instead)")


@contextmanager
def _nni_quiet() -> Iterator[None]:
    """NNI's console log off (it still goes to experiment.log), Lightning's info messages and both their
    warnings silenced."""
    import logging

    silence_stdout()
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(nni|pytorch_lightning|lightning_fabric)(\.|$)")
            warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers).*")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def run_nni_search(cfg: NNISearchConfig, run: RunDir, strategy: str, show_progress: bool = True) -> dict[str, Any]:
    """Run NNI's ``strategy`` (one of :data:`~dcsnas.tune.NNI_STRATEGIES`) on ``cfg.search.space`` into
    the run directory: NNI's experiment in ``nni/``, ``arch.json`` (the best architecture), ``space.yaml``,
    ``metrics.json`` and, for multi-trial strategies, the trials summary. Returns the metrics."""
    from nni.nas.experiment import NasExperiment
    from nni.nas.experiment.config import NasExperimentConfig

    from dcsnas.nas.arch import derive_arch, write_arch
    from dcsnas.nas.cost import cached_costs
    from dcsnas.nas.search import COST_FILE, SPACE_FILE, search_info
    from dcsnas.utils.io import atomic_write_text
    from dcsnas.utils.seed import seed_everything

    _check_search(cfg, strategy)
    seed_everything(cfg.seed)
    space_data = read_yaml(cfg.search.space)
    space = parse_space(space_data, cfg.search.space)
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.path / SPACE_FILE, Path(cfg.search.space).read_text())
    oneshot = strategy in ONESHOT
    with _nni_quiet():
        evaluator = ReIDEvaluator(to_dict(cfg), str(run.path), oneshot, show_progress)
        model_space = ReIDSpace(space_data, evaluator.datamodule.num_classes, cfg.head)
        config = NasExperimentConfig("sequential", "raw" if oneshot else "simplified",
                                     experiment_working_directory=str((run.path / "nni").resolve()),
                                     max_trial_number=cfg.nni.max_trials)
        experiment = NasExperiment(model_space, evaluator, _strategy(strategy, cfg), config)
        experiment.run()
        sample = experiment.export_top_models(formatter="dict")[0]
        details = (_oneshot_details(experiment) if oneshot else
                   _trials(experiment.strategy.list_models(sort=False, limit=None)))
        experiment.stop()
    costs = cached_costs(space, (cfg.data.transforms.height, cfg.data.transforms.width), run.path / COST_FILE)
    arch = derive_arch(space, sample_indices(space, sample), costs,
                       {**search_info(cfg, space), "strategy": strategy, "nni_experiment": experiment.id})
    write_arch(run.arch, arch)
    metrics = {"strategy": strategy, "arch": {"path": str(run.arch), "flops": arch.flops, "params": arch.params},
               "sample": sample, **details}
    if not oneshot:
        summary = write_summary(run.path, details["trials"], "mAP")
        metrics["best"] = summary["best"]
    run.write_metrics(metrics)
    return metrics


def _oneshot_details(experiment) -> dict[str, Any]:
    """The supernet's choice probabilities and its last evaluation."""
    module = experiment.strategy.oneshot_module
    probabilities = {label: {str(k): v for k, v in dist.items()} for label, dist in module.export_probs().items()}
    result = module.training_module.result
    return {"probabilities": probabilities,
            "supernet_eval": None if result is None else {k: v for k, v in result.items() if k != "cmc"}}


def _trials(models) -> dict[str, Any]:
    """The architectures a multi-trial strategy trained, in order, with their mAP."""
    from nni.nas.space import ModelStatus

    def status(model) -> str:
        return "SUCCEEDED" if model.status == ModelStatus.Trained else model.status.value.upper()

    return {"trials": [{"trial": i + 1, "status": status(m), "params": dict(m.sample), "metric": m.metric,
                        "intermediate": list(m.metrics.intermediates)} for i, m in enumerate(models)]}


# ------------------------------------------------------------------------------------------ tune

_LOOPBACK_JS = """// dcsnas: the NNI manager's servers listen on loopback (127.0.0.1) only.
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  else if (args[0] && typeof args[0] === 'object' && args[0].port !== undefined && !args[0].host)
    args[0] = Object.assign({}, args[0], {host: '127.0.0.1'});
  return listen.apply(this, args);
};
"""
_POLL_S = 1.0


def _free_port() -> int:
    """A port p with p and p + 1 free on loopback (NNI's manager takes both)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


@contextmanager
def _manager_environment(folder: Path, loopback: bool) -> Iterator[None]:
    """While the NNI manager (Node.js) starts: with ``loopback``, ``NODE_OPTIONS`` preloads a script that
    binds its servers to 127.0.0.1 (NNI 3.0 listens on all interfaces, without authentication)."""
    previous = os.environ.get("NODE_OPTIONS")
    if loopback:
        script = folder / "loopback.js"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(_LOOPBACK_JS)
        os.environ["NODE_OPTIONS"] = " ".join(filter(None, [previous, f'--require "{script}"']))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("NODE_OPTIONS", None)
        else:
            os.environ["NODE_OPTIONS"] = previous


def _yaml_value(value: Any) -> str:
    """A tuner value as the text of a ``--set`` override (YAML reads ``1e-05`` as a string, ``1.0e-05`` not)."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).split("\n...")[0].strip()


def _trial_config(command: str, config: str, arch: Optional[str], overrides: list[str], params: dict[str, Any]):
    """The :class:`~dcsnas.engine.config.TrainConfig` of a trial: the base config, ``retrain``'s searched
    backbone, the overrides, then the tuner's values."""
    from dcsnas.config import load_config
    from dcsnas.engine.config import TrainConfig

    searched = ["model.backbone=searched", f"model.arch={Path(arch).resolve()}"] if command == "retrain" else []
    return load_config(TrainConfig, config, [*searched, *overrides,
                                             *(f"{k}={_yaml_value(v)}" for k, v in params.items())])


def _probe(spec: dict[str, Any]) -> Any:
    """A value of an NNI search-space entry, to check that the trial config accepts its type."""
    value = spec["_value"][0]
    return value if spec["_type"] == "choice" else int(value) if spec["_type"] == "randint" else float(value)


def _trial_command(cfg: TuneConfig) -> str:
    import shlex

    python = cfg.trial_python or (sys.executable if cfg.training_service["platform"] == "local" else "python3")
    words = [python, "-m", "dcsnas.nas.nni_bridge", "trial", cfg.command, "--config", cfg.config,
             "--metric", cfg.metric]
    if cfg.arch is not None:
        words += ["--arch", cfg.arch]
    for override in cfg.set:
        words += ["--set", override]
    return shlex.join(words)


def _training_service(cfg: TuneConfig, command: str) -> dict[str, Any]:
    """NNI's training-service mapping of ``cfg``; on Kubernetes (kubeflow, frameworkcontroller) every role
    without a ``command`` gets the trial command (and kubeflow roles the code directory ``.``)."""
    import copy

    service = copy.deepcopy(cfg.training_service)
    platform = service["platform"]
    roles = ([service.get(k) for k in ("worker", "master", "ps")] if platform == "kubeflow" else
             service.get("task_roles", service.get("taskRoles", [])) if platform == "frameworkcontroller" else [])
    for role in (r for r in roles if isinstance(r, dict)):
        keys = {k.replace("_", "").lower() for k in role}
        if "command" not in keys:
            role["command"] = command
        if platform == "kubeflow" and "codedirectory" not in keys:
            role["code_directory"] = "."
    return service


def experiment_config(cfg: TuneConfig, name: str, folder: Path):
    """NNI's ``ExperimentConfig`` of ``cfg`` (validated by NNI), with its experiment directory in ``folder``."""
    from nni.experiment import ExperimentConfig

    command = _trial_command(cfg)
    try:
        config = ExperimentConfig(
            experiment_name=name, trial_command=command, trial_code_directory=str(Path.cwd()),
            search_space=cfg.search_space, tuner=to_dict(cfg.tuner), max_trial_number=cfg.max_trials,
            trial_concurrency=cfg.concurrency, max_experiment_duration=cfg.max_duration,
            experiment_working_directory=str(folder), nni_manager_ip=cfg.nni_manager_ip,
            training_service=_training_service(cfg, command))
        config.validate()
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(f"tune config: NNI rejects the experiment settings: {exc}") from None
    return config


def run_tune(cfg: TuneConfig, run: RunDir) -> dict[str, Any]:
    """Run the hyper-parameter experiment of ``cfg``: NNI's experiment directory in ``run/nni``, its trials'
    run directories inside it; then the summary (``summary.json``, ``trials.csv``, ``summary.md``) and
    ``metrics.json`` in ``run``. Trials run from the current directory (NNI's trial code directory), where
    relative paths of the config resolve. Returns the summary."""
    import time

    from nni.experiment import Experiment

    from dcsnas.engine.config import TrainConfig

    check_trial_keys(cfg, TrainConfig)
    probe = _trial_config(cfg.command, cfg.config, cfg.arch, cfg.set,
                          {k: _probe(spec) for k, spec in cfg.search_space.items()})
    if probe.eval.val_identities == 0:
        warnings.warn("eval.val_identities = 0: the trials report their test-split metric, so the tuner selects "
                      "on the test set; hold out identities for validation with eval.val_identities")
    folder = (run.path / "nni").resolve()
    config = experiment_config(cfg, run.path.name, folder)
    port = cfg.port or _free_port()
    experiment = Experiment(config)
    with _nni_quiet():
        with _manager_environment(folder, cfg.bind == "loopback"):
            experiment.start(port)
        if cfg.webui:
            host = "127.0.0.1" if cfg.bind == "loopback" else cfg.nni_manager_ip or "<this machine>"
            print(f"dcsnas: NNI web UI at http://{host}:{port} while the experiment runs", file=sys.stderr)
        try:
            while experiment.get_status() not in ("DONE", "STOPPED", "ERROR"):
                time.sleep(_POLL_S)
            status = experiment.get_status()
            trials = _tune_trials(experiment)
        finally:
            experiment.stop()
    summary = write_summary(run.path, trials, cfg.metric)
    run.write_metrics({"experiment": experiment.id, "status": status, "metric": cfg.metric, "best": summary["best"],
                       "num_trials": summary["num_trials"], "num_succeeded": summary["num_succeeded"]})
    return summary


def _tune_trials(experiment) -> list[dict[str, Any]]:
    """Every trial of a running HPO experiment: parameters, status, reported metrics, run directory."""
    metrics = experiment.get_job_metrics()
    trials = []
    for job in experiment.list_trial_jobs():
        data = metrics.get(job.trialJobId, [])
        final = next((m.data for m in data if m.type == "FINAL"), None)
        params = job.hyperParameters[-1].parameters if job.hyperParameters else {}
        trials.append({"trial": job.trialJobId, "status": job.status, "params": params,
                       "metric": final.get("default") if isinstance(final, dict) else final,
                       "intermediate": [m.data for m in data if m.type == "PERIODICAL"],
                       "run": final.get("run") if isinstance(final, dict) else None})
    return trials


def run_trial(command: str, config: str, arch: Optional[str], overrides: list[str], metric: str) -> dict[str, Any]:
    """One trial of ``dcsnas tune``: ``dcsnas train``/``retrain`` of the config with the tuner's values, into
    ``$NNI_OUTPUT_DIR/run`` (``runs/`` outside NNI); ``metric`` goes to NNI after every evaluation (on the
    validation split when there is one, else the test split) and, with the run directory, at the end."""
    from dcsnas.engine.rundir import create_run_dir
    from dcsnas.engine.trainer import Trainer
    from dcsnas.nas.arch import load_arch, write_arch

    class ReportingTrainer(Trainer):
        reported: Optional[float] = None

        def evaluate(self, split: str = "test", show_progress: Optional[bool] = None) -> dict:
            result = super().evaluate(split, show_progress)
            if split == ("val" if self.val_split is not None else "test"):
                self.reported = result[metric]
                nni.report_intermediate_result(self.reported)
            return result

    params = nni.get_next_parameter() or {}
    cfg = _trial_config(command, config, arch, overrides, params)
    output = os.environ.get("NNI_OUTPUT_DIR")
    run = create_run_dir(Path(output) / "run" if output else None, command, cfg)
    if arch is not None:
        write_arch(run.arch, load_arch(arch))
    trainer = ReportingTrainer(cfg, run, show_progress=False)
    trainer.fit()
    final = {"default": trainer.reported, "run": str(run.path.resolve())}
    nni.report_final_result(final)
    return final


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m dcsnas.nas.nni_bridge trial {train,retrain} --config FILE [--arch FILE] [--set K=V ...]
    [--metric M]``: the trial command of ``dcsnas tune``."""
    parser = argparse.ArgumentParser(prog="python -m dcsnas.nas.nni_bridge")
    sub = parser.add_subparsers(dest="action", required=True)
    trial = sub.add_parser("trial", help="one trial of dcsnas tune (started by NNI)")
    trial.add_argument("command", choices=("train", "retrain"))
    trial.add_argument("--config", required=True)
    trial.add_argument("--arch")
    trial.add_argument("--set", dest="overrides", action="append", default=[])
    trial.add_argument("--metric", default="mAP")
    args = parser.parse_args(argv)
    try:
        run_trial(args.command, args.config, args.arch, args.overrides, args.metric)
    except ConfigError as exc:
        print(f"dcsnas: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
