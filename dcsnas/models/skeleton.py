"""The mobilenetv2 macro skeleton as one walk: ``stem`` → per stage its blocks, then its attention slot →
``conv_head``. An architecture (:mod:`dcsnas.models.arch`: a width, an op, an attention per slot) and a
search space (:mod:`dcsnas.nas.space`: a ``Choice`` per slot) feed the same walk; the derived network, the
supernet, the cost model and the NNI model space turn its :class:`Part`\\ s into modules, cost terms or NNI
layers, and :func:`assemble` groups their modules into a :class:`~dcsnas.models.backbones.Backbone`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Optional

from torch import nn

from dcsnas.models.arch import CONV_HEAD, STEM, MobileNetV2Arch
from dcsnas.models.backbones import Backbone

Kind = Literal["stem", "block", "attention", "conv_head"]


@dataclass(frozen=True)
class StagePlan:
    """One stage fed to :func:`mobilenetv2_parts`: ``width`` (its output width: an int, or a width choice),
    ``stride`` (of its first block), one payload per block (an op name, or an op choice) and the payload
    of its attention slot (an attention or ``None``, or an attention choice)."""

    name: str
    stride: int
    width: Any
    blocks: Sequence[Any]
    attention: Any


@dataclass(frozen=True)
class Part:
    """One part of the skeleton, in the order the network runs them. ``stage``: ``stem``, the stage name or
    ``conv_head``; ``index``: the block's position in its stage (0 for the other parts); ``width_in`` /
    ``width_out``: channels in and out (as fed: ints or width choices; 3 into the stem, the int head
    channels out of ``conv_head``); ``stride_in`` / ``stride_out``: the total spatial stride of its input and
    output relative to the image; ``payload``: what the feeder gave for the slot (``None`` for stem and head)."""

    kind: Kind
    stage: str
    index: int
    width_in: Any
    width_out: Any
    stride_in: int
    stride_out: int
    payload: Any = None

    @property
    def stride(self) -> int:
        """The part's own stride (1 or 2)."""
        return self.stride_out // self.stride_in


def mobilenetv2_parts(stem_width: Any, stem_stride: int, stages: Iterable[StagePlan],
                      head_channels: int) -> Iterator[Part]:
    """The parts of a mobilenetv2 skeleton: block 0 of a stage takes the previous width (the stem's for
    the first stage) at the stage's stride, the other blocks the stage's width at stride 1; the attention
    slot follows the stage's last block at its width; ``conv_head`` takes the last stage's width."""
    yield Part("stem", STEM, 0, 3, stem_width, 1, stem_stride)
    width, stride = stem_width, stem_stride
    for stage in stages:
        for b, payload in enumerate(stage.blocks):
            step = stage.stride if b == 0 else 1
            yield Part("block", stage.name, b, width, stage.width, stride, stride * step, payload)
            width, stride = stage.width, stride * step
        yield Part("attention", stage.name, 0, width, width, stride, stride, stage.attention)
    yield Part("conv_head", CONV_HEAD, 0, width, head_channels, stride, stride)


def arch_parts(arch: MobileNetV2Arch) -> Iterator[Part]:
    """The parts of a derived architecture: widths are ints, block payloads op names, attention payloads
    :class:`~dcsnas.models.arch.ArchAttention` or ``None``."""
    return mobilenetv2_parts(arch.stem_channels, arch.stem_stride,
                             [StagePlan(s.name, s.stride, s.width, s.ops, s.attention) for s in arch.stages],
                             arch.head_channels)


def assemble(parts: Iterable[Part], build: Callable[[Part], Optional[nn.Module]], channels: Callable[[Any], int],
             stage: Callable[..., nn.Module] = nn.Sequential) -> Backbone:
    """The backbone of ``parts``: ``build(part)`` per part (``None``: nothing in the backbone), the modules
    of a stage in ``stage(*modules)``, stem and head as they are; a stage's channels ``channels(width_out)``
    and its stride the ``stride_out`` of its last part."""
    modules: dict[str, list[nn.Module]] = {}
    last: dict[str, Part] = {}
    for part in parts:
        module = build(part)
        modules.setdefault(part.stage, []).extend([] if module is None else [module])
        last[part.stage] = part
    stages = {name: group[0] if name in (STEM, CONV_HEAD) else stage(*group) for name, group in modules.items()}
    return Backbone(stages, {name: channels(p.width_out) for name, p in last.items()},
                    {name: p.stride_out for name, p in last.items()})
