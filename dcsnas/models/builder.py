"""The Re-ID model: backbone stages, attention modules after chosen stages, optional deep supervision,
and a head. ``create_model(cfg, num_classes)`` builds it from the ``model`` config section,
``create_model("mobilenetv2", num_classes, width_mult=0.5)`` from a backbone name and config fields.

Contract: ``forward_features(x)`` -> the final map ``Tensor[B, C, h, w]``; ``forward_head(fmap)`` -> the
head's output (:mod:`dcsnas.models.heads`); ``forward(x)`` (torchreid style) -> in training mode the dict
the losses read: the head's ``logits`` (list) and ``features``, plus ``aux_logits`` (one logits tensor per
deep-supervision branch), ``pooled`` (the final map's global average ``[B, C]``, the features of the
Information-Bottleneck bound) and ``dcs_kept`` (stage name → the kept-channel ratio of its DCS attention,
and for a ViT ``vit.block<i>`` → that of block i's DCS gates; 0-dim); in evaluation mode the test embedding
``Tensor[B, embedding_dim]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
from torch import nn

from dcsnas.attention import AttentionBlock, DeepSupervisionHead, create_attention
from dcsnas.config import from_dict, ranged
from dcsnas.errors import ConfigError
from dcsnas.models.arch import load_arch
from dcsnas.models.backbones import BACKBONES, Backbone, create_backbone
from dcsnas.models.blocks import Mixed
from dcsnas.models.heads import create_head
from dcsnas.models.searched import build_searched_backbone
from dcsnas.models.vit import VIT_SIZES, ClassTokenStage
from dcsnas.utils.flops import count_inference_params

# Options of the attention modules that a model config may not set: ``return_attention`` makes a module
# materialise its n x n map on every forward (the maps are read by calling the module with
# ``need_weights=True``, e.g. ``dcsnas bench``).
RESERVED_ATTENTION_OPTIONS = {
    "return_attention": "a model's attention computes no map; call the module with need_weights=True to read "
                        "the maps",
}


@dataclass
class AttentionPlacement:
    """An attention module (any :func:`dcsnas.attention.create_attention` spec) after backbone stage ``stage``;
    the option ``return_attention`` is refused (see ``RESERVED_ATTENTION_OPTIONS``); ``deep_supervision`` adds a
    :class:`~dcsnas.attention.DeepSupervisionHead` on the module's output before the residual."""

    stage: str
    name: str = "csalr"
    options: dict[str, Any] = field(default_factory=dict)
    deep_supervision: bool = False


@dataclass
class ModelConfig:
    """The ``model`` config section. ``backbone: searched`` builds the network described by ``arch``
    (an ``arch.json`` written by ``dcsnas search``/``derive``); its attention placements come from there.
    The ViT backbones (:mod:`dcsnas.models.vit`) read ``img_size`` ([H, W]; a run takes its input size),
    ``patch_stride`` (0: the patch size), ``dcs_blocks`` (blocks with DCS gates) and ``drop_path``."""

    backbone: str = "resnet50"
    arch: Optional[str] = None
    pretrained: bool = False
    last_stride: int = ranged(1, ge=1, le=2)
    width_mult: float = ranged(1.0, gt=0, le=16)
    head: Literal["bnneck", "pcb"] = "bnneck"
    pcb_parts: int = ranged(6, ge=1, le=64)
    pcb_reduce_dim: int = ranged(256, ge=1, le=8192)
    attention: list[AttentionPlacement] = field(default_factory=list)
    img_size: list[int] = field(default_factory=list)
    patch_stride: int = ranged(0, ge=0, le=64)
    dcs_blocks: list[int] = field(default_factory=list)
    drop_path: float = ranged(0.0, ge=0.0, lt=1.0)


class ReIDModel(nn.Module):
    """Backbone stages, each optionally followed by an attention module (and its deep-supervision head),
    then the head; outputs in the module docstring. A stage or attention may be a
    :class:`~dcsnas.models.blocks.Mixed` slot (the supernet's): it runs on the architecture weights given to
    :meth:`_run`."""

    def __init__(self, backbone: Backbone, head: nn.Module, attentions: dict[str, nn.Module],
                 deep_supervision: dict[str, nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.attentions = nn.ModuleDict(attentions)
        self.deep_supervision = nn.ModuleDict(deep_supervision)
        self.head = head

    @property
    def embedding_dim(self) -> int:
        return self.head.embedding_dim

    def _run(self, x: torch.Tensor, weights: Optional[dict[str, torch.Tensor]] = None,
             single_path: bool = False) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        """The final map; in training the deep-supervision logits; the DCS modules' kept ratios by stage (by
        ``vit.block<i>`` for a ViT's DCS blocks).
        ``weights`` and ``single_path`` go to the mixed slots (:class:`~dcsnas.models.blocks.Mixed`)."""
        aux, kept = [], {}
        for name, stage in self.backbone.stages.items():
            if isinstance(stage, ClassTokenStage):  # a ViT: its DCS blocks' kept ratios by block
                x, stage_kept = stage.run(x)
                kept.update(stage_kept)
            else:
                x = stage(x, weights, single_path) if isinstance(stage, Mixed) else stage(x)
            if name in self.attentions:
                attention = self.attentions[name]
                if isinstance(attention, Mixed):
                    x = attention(x, weights, single_path)
                    continue
                if not isinstance(attention, AttentionBlock):  # a slot of NNI's model space: chained by its output
                    x = attention(x)
                    continue
                attended = attention.attend(x)
                if self.training and name in self.deep_supervision:
                    aux.append(self.deep_supervision[name](x, attended.branch))
                if attended.dcs_kept is not None:
                    kept[name] = attended.dcs_kept
                x = attended.out
        return x, aux, kept

    def _outputs(self, fmap: torch.Tensor, aux: list[torch.Tensor], kept: dict[str, torch.Tensor] | None = None):
        """The head's output on ``fmap``; in training with ``aux_logits``, ``pooled`` and ``dcs_kept`` added."""
        out = self.head(fmap)
        if self.training:
            out["aux_logits"] = aux
            out["pooled"] = fmap.mean(dim=(2, 3))
            out["dcs_kept"] = kept or {}
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, 3, H, W] -> the final map [B, C, h, w]."""
        return self._run(x)[0]

    def forward_head(self, fmap: torch.Tensor):
        """The head on a final map: training dict ``logits``/``features``, or the embedding in evaluation."""
        return self.head(fmap)

    def forward(self, x: torch.Tensor):
        """Training mode: ``{"logits", "features", "embedding", "aux_logits", "pooled", "dcs_kept"}``; evaluation:
        ``[B, embedding_dim]``."""
        return self._outputs(*self._run(x))


def _build_backbone(cfg: ModelConfig) -> tuple[Backbone, list[AttentionPlacement]]:
    if cfg.backbone == "searched":
        if cfg.arch is None:
            raise ConfigError("model.backbone = 'searched' needs model.arch: the path of an arch.json")
        arch = load_arch(cfg.arch)
        placements = [AttentionPlacement(s.name, s.attention.name, dict(s.attention.options))
                      for s in arch.stages if s.attention is not None]
        return build_searched_backbone(arch), placements
    if cfg.backbone in VIT_SIZES:
        return create_backbone(cfg.backbone, pretrained=cfg.pretrained, img_size=cfg.img_size,
                               patch_stride=cfg.patch_stride, dcs_blocks=cfg.dcs_blocks, drop_path=cfg.drop_path), []
    for key in ("img_size", "patch_stride", "dcs_blocks", "drop_path"):
        if getattr(cfg, key):
            raise ConfigError(f"model.{key} = {getattr(cfg, key)!r} applies to the ViT backbones "
                              f"({', '.join(VIT_SIZES)}), not to {cfg.backbone}")
    kwargs: dict[str, Any] = {"pretrained": cfg.pretrained, "last_stride": cfg.last_stride}
    if cfg.backbone == "mobilenetv2":
        kwargs["width_mult"] = cfg.width_mult
    return create_backbone(cfg.backbone, extra=("searched",), **kwargs), []


def list_models() -> list[str]:
    """The backbone names :func:`create_model` builds (``searched``: the network of an arch.json)."""
    return sorted([*BACKBONES.names(), "searched"])


def arch_params(path: str) -> int:
    """Parameters of the network an arch.json describes as dcsnas counts them everywhere: those its inference
    forward uses (:func:`~dcsnas.utils.flops.count_inference_params`; arch.json's own ``params`` is the cost
    table's sum over the backbone's parts, without the BNNeck)."""
    arch = load_arch(path)
    return count_inference_params(create_model("searched", 1, arch=path), (1, 3, *arch.input_size))


def create_model(cfg: ModelConfig | str, num_classes: int, **fields: Any) -> ReIDModel:
    """Build the Re-ID model with ``num_classes`` training identities from the ``model`` config section
    ``cfg``, or from a backbone name (``resnet50``, ``mobilenetv2``, ``searched``) and ``fields`` of that
    section, checked as a config file's (``create_model("searched", 751, arch="arch.json")``); ``fields`` with
    a config object is a :class:`ConfigError`."""
    if isinstance(cfg, str):
        cfg = from_dict(ModelConfig, {**fields, "backbone": cfg})
    elif fields:
        raise ConfigError(f"create_model: options {sorted(fields)} are given with a model config; set them in it")
    if cfg.backbone in VIT_SIZES and (cfg.attention or cfg.head == "pcb"):
        what = "model.attention (a ViT takes DCS inside its blocks: model.dcs_blocks)" if cfg.attention else \
            "model.head = 'pcb' (a ViT's [CLS] token has no horizontal parts)"
        raise ConfigError(f"{what} does not apply to {cfg.backbone}")
    backbone, arch_attention = _build_backbone(cfg)
    attentions, supervision = {}, {}
    for i, place in enumerate(arch_attention + list(cfg.attention)):
        if place.stage not in backbone.stage_channels:
            raise ConfigError(f"model.attention[{i}].stage = {place.stage!r}: no such stage in {cfg.backbone}; "
                              f"allowed: {', '.join(backbone.stage_channels)}")
        if place.stage in attentions:
            raise ConfigError(f"model.attention[{i}].stage = {place.stage!r}: the stage already has an attention")
        for key, why in RESERVED_ATTENTION_OPTIONS.items():
            if key in place.options:
                raise ConfigError(f"model.attention[{i}].options.{key} = {place.options[key]!r} is not a model "
                                  f"option: {why}")
        channels = backbone.stage_channels[place.stage]
        attentions[place.stage] = create_attention(place.name, channels, **place.options)
        if place.deep_supervision:
            supervision[place.stage] = DeepSupervisionHead(channels, num_classes)
    head_options = {"parts": cfg.pcb_parts, "reduce_dim": cfg.pcb_reduce_dim} if cfg.head == "pcb" else {}
    head = create_head(cfg.head, backbone.out_channels, num_classes, **head_options)
    return ReIDModel(backbone, head, attentions, supervision)
