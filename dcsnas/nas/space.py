"""Search spaces (DESIGN §6): YAML files in ``search_spaces/``, validated on load.

Two skeletons:

- ``mobilenetv2``: a stem conv, stages and a 1×1 head conv (:mod:`dcsnas.models.blocks`). Per stage:
  ``widths`` (output channel choices, FBNetV2-style masks over the widest), ``blocks``, ``stride`` (of its
  first block), ``ops`` (candidates of every block; ``skip`` is kept only in blocks whose input and output
  shapes agree) and ``attention`` (candidates after the stage).
- ``resnet50``: torchvision's ResNet-50 stages (:func:`dcsnas.models.backbones.resnet50`), fixed; per stage
  only the attention is searched.

Every decision is a :class:`Choice` named ``<stage>/width``, ``<stage>/<block>/op`` or
``<stage>/attention``; a choice with one option is fixed (it gets no architecture logits). Errors are
:class:`~dcsnas.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Union

from dcsnas.attention import attention_options, create_attention
from dcsnas.config import from_dict, ranged, read_yaml
from dcsnas.errors import ConfigError
from dcsnas.models.arch import MAX_WIDTH, RESNET50_CHANNELS, RESNET50_STAGES, STEM, check_stage_name
from dcsnas.models.blocks import SKIP, parse_op, skip_allowed
from dcsnas.models.skeleton import Part, StagePlan, mobilenetv2_parts

SPACE_VERSION = 1
NONE = "none"
DEFAULT_OPS = ("ir_k3_e3", "ir_k3_e6", "ir_k5_e3", "ir_k5_e6", SKIP)
# attention type in a space file → (registry name, fixed options)
ATTENTION_TYPES: dict[str, tuple[str, dict[str, str]]] = {
    "sa": ("sa", {}), "csa": ("csa", {}), "csalr": ("csalr", {}),
    "dcs-sa": ("dcs", {"backend": "sa"}), "dcs-csa": ("dcs", {"backend": "csa"}),
    "dcs-csalr": ("dcs", {"backend": "csalr"}),
}


@dataclass(frozen=True)
class AttentionCandidate:
    """One attention option: ``create_attention(name, channels, **options)``; ``label`` e.g. ``dcs-csalr-g2``."""

    label: str
    name: str
    options: dict[str, Any]


Option = Union[int, str, Optional[AttentionCandidate]]  # a width, an op name, an attention (None: no attention)


@dataclass(frozen=True)
class Choice:
    """A decision of the space: ``options`` in order (the architecture logits index them)."""

    key: str
    options: tuple[Option, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(NONE if o is None else o.label if isinstance(o, AttentionCandidate) else str(o)
                     for o in self.options)

    @property
    def searchable(self) -> bool:
        return len(self.options) > 1


@dataclass
class AttentionSpace:
    """Attention candidates after a stage: ``none`` (if listed) and every (type, groups) pair of the other
    ``types``; each type receives the ``options`` it accepts (e.g. ``landmarks`` only the compressed ones)."""

    types: list[str] = field(default_factory=lambda: [NONE])
    groups: list[int] = ranged(default_factory=lambda: [1], ge=1, le=MAX_WIDTH)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.types:
            raise ValueError("attention.types is empty; list at least 'none'")
        for t in self.types:
            if t != NONE and t not in ATTENTION_TYPES:
                raise ValueError(f"attention type {t!r}; allowed: {', '.join([NONE, *ATTENTION_TYPES])}")
        if len(set(self.types)) < len(self.types) or len(set(self.groups)) < len(self.groups):
            raise ValueError("attention.types and attention.groups must not repeat a value")
        if not self.groups or any(g < 1 for g in self.groups):
            raise ValueError(f"attention.groups = {self.groups}; expected positive ints")
        accepted = set().union(*(attention_options(*_registry(t)) for t in self.types if t != NONE))
        for key in self.options:
            if key in ("groups", "backend") or key not in accepted:
                raise ValueError(f"attention option {key!r} is not accepted by any of the types {self.types}"
                                 + ("; groups are listed in attention.groups" if key == "groups" else ""))

    def candidates(self) -> tuple[Optional[AttentionCandidate], ...]:
        out: list[Optional[AttentionCandidate]] = []
        for t in self.types:
            if t == NONE:
                out.append(None)
                continue
            name, fixed = ATTENTION_TYPES[t]
            accepted = attention_options(*_registry(t))
            shared = {k: v for k, v in self.options.items() if k in accepted}
            out.extend(AttentionCandidate(f"{t}-g{g}", name, {**fixed, **shared, "groups": g}) for g in self.groups)
        return tuple(out)


def _registry(attention_type: str) -> tuple[str, str]:
    name, fixed = ATTENTION_TYPES[attention_type]
    return name, fixed.get("backend", "sa")


@dataclass
class StageSpace:
    """A stage of the mobilenetv2 skeleton (see the module docstring)."""

    name: str
    widths: list[int] = ranged(ge=1, le=MAX_WIDTH, length=(1, 64))
    blocks: int = ranged(1, ge=1, le=64)
    stride: int = 1
    ops: list[str] = field(default_factory=lambda: list(DEFAULT_OPS))
    attention: AttentionSpace = field(default_factory=AttentionSpace)

    def __post_init__(self) -> None:
        check_stage_name(self.name)
        if not self.widths or any(w < 1 for w in self.widths) or len(set(self.widths)) < len(self.widths):
            raise ValueError(f"widths = {self.widths}; expected distinct positive channel counts")
        if self.blocks < 1 or self.stride not in (1, 2):
            raise ValueError(f"blocks = {self.blocks}, stride = {self.stride}; expected blocks >= 1, stride 1 or 2")
        if not self.ops or len(set(self.ops)) < len(self.ops):
            raise ValueError(f"ops = {self.ops}; expected a non-empty list without repeats")
        for op in self.ops:
            parse_op(op)


@dataclass
class BlockSlot:
    """Block ``index`` of stage ``stage``: its op choice and the width choices of its input and output."""

    stage: str
    index: int
    stride: int
    op: Choice
    width_in: Choice
    width_out: Choice


@dataclass
class MobileNetV2Space:
    """A MobileNetV2-like macro skeleton with searched ops, widths and attentions."""

    name: str
    skeleton: Literal["mobilenetv2"]
    stages: list[StageSpace]
    version: int = SPACE_VERSION
    stem_channels: int = ranged(32, ge=1, le=MAX_WIDTH)
    stem_stride: int = 2
    head_channels: int = ranged(1280, ge=1, le=4 * MAX_WIDTH)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("stages is empty")
        names = [s.name for s in self.stages]
        if len(set(names)) < len(names):
            raise ValueError(f"stage names repeat: {names}")
        if self.stem_channels < 1 or self.stem_stride not in (1, 2) or self.head_channels < 1:
            raise ValueError("stem_channels and head_channels must be >= 1 and stem_stride 1 or 2")
        for slot in self.blocks():
            if not slot.op.options:
                i = names.index(slot.stage)
                raise ValueError(f"stages[{i}].ops = {self.stages[i].ops}: block {slot.index} of stage "
                                 f"'{slot.stage}' has no candidate op ('skip' is impossible where the stride or "
                                 "the width changes)")

    def width_choice(self, i: int) -> Choice:
        """The width choice of stage ``i`` (``-1``: the stem)."""
        if i < 0:
            return Choice(f"{STEM}/width", (self.stem_channels,))
        return Choice(f"{self.stages[i].name}/width", tuple(self.stages[i].widths))

    def blocks(self) -> Iterator[BlockSlot]:
        for i, stage in enumerate(self.stages):
            out = self.width_choice(i)
            for b in range(stage.blocks):
                width_in = self.width_choice(i - 1) if b == 0 else out
                stride = stage.stride if b == 0 else 1
                same = width_in == out or (len(width_in.options) == len(out.options) == 1
                                           and skip_allowed(width_in.options[0], out.options[0], stride))
                ops = tuple(op for op in stage.ops if op != SKIP or (same and stride == 1))
                yield BlockSlot(stage.name, b, stride, Choice(f"{stage.name}/{b}/op", ops), width_in, out)

    def attention_choice(self, i: int) -> Choice:
        return Choice(f"{self.stages[i].name}/attention", self.stages[i].attention.candidates())

    def parts(self) -> Iterator[Part]:
        """The skeleton's parts (:func:`dcsnas.models.skeleton.mobilenetv2_parts`): widths are width
        choices, block payloads op choices, attention payloads attention choices."""
        slots = list(self.blocks())
        plans = [StagePlan(stage.name, stage.stride, self.width_choice(i),
                           [s.op for s in slots if s.stage == stage.name], self.attention_choice(i))
                 for i, stage in enumerate(self.stages)]
        return mobilenetv2_parts(self.width_choice(-1), self.stem_stride, plans, self.head_channels)

    def choices(self) -> list[Choice]:
        out = [self.width_choice(-1)]
        for i, stage in enumerate(self.stages):
            out.append(self.width_choice(i))
            out.extend(slot.op for slot in self.blocks() if slot.stage == stage.name)
            out.append(self.attention_choice(i))
        return out


@dataclass
class ResNetStageSpace:
    """A stage of the fixed ResNet-50 and the attention candidates after it."""

    name: str
    attention: AttentionSpace = field(default_factory=AttentionSpace)

    def __post_init__(self) -> None:
        if self.name not in RESNET50_STAGES:
            raise ValueError(f"stage {self.name!r} is not a ResNet-50 stage; allowed: {', '.join(RESNET50_STAGES)}")


@dataclass
class ResNet50Space:
    """The fixed ResNet-50 with searched attention placement, type and groups per stage."""

    name: str
    skeleton: Literal["resnet50"]
    stages: list[ResNetStageSpace]
    version: int = SPACE_VERSION
    pretrained: bool = False
    last_stride: int = 1

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if not names or len(set(names)) < len(names):
            raise ValueError(f"stages = {names}; expected distinct ResNet-50 stage names")
        if self.last_stride not in (1, 2):
            raise ValueError(f"last_stride = {self.last_stride}; expected 1 or 2")

    def attention_choice(self, i: int) -> Choice:
        return Choice(f"{self.stages[i].name}/attention", self.stages[i].attention.candidates())

    def choices(self) -> list[Choice]:
        return [self.attention_choice(i) for i in range(len(self.stages))]


SearchSpace = Union[MobileNetV2Space, ResNet50Space]
SKELETONS: dict[str, type] = {"mobilenetv2": MobileNetV2Space, "resnet50": ResNet50Space}


def parse_space(data: dict, source: str) -> SearchSpace:
    """A search space from its YAML mapping; ``source`` names it in errors."""
    version = data.get("version", SPACE_VERSION)
    if version != SPACE_VERSION:
        raise ConfigError(f"search space '{source}': version = {version!r}; this dcsnas reads version {SPACE_VERSION}")
    skeleton = data.get("skeleton")
    if not isinstance(skeleton, str) or skeleton not in SKELETONS:
        raise ConfigError(f"search space '{source}': key 'skeleton' = {skeleton!r}; allowed: {', '.join(SKELETONS)}")
    try:
        space = from_dict(SKELETONS[skeleton], data)
    except ConfigError as exc:
        raise ConfigError(f"search space '{source}': {exc}") from None
    _check_attention_widths(space, source)
    return space


def _check_attention_widths(space: SearchSpace, source: str) -> None:
    """Every attention candidate must accept every width of its stage (groups, qk_ratio)."""
    if isinstance(space, MobileNetV2Space):
        widths = {s.name: s.widths for s in space.stages}
    else:
        widths = {s.name: [RESNET50_CHANNELS[s.name]] for s in space.stages}
    for i, stage in enumerate(space.stages):
        for candidate in stage.attention.candidates():
            for width in widths[stage.name] if candidate is not None else ():
                try:
                    create_attention(candidate.name, width, **candidate.options)
                except ConfigError as exc:
                    raise ConfigError(f"search space '{source}': stages[{i}].attention ({stage.name}, "
                                      f"{candidate.label}, width {width}): {exc}") from None



def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    return parse_space(read_yaml(path), str(path))
