"""``arch.json``: the architecture a search derives (DESIGN §6), versioned and validated on load.

Content (``format: dcsnas-arch``, ``version: 1``): the skeleton (``mobilenetv2``: stem, per stage its
stride, width and op per block, head conv; ``resnet50``: pretrained flag and last stride), the attention
per stage with its options (``null``: none), the input size (height, width) it was searched for, its
FLOPs (at that size, batch 1) and parameters (backbone + attentions, without the identity-dependent
Re-ID head), and ``search``: the search config's hash and the space's name and hash.

:func:`derive_arch` takes the argmax of every choice; :func:`load_arch` reads a file back, refusing another
format or version and an architecture that does not fit its skeleton, with errors naming file and key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from dcsnas.config import config_hash, from_dict, read_yaml, to_dict
from dcsnas.errors import ConfigError
from dcsnas.models.blocks import SKIP, parse_op, skip_allowed
from dcsnas.nas.cost import CostModel
from dcsnas.nas.space import (CONV_HEAD, RESNET50_CHANNELS, RESNET50_STAGES, STEM, AttentionCandidate,
                              MobileNetV2Space, SearchSpace, parse_space)
from dcsnas.utils.io import atomic_write_json, read_json

ARCH_FORMAT = "dcsnas-arch"
ARCH_VERSION = 1
SPACE_FILE = "space.yaml"  # the copy of its space a search keeps beside its arch.json
# The widest channel count an arch.json may ask for (stage widths, stem, head conv): twice ResNet-50's widest
# stage. It keeps a mistyped width (100000 would allocate hundreds of GB) a config error.
MAX_WIDTH = 4096


@dataclass
class ArchAttention:
    """``create_attention(name, width, **options)`` after the stage."""

    name: str
    options: dict[str, Any]


@dataclass
class ArchStage:
    """A stage of a derived mobilenetv2 network: ``ops[b]`` is block b's op; block 0 has ``stride``."""

    name: str
    stride: int
    width: int
    ops: list[str]
    attention: Optional[ArchAttention] = None

    def __post_init__(self) -> None:
        if self.name in (STEM, CONV_HEAD) or not self.name.isidentifier():
            raise ValueError(f"stage name {self.name!r} is not allowed")
        if self.stride not in (1, 2) or not 1 <= self.width <= MAX_WIDTH or not self.ops:
            raise ValueError(f"stage {self.name!r}: expected stride 1 or 2, width in [1, {MAX_WIDTH}] and at least "
                             f"one op, got stride {self.stride}, width {self.width}")
        for op in self.ops:
            parse_op(op)


@dataclass
class ResNetArchStage:
    name: str
    attention: Optional[ArchAttention] = None

    def __post_init__(self) -> None:
        if self.name not in RESNET50_STAGES:
            raise ValueError(f"{self.name!r} is not a ResNet-50 stage; allowed: {', '.join(RESNET50_STAGES)}")


@dataclass
class _ArchBase:
    format: str
    version: int
    space: str
    input_size: list[int]
    flops: int
    params: int
    search: dict[str, Any]

    def __post_init__(self) -> None:
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"input_size = {self.input_size}; expected [height, width]")


@dataclass
class MobileNetV2Arch(_ArchBase):
    skeleton: Literal["mobilenetv2"] = "mobilenetv2"
    stem_channels: int = 32
    stem_stride: int = 2
    head_channels: int = 1280
    stages: tuple[ArchStage, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.stages:
            raise ValueError("stages is empty")
        if not (1 <= self.stem_channels <= MAX_WIDTH and 1 <= self.head_channels <= MAX_WIDTH):
            raise ValueError(f"stem_channels = {self.stem_channels}, head_channels = {self.head_channels}; "
                             f"expected channel counts in [1, {MAX_WIDTH}]")
        width = self.stem_channels
        for i, stage in enumerate(self.stages):
            for b, op in enumerate(stage.ops):
                stride = stage.stride if b == 0 else 1
                if op == SKIP and not skip_allowed(width, stage.width, stride):
                    raise ValueError(f"stages[{i}].ops[{b}] = 'skip' does not fit the skeleton: the block maps "
                                     f"{width}→{stage.width} channels with stride {stride}")
                width = stage.width


@dataclass
class ResNet50Arch(_ArchBase):
    skeleton: Literal["resnet50"] = "resnet50"
    pretrained: bool = False
    last_stride: int = 1
    stages: tuple[ResNetArchStage, ...] = ()


Arch = Union[MobileNetV2Arch, ResNet50Arch]
_SKELETONS = {"mobilenetv2": MobileNetV2Arch, "resnet50": ResNet50Arch}


def attention_widths(arch: Arch) -> dict[str, int]:
    """The channel count each stage's attention runs on."""
    if isinstance(arch, MobileNetV2Arch):
        return {s.name: s.width for s in arch.stages}
    return {s.name: RESNET50_CHANNELS[s.name] for s in arch.stages}


def parse_arch(data: Any, source: str) -> Arch:
    """Validate an arch.json mapping; ``source`` names it in errors."""
    if not isinstance(data, dict) or data.get("format") != ARCH_FORMAT:
        raise ConfigError(f"'{source}' is not an arch.json: expected a mapping with format = '{ARCH_FORMAT}'")
    if data.get("version") != ARCH_VERSION:
        raise ConfigError(f"arch '{source}': version = {data.get('version')!r}, expected {ARCH_VERSION} "
                          f"(this dcsnas reads arch.json version {ARCH_VERSION}; derive it again)")
    skeleton = data.get("skeleton")
    if skeleton not in _SKELETONS:
        raise ConfigError(f"arch '{source}': key 'skeleton' = {skeleton!r}; allowed: {', '.join(_SKELETONS)}")
    try:
        arch = from_dict(_SKELETONS[skeleton], data)
    except ConfigError as exc:
        raise ConfigError(f"arch '{source}': {exc}") from None
    names = [s.name for s in arch.stages]
    if len(set(names)) < len(names):
        raise ConfigError(f"arch '{source}': stage names repeat: {names}")
    _check_attentions(arch, source)
    return arch


def _check_attentions(arch: Arch, source: str) -> None:
    from dcsnas.attention import create_attention

    widths = attention_widths(arch)
    for i, stage in enumerate(arch.stages):
        if stage.attention is not None:
            try:
                create_attention(stage.attention.name, widths[stage.name], **stage.attention.options)
            except ConfigError as exc:
                raise ConfigError(f"arch '{source}': stages[{i}].attention ({stage.name}, "
                                  f"{widths[stage.name]} channels): {exc}") from None


def check_in_space(arch: Arch, space: SearchSpace, source: str) -> None:
    """Refuse an architecture that is not one of ``space``: another space (``search.space_hash``), or a
    width, op or attention that is not an option of its choice (a hand-edited arch.json)."""
    stored = arch.search.get("space_hash")
    if stored != config_hash(space):
        raise ConfigError(f"arch '{source}' was not derived from the space beside it: search.space_hash = "
                          f"{stored!r}, the space's hash is {config_hash(space)!r}")
    if len(arch.stages) != len(space.stages) or isinstance(arch, MobileNetV2Arch) != isinstance(space, MobileNetV2Space):
        raise ConfigError(f"arch '{source}': its stages do not match those of the space '{space.name}'")
    taken: dict[str, Any] = {f"{STEM}/width": arch.stem_channels} if isinstance(arch, MobileNetV2Arch) else {}
    for stage in arch.stages:
        taken[f"{stage.name}/attention"] = stage.attention
        if isinstance(stage, ArchStage):
            taken[f"{stage.name}/width"] = stage.width
            taken.update({f"{stage.name}/{b}/op": op for b, op in enumerate(stage.ops)})

    def same(option: Any, value: Any) -> bool:
        if isinstance(option, AttentionCandidate) or isinstance(value, ArchAttention):
            return (option is None) == (value is None) and (option is None or (
                option.name == value.name and dict(option.options) == value.options))
        return option == value

    for choice in space.choices():
        if choice.key in taken and not any(same(o, taken[choice.key]) for o in choice.options):
            value = taken[choice.key]
            shown = "none" if value is None else value.name if isinstance(value, ArchAttention) else value
            raise ConfigError(f"arch '{source}': {choice.key} = {shown!r} is not an option of the space "
                              f"'{space.name}' (options: {', '.join(choice.labels)})")


def load_arch(path: str | Path) -> Arch:
    """Read and validate an arch.json file; when the search's copy of its space lies beside it (a search run
    directory), the architecture must be one of that space (:func:`check_in_space`)."""
    arch = parse_arch(read_json(path, "arch file"), str(path))
    space_file = Path(path).parent / SPACE_FILE
    if space_file.is_file():
        check_in_space(arch, parse_space(read_yaml(space_file), str(space_file)), str(path))
    return arch


def derive_arch(space: SearchSpace, indices: dict[str, int], costs: CostModel, search: dict[str, Any]) -> Arch:
    """The architecture taking option ``indices[key]`` of every choice (the argmax, for a search)."""
    common = dict(format=ARCH_FORMAT, version=ARCH_VERSION, space=space.name, input_size=list(costs.input_size),
                  flops=costs.exact(indices, "flops"), params=costs.exact(indices, "params"), search=search)

    def attention(i: int) -> Optional[ArchAttention]:
        choice = space.attention_choice(i)
        candidate = choice.options[indices[choice.key]]
        return None if candidate is None else ArchAttention(candidate.name, dict(candidate.options))

    if isinstance(space, MobileNetV2Space):
        slots = list(space.blocks())
        stages = []
        for i, stage in enumerate(space.stages):
            width = space.width_choice(i)
            ops = [s.op.options[indices[s.op.key]] for s in slots if s.stage == stage.name]
            stages.append(ArchStage(stage.name, stage.stride, width.options[indices[width.key]], ops, attention(i)))
        return MobileNetV2Arch(**common, stem_channels=space.stem_channels, stem_stride=space.stem_stride,
                               head_channels=space.head_channels, stages=tuple(stages))
    stages = [ResNetArchStage(s.name, attention(i)) for i, s in enumerate(space.stages)]
    return ResNet50Arch(**common, pretrained=space.pretrained, last_stride=space.last_stride, stages=tuple(stages))


def write_arch(path: str | Path, arch: Arch) -> None:
    """Write ``arch`` as JSON, atomically: format, version and skeleton first, then the rest."""
    data = to_dict(arch)
    first = ("format", "version", "skeleton", "space", "input_size", "flops", "params")
    atomic_write_json(path, {**{k: data[k] for k in first}, **data})
