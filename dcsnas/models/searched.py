"""The ``searched`` backbone: a plain network rebuilt from an architecture description
(:mod:`dcsnas.models.arch`, an ``arch.json`` written by ``dcsnas search`` or ``dcsnas derive``) through
:mod:`dcsnas.models.blocks` and :mod:`dcsnas.models.backbones`, with no supernet code or parameter: only the
chosen op of each block, at the chosen width, exists.

Stages of a mobilenetv2 skeleton: the parts of :func:`dcsnas.models.skeleton.arch_parts` (``stem``, the
arch's stages: block b = its op, ``skip`` an identity; ``conv_head``).
Stages of a resnet50 skeleton: those of :func:`dcsnas.models.backbones.resnet50`. The
attentions of the stages are placed by :func:`dcsnas.models.builder.create_model`.
"""

from __future__ import annotations

from dcsnas.models.arch import Arch, MobileNetV2Arch
from dcsnas.models.backbones import Backbone, resnet50
from dcsnas.models.blocks import build_op, conv_head, stem
from dcsnas.models.skeleton import Part, arch_parts, assemble


def _module(part: Part):
    """The module of one part of a derived network (attentions are placed by ``create_model``)."""
    if part.kind == "stem":
        return stem(part.width_out, part.stride)
    if part.kind == "block":
        return build_op(part.payload, part.width_in, part.width_out, part.stride)
    return conv_head(part.width_in, part.width_out) if part.kind == "conv_head" else None


def build_searched_backbone(arch: Arch) -> Backbone:
    """The backbone of ``arch`` (its attentions not included)."""
    if not isinstance(arch, MobileNetV2Arch):
        return resnet50(arch.pretrained, arch.last_stride)
    return assemble(arch_parts(arch), _module, int)
