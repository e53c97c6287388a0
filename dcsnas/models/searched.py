"""The ``searched`` backbone: a plain network rebuilt from an architecture description
(:mod:`dcsnas.models.arch`, an ``arch.json`` written by ``dcsnas search`` or ``dcsnas derive``) through
:mod:`dcsnas.models.blocks` and :mod:`dcsnas.models.backbones`, with no supernet code or parameter: only the
chosen op of each block, at the chosen width, exists.

Stages of a mobilenetv2 skeleton: ``stem``, the arch's stages (block b = its op; ``skip`` is an identity),
``conv_head``. Stages of a resnet50 skeleton: those of :func:`dcsnas.models.backbones.resnet50`. The
attentions of the stages are placed by :func:`dcsnas.models.builder.create_model`.
"""

from __future__ import annotations

from torch import nn

from dcsnas.models.arch import CONV_HEAD, STEM, Arch, MobileNetV2Arch
from dcsnas.models.backbones import Backbone, resnet50
from dcsnas.models.blocks import build_op, conv_head, stem


def build_searched_backbone(arch: Arch) -> Backbone:
    """The backbone of ``arch`` (its attentions not included)."""
    if not isinstance(arch, MobileNetV2Arch):
        return resnet50(arch.pretrained, arch.last_stride)
    stages: dict[str, nn.Module] = {STEM: stem(arch.stem_channels, arch.stem_stride)}
    channels, strides = {STEM: arch.stem_channels}, {STEM: arch.stem_stride}
    width, stride = arch.stem_channels, arch.stem_stride
    for stage in arch.stages:
        blocks = []
        for b, op in enumerate(stage.ops):
            blocks.append(build_op(op, width, stage.width, stage.stride if b == 0 else 1))
            width = stage.width
        stride *= stage.stride
        stages[stage.name] = nn.Sequential(*blocks)
        channels[stage.name], strides[stage.name] = stage.width, stride
    stages[CONV_HEAD] = conv_head(width, arch.head_channels)
    channels[CONV_HEAD], strides[CONV_HEAD] = arch.head_channels, stride
    return Backbone(stages, channels, strides)
