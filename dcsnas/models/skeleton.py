"""Skeletons: the one description of a backbone that an architecture (:mod:`dcsnas.models.arch`) and a search
space (:mod:`dcsnas.nas.space`) both feed. A :class:`Skeleton` walks either as :class:`Part`\\ s in the order the
network runs them; a part of an architecture holds values (a width, an op name, an attention), a part of a
space holds :class:`Choice`\\ s there. From that one walk the skeleton gives the space's choices, derives the
architecture of option indices (:meth:`Skeleton.derive`) and maps an architecture back to its indices
(:meth:`Skeleton.indices`), and :meth:`Skeleton.build` turns parts into a backbone and its attention slots
(the derived network, the supernet and the NNI model space pass what to build per part; the cost model
measures the same parts). ``SKELETONS[name]`` is the skeleton of a space's or an arch.json's ``skeleton:``.

Implementations: ``mobilenetv2`` (stem → per stage its blocks, then its attention slot → ``conv_head``) and
``resnet50`` (torchvision's five stages, fixed, and an attention slot after each searched stage).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Optional, Union

from torch import nn

from dcsnas.errors import ConfigError
from dcsnas.models.arch import (
    CONV_HEAD,
    RESNET50_CHANNELS,
    RESNET50_STAGES,
    STEM,
    Arch,
    ArchAttention,
    ArchStage,
    MobileNetV2Arch,
    ResNet50Arch,
    ResNetArchStage,
)
from dcsnas.models.backbones import Backbone, resnet50
from dcsnas.models.blocks import SKIP, skip_allowed
from dcsnas.utils.registry import Registry

NONE = "none"
Kind = Literal["stem", "block", "attention", "conv_head", "stage"]


@dataclass(frozen=True)
class AttentionCandidate:
    """One attention option: ``create_attention(name, channels, **options)``; ``label`` e.g. ``dcs-csalr-g2``."""

    label: str
    name: str
    options: dict[str, Any]


Option = Union[int, str, Optional[AttentionCandidate]]  # a width, an op name, an attention (None: no attention)


@dataclass(frozen=True)
class Choice:
    """A decision of a space: ``options`` in order (the architecture logits and option indices index them)."""

    key: str
    options: tuple[Option, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(NONE if o is None else o.label if isinstance(o, AttentionCandidate) else str(o)
                     for o in self.options)

    @property
    def searchable(self) -> bool:
        return len(self.options) > 1


@dataclass(frozen=True)
class Part:
    """One part of a skeleton, in the order the network runs them. ``kind``: ``stem``, ``block``,
    ``attention``, ``conv_head`` or ``stage`` (a fixed stage, e.g. ResNet-50's ``layer2``); ``stage``: the stage
    it belongs to; ``index``: the block's position in its stage (0 for the other parts); ``width_in`` /
    ``width_out``: channels in and out (ints or width choices); ``stride_in`` / ``stride_out``: the total
    spatial stride of its input and output relative to the image; ``payload``: the op of a block, the
    attention of an attention slot (values of an architecture, choices of a space; ``None`` elsewhere)."""

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
        """The part's own stride (1 or 2; 4 for ResNet-50's stem)."""
        return self.stride_out // self.stride_in

    def values(self) -> tuple[Any, Any, Any]:
        """(width_in, width_out, payload): where a space has its choices and an architecture its values."""
        return self.width_in, self.width_out, self.payload


Build = Callable[[Part], Optional[nn.Module]]


def assemble(parts: Iterable[Part], build: Build, channels: Callable[[Any], int],
             stage: Callable[..., nn.Module] = nn.Sequential) -> tuple[Backbone, dict[str, nn.Module]]:
    """The backbone of ``parts`` and its attention slots: ``build(part)`` per part (``None``: nothing), the
    modules of a stage's blocks in ``stage(*modules)``, stem, head and fixed stages as they are, an attention
    slot's module under its stage's name; a stage's channels ``channels(width_out)`` and its stride the
    ``stride_out`` of its last part."""
    modules: dict[str, list[nn.Module]] = {}
    attentions: dict[str, nn.Module] = {}
    last: dict[str, Part] = {}
    for part in parts:
        module = build(part)
        if part.kind == "attention":
            attentions.update({} if module is None else {part.stage: module})
            continue
        modules.setdefault(part.stage, []).extend([] if module is None else [module])
        last[part.stage] = part
    stages = {name: stage(*group) if last[name].kind == "block" else group[0] for name, group in modules.items()}
    backbone = Backbone(stages, {name: channels(p.width_out) for name, p in last.items()},
                        {name: p.stride_out for name, p in last.items()})
    return backbone, attentions


def resolve(value: Any, indices: Mapping[str, int]) -> Any:
    """A choice's option ``indices[key]`` (an attention candidate as :class:`ArchAttention`); other values as is."""
    if not isinstance(value, Choice):
        return value
    option = value.options[indices[value.key]]
    return ArchAttention(option.name, dict(option.options)) if isinstance(option, AttentionCandidate) else option


def _same(option: Option, value: Any) -> bool:
    """Whether an option of a choice is the value an architecture took."""
    if isinstance(option, AttentionCandidate) or isinstance(value, ArchAttention):
        return (option is None) == (value is None) and (option is None or (
            option.name == value.name and dict(option.options) == value.options))
    return option == value


def _shown(value: Any) -> Any:
    return NONE if value is None else value.name if isinstance(value, ArchAttention) else value


class Skeleton(ABC):
    """A backbone's walk for spaces and architectures (module docstring). An implementation gives
    :meth:`parts` (of a space: choices), :meth:`arch_parts` (of an architecture: values), :meth:`arch` (the
    architecture of resolved parts) and, if it has fixed stages, :meth:`fixed`; choices, derive, indices and
    build follow from them."""

    @abstractmethod
    def parts(self, space: Any) -> Iterator[Part]:
        """The parts of a search space of this skeleton; widths and payloads are :class:`Choice`\\ s."""

    @abstractmethod
    def arch_parts(self, arch: Arch) -> Iterator[Part]:
        """The parts of an architecture of this skeleton; widths are ints, payloads op names, attentions."""

    @abstractmethod
    def arch(self, space: Any, parts: list[Part], common: dict[str, Any]) -> Arch:
        """The architecture whose parts are ``parts`` (``space``'s, resolved), with the ``common`` fields."""

    def fixed(self, source: Any) -> dict[str, nn.Module]:
        """The modules of the fixed ``stage`` parts of ``source`` (a space or an architecture), by stage name."""
        return {}

    def build(self, source: Any, parts: Iterable[Part], build: Build, channels: Callable[[Any], int],
              stage: Callable[..., nn.Module] = nn.Sequential) -> tuple[Backbone, dict[str, nn.Module]]:
        """The backbone and the attention slots of ``parts`` (those of ``source``, a space or an architecture):
        :meth:`fixed` for the fixed stages, ``build(part)`` for every other part (:func:`assemble`)."""
        fixed = self.fixed(source)
        return assemble(parts, lambda part: fixed[part.stage] if part.kind == "stage" else build(part), channels, stage)

    def choices(self, space: Any) -> list[Choice]:
        """The choices of ``space`` in walk order, each once."""
        found: dict[str, Choice] = {}
        for part in self.parts(space):
            found.update({v.key: v for v in part.values() if isinstance(v, Choice) and v.key not in found})
        return list(found.values())

    def derive(self, space: Any, indices: Mapping[str, int], common: dict[str, Any]) -> Arch:
        """The architecture taking option ``indices[key]`` of every choice of ``space``, with the ``common``
        fields of every arch.json (format, version, space, input size, FLOPs, parameters, search)."""
        parts = [replace(p, width_in=resolve(p.width_in, indices), width_out=resolve(p.width_out, indices),
                         payload=resolve(p.payload, indices)) for p in self.parts(space)]
        return self.arch(space, parts, common)

    def indices(self, space: Any, arch: Arch, source: str) -> dict[str, int]:
        """The option index of every choice of ``space`` that ``arch`` takes; a :class:`ConfigError` naming
        ``source`` when ``arch`` has other parts than ``space`` or a value that is no option of its choice."""
        ours = list(self.parts(space))
        theirs = list(self.arch_parts(arch)) if arch.skeleton == space.skeleton else []
        if [(p.kind, p.stage, p.index) for p in ours] != [(p.kind, p.stage, p.index) for p in theirs]:
            raise ConfigError(f"arch '{source}': its stages do not match those of the space '{space.name}'")
        indices: dict[str, int] = {}
        for part, taken in zip(ours, theirs):
            for choice, value in zip(part.values(), taken.values()):
                if not isinstance(choice, Choice) or choice.key in indices:
                    continue
                found = [i for i, option in enumerate(choice.options) if _same(option, value)]
                if not found:
                    raise ConfigError(f"arch '{source}': {choice.key} = {_shown(value)!r} is not an option of the "
                                      f"space '{space.name}' (options: {', '.join(choice.labels)})")
                indices[choice.key] = found[0]
        return indices


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


class MobileNetV2Skeleton(Skeleton):
    """A stem conv, stages of inverted-residual blocks (``skip`` only where a block's input and output shapes
    may agree), an attention slot after each stage and a 1×1 head conv."""

    def parts(self, space: Any) -> Iterator[Part]:
        widths = [Choice(f"{STEM}/width", (space.stem_channels,)),
                  *(Choice(f"{s.name}/width", tuple(s.widths)) for s in space.stages)]
        plans = []
        for i, stage in enumerate(space.stages):
            out, ops = widths[i + 1], []
            for b in range(stage.blocks):
                width_in, stride = (widths[i], stage.stride) if b == 0 else (out, 1)
                same = width_in == out or (len(width_in.options) == len(out.options) == 1
                                           and skip_allowed(width_in.options[0], out.options[0], stride))
                ops.append(Choice(f"{stage.name}/{b}/op",
                                  tuple(op for op in stage.ops if op != SKIP or (same and stride == 1))))
            plans.append(StagePlan(stage.name, stage.stride, out, ops,
                                   Choice(f"{stage.name}/attention", stage.attention.candidates())))
        return mobilenetv2_parts(widths[0], space.stem_stride, plans, space.head_channels)

    def arch_parts(self, arch: MobileNetV2Arch) -> Iterator[Part]:
        return mobilenetv2_parts(arch.stem_channels, arch.stem_stride,
                                 [StagePlan(s.name, s.stride, s.width, s.ops, s.attention) for s in arch.stages],
                                 arch.head_channels)

    def arch(self, space: Any, parts: list[Part], common: dict[str, Any]) -> MobileNetV2Arch:
        stages = []
        for stage in space.stages:
            blocks = [p for p in parts if p.stage == stage.name and p.kind == "block"]
            attention = next(p.payload for p in parts if p.stage == stage.name and p.kind == "attention")
            stages.append(ArchStage(stage.name, stage.stride, blocks[-1].width_out, [p.payload for p in blocks],
                                    attention))
        return MobileNetV2Arch(**common, stem_channels=space.stem_channels, stem_stride=space.stem_stride,
                               head_channels=space.head_channels, stages=tuple(stages))


class ResNet50Skeleton(Skeleton):
    """torchvision's ResNet-50 (:func:`dcsnas.models.backbones.resnet50`), fixed, and an attention slot after
    each stage the space lists (at that stage's channels)."""

    @staticmethod
    def _parts(last_stride: int, attentions: dict[str, Any]) -> Iterator[Part]:
        strides = {"stem": 4, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 16 * last_stride}
        width, stride = 3, 1
        for name in RESNET50_STAGES:
            yield Part("stage", name, 0, width, RESNET50_CHANNELS[name], stride, strides[name])
            width, stride = RESNET50_CHANNELS[name], strides[name]
            if name in attentions:
                yield Part("attention", name, 0, width, width, stride, stride, attentions[name])

    def parts(self, space: Any) -> Iterator[Part]:
        return self._parts(space.last_stride, {s.name: Choice(f"{s.name}/attention", s.attention.candidates())
                                               for s in space.stages})

    def arch_parts(self, arch: ResNet50Arch) -> Iterator[Part]:
        return self._parts(arch.last_stride, {s.name: s.attention for s in arch.stages})

    def arch(self, space: Any, parts: list[Part], common: dict[str, Any]) -> ResNet50Arch:
        attentions = {p.stage: p.payload for p in parts if p.kind == "attention"}
        return ResNet50Arch(**common, pretrained=space.pretrained, last_stride=space.last_stride,
                            stages=tuple(ResNetArchStage(s.name, attentions[s.name]) for s in space.stages))

    def fixed(self, source: Any) -> dict[str, nn.Module]:
        return dict(resnet50(source.pretrained, source.last_stride).stages)


SKELETONS: Registry[Skeleton] = Registry("skeleton")
SKELETONS.register("mobilenetv2")(MobileNetV2Skeleton())
SKELETONS.register("resnet50")(ResNet50Skeleton())


def skeleton_of(source: Any) -> Skeleton:
    """The skeleton of a space or an architecture (its ``skeleton`` field)."""
    return SKELETONS[source.skeleton]
