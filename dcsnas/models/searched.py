"""The ``searched`` backbone: a plain network rebuilt from an architecture description
(:mod:`dcsnas.models.arch`, an ``arch.json`` written by ``dcsnas search`` or ``dcsnas derive``) through its
skeleton (:data:`dcsnas.models.skeleton.SKELETONS`), :mod:`dcsnas.models.blocks` and
:mod:`dcsnas.models.backbones`, with no supernet code or parameter: only the chosen op of each block, at the
chosen width, exists (``skip``: an identity). The attentions of the stages are placed by
:func:`dcsnas.models.builder.create_model`.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from dcsnas.models.arch import Arch
from dcsnas.models.backbones import Backbone
from dcsnas.models.blocks import build_op, conv_head, stem
from dcsnas.models.skeleton import SKELETONS, Part


def _module(part: Part) -> Optional[nn.Module]:
    """The module of one part of a derived network (attentions are placed by ``create_model``)."""
    if part.kind == "stem":
        return stem(part.width_out, part.stride)
    if part.kind == "block":
        return build_op(part.payload, part.width_in, part.width_out, part.stride)
    return conv_head(part.width_in, part.width_out) if part.kind == "conv_head" else None


def build_searched_backbone(arch: Arch) -> Backbone:
    """The backbone of ``arch`` (its attentions not included)."""
    skeleton = SKELETONS[arch.skeleton]
    return skeleton.build(arch, skeleton.arch_parts(arch), _module, int)[0]
