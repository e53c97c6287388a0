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
from dcsnas.models.arch import MAX_WIDTH, RESNET50_STAGES, check_stage_name
from dcsnas.models.blocks import SKIP, parse_op
from dcsnas.models.skeleton import NONE, SKELETONS, AttentionCandidate, Choice, Part

SPACE_VERSION = 1
DEFAULT_OPS = ("ir_k3_e3", "ir_k3_e6", "ir_k5_e3", "ir_k5_e6", SKIP)
# attention type in a space file → (registry name, fixed options)
ATTENTION_TYPES: dict[str, tuple[str, dict[str, str]]] = {
    "sa": ("sa", {}), "csa": ("csa", {}), "csalr": ("csalr", {}),
    "dcs-sa": ("dcs", {"backend": "sa"}), "dcs-csa": ("dcs", {"backend": "csa"}),
    "dcs-csalr": ("dcs", {"backend": "csalr"}),
}


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


class _Space:
    """What every space gives through its skeleton (:data:`dcsnas.models.skeleton.SKELETONS`)."""

    def parts(self) -> Iterator[Part]:
        """The skeleton's parts; widths and payloads are :class:`Choice`\\ s."""
        return SKELETONS[self.skeleton].parts(self)

    def choices(self) -> list[Choice]:
        """Every choice of the space, in the order the network runs them."""
        return SKELETONS[self.skeleton].choices(self)


@dataclass
class MobileNetV2Space(_Space):
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
        for part in self.parts():
            if part.kind == "block" and not part.payload.options:
                i = names.index(part.stage)
                raise ValueError(f"stages[{i}].ops = {self.stages[i].ops}: block {part.index} of stage "
                                 f"'{part.stage}' has no candidate op ('skip' is impossible where the stride or "
                                 "the width changes)")


@dataclass
class ResNetStageSpace:
    """A stage of the fixed ResNet-50 and the attention candidates after it."""

    name: str
    attention: AttentionSpace = field(default_factory=AttentionSpace)

    def __post_init__(self) -> None:
        if self.name not in RESNET50_STAGES:
            raise ValueError(f"stage {self.name!r} is not a ResNet-50 stage; allowed: {', '.join(RESNET50_STAGES)}")


@dataclass
class ResNet50Space(_Space):
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



SearchSpace = Union[MobileNetV2Space, ResNet50Space]
SPACE_TYPES: dict[str, type] = {"mobilenetv2": MobileNetV2Space, "resnet50": ResNet50Space}


def parse_space(data: dict, source: str) -> SearchSpace:
    """A search space from its YAML mapping; ``source`` names it in errors."""
    version = data.get("version", SPACE_VERSION)
    if version != SPACE_VERSION:
        raise ConfigError(f"search space '{source}': version = {version!r}; this dcsnas reads version {SPACE_VERSION}")
    skeleton = data.get("skeleton")
    if not isinstance(skeleton, str) or skeleton not in SPACE_TYPES:
        raise ConfigError(f"search space '{source}': key 'skeleton' = {skeleton!r}; allowed: {', '.join(SPACE_TYPES)}")
    try:
        space = from_dict(SPACE_TYPES[skeleton], data)
    except ConfigError as exc:
        raise ConfigError(f"search space '{source}': {exc}") from None
    _check_attention_widths(space, source)
    return space


def _check_attention_widths(space: SearchSpace, source: str) -> None:
    """Every attention candidate must accept every width of its slot (groups, qk_ratio)."""
    names = [s.name for s in space.stages]
    for part in space.parts():
        if part.kind != "attention":
            continue
        widths = part.width_out.options if isinstance(part.width_out, Choice) else (part.width_out,)
        for candidate in part.payload.options:
            for width in widths if candidate is not None else ():
                try:
                    create_attention(candidate.name, width, **candidate.options)
                except ConfigError as exc:
                    raise ConfigError(f"search space '{source}': stages[{names.index(part.stage)}].attention "
                                      f"({part.stage}, {candidate.label}, width {width}): {exc}") from None


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    return parse_space(read_yaml(path), str(path))
