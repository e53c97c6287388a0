"""The Re-ID model: backbone stages, attention modules after chosen stages, optional deep supervision,
and a head. ``create_model(cfg, num_classes)`` builds it from the ``model`` config section.

Contract (timm style): ``forward_features(x) -> Tensor[B, C, h, w]`` (the final map),
``forward_head(fmap)`` (see :mod:`dcsnas.models.heads`), ``forward(x)`` = both, plus in training
``aux_logits`` (one logits tensor per deep-supervision branch) and ``pooled`` (the final map's global
average, ``[B, C]``: the features of the Information-Bottleneck bound).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
from torch import nn

from dcsnas.errors import ConfigError
from dcsnas.models.backbones import BACKBONES, Backbone
from dcsnas.models.heads import HEADS


# Options of the attention modules that a model config may not set: ``return_attention`` makes a module
# return (output, map), which a network cannot chain (the maps are read by calling the module with
# ``return_attention=True``, e.g. ``dcsnas bench``); ``keep_output`` is set by ``deep_supervision``.
RESERVED_ATTENTION_OPTIONS = {
    "return_attention": "a model's attention returns its output only; call the module with return_attention=True "
                        "to read the maps",
    "keep_output": "it is internal; set deep_supervision: true on the placement instead",
}


@dataclass
class AttentionPlacement:
    """An attention module (any :func:`dcsnas.attention.create_attention` spec) after backbone stage ``stage``;
    the options ``return_attention`` and ``keep_output`` are refused (see ``RESERVED_ATTENTION_OPTIONS``)."""

    stage: str
    name: str = "csalr"
    options: dict[str, Any] = field(default_factory=dict)
    deep_supervision: bool = False


@dataclass
class ModelConfig:
    """The ``model`` config section. ``backbone: searched`` builds the network described by ``arch``
    (an ``arch.json`` written by ``dcsnas search``/``derive``); its attention placements come from there."""

    backbone: str = "resnet50"
    arch: Optional[str] = None
    pretrained: bool = False
    last_stride: int = 1
    width_mult: float = 1.0
    head: Literal["bnneck", "pcb"] = "bnneck"
    pcb_parts: int = 6
    pcb_reduce_dim: int = 256
    attention: list[AttentionPlacement] = field(default_factory=list)


class ReIDModel(nn.Module):
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

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        aux = []
        for name, stage in self.backbone.stages.items():
            x = stage(x)
            if name in self.attentions:
                attention, x_in = self.attentions[name], x
                x = attention(x)
                if self.training and name in self.deep_supervision:
                    aux.append(self.deep_supervision[name](x_in, attention.last_output))
        return x, aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def forward_head(self, fmap: torch.Tensor):
        return self.head(fmap)

    def forward(self, x: torch.Tensor):
        fmap, aux = self._run(x)
        out = self.head(fmap)
        if self.training:
            out["aux_logits"] = aux
            out["pooled"] = fmap.mean(dim=(2, 3))
        return out


def _build_backbone(cfg: ModelConfig) -> tuple[Backbone, list[AttentionPlacement]]:
    if cfg.backbone == "searched":
        if cfg.arch is None:
            raise ConfigError("model.backbone = 'searched' needs model.arch: the path of an arch.json")
        from dcsnas.models.searched import build_searched_backbone

        return build_searched_backbone(cfg.arch)
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone = {cfg.backbone!r}; allowed: {', '.join(sorted(BACKBONES))}, searched")
    kwargs: dict[str, Any] = {"pretrained": cfg.pretrained, "last_stride": cfg.last_stride}
    if cfg.backbone == "mobilenetv2":
        kwargs["width_mult"] = cfg.width_mult
    return BACKBONES[cfg.backbone](**kwargs), []


def create_model(cfg: ModelConfig, num_classes: int) -> ReIDModel:
    """Build the Re-ID model of ``cfg`` with ``num_classes`` training identities."""
    from dcsnas.attention import DeepSupervisionHead, create_attention

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
        options = {**place.options, "keep_output": True} if place.deep_supervision else place.options
        attentions[place.stage] = create_attention(place.name, channels, **options)
        if place.deep_supervision:
            supervision[place.stage] = DeepSupervisionHead(channels, num_classes)
    head_options = {"parts": cfg.pcb_parts, "reduce_dim": cfg.pcb_reduce_dim} if cfg.head == "pcb" else {}
    head = HEADS[cfg.head](backbone.out_channels, num_classes, **head_options)
    return ReIDModel(backbone, head, attentions, supervision)
