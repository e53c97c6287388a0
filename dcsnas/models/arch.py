"""``arch.json``: the architecture description (DESIGN §6) every searched network is built from, versioned and
validated on load. ``dcsnas search``/``derive`` write it (:func:`dcsnas.nas.arch.derive_arch`); the
``searched`` backbone (:mod:`dcsnas.models.searched`) rebuilds the network from it with no search code.

Content (``format: dcsnas-arch``, ``version: 1``): the skeleton (``mobilenetv2``: stem, per stage its
stride, width and op per block, head conv; ``resnet50``: pretrained flag and last stride), the attention
per stage with its options (``null``: none), the input size (height, width) it was searched for, its
FLOPs (at that size, batch 1) and parameters (backbone + attentions, without the identity-dependent
Re-ID head), and ``search``: the search config's hash and the space's name and hash.

:func:`load_arch` reads a file back, refusing another format or version and an architecture that does not
fit its skeleton, with errors naming file and key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from torch import nn

from dcsnas.attention import create_attention
from dcsnas.config import from_dict, ranged, to_dict
from dcsnas.errors import ConfigError
from dcsnas.models.blocks import SKIP, parse_op, skip_allowed
from dcsnas.utils.io import atomic_write_json, read_json

ARCH_FORMAT = "dcsnas-arch"
ARCH_VERSION = 1
# Stage names of the mobilenetv2 skeleton around the searched stages, and ResNet-50's stages with their
# output channels (:func:`dcsnas.models.backbones.resnet50`).
STEM, CONV_HEAD = "stem", "conv_head"
RESNET50_CHANNELS = {"stem": 64, "layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
RESNET50_STAGES = tuple(RESNET50_CHANNELS)
# The widest channel count an arch.json may ask for (stage widths, stem, head conv): twice ResNet-50's widest
# stage. It keeps a mistyped width (100000 would allocate hundreds of GB) a config error.
MAX_WIDTH = 4096


_MODULE_ATTRIBUTES = frozenset(dir(nn.ModuleDict()))  # class and instance attributes (training, forward, keys...)


def check_stage_name(name: str) -> None:
    """A stage name becomes a submodule's name: it must be an identifier, neither the stem's nor the conv
    head's, and no attribute of ``nn.ModuleDict`` (``training``, ``forward``, ``keys``...: a stage of that
    name would shadow it). Else ``ValueError``."""
    if not (name.isascii() and name.isidentifier()) or name in (STEM, CONV_HEAD) or name in _MODULE_ATTRIBUTES:
        raise ValueError(f"stage name {name!r}: expected an identifier other than '{STEM}', '{CONV_HEAD}' and the "
                         "attributes of torch.nn.Module / ModuleDict (e.g. training, forward, keys)")


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
        check_stage_name(self.name)
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
    flops: int = ranged(ge=0, le=1e15)
    params: int = ranged(ge=0, le=1e12)
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

    def attention_widths(self) -> dict[str, int]:
        """The channel count each stage's attention runs on."""
        return {s.name: s.width for s in self.stages}

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

    def attention_widths(self) -> dict[str, int]:
        """The channel count each stage's attention runs on."""
        return {s.name: RESNET50_CHANNELS[s.name] for s in self.stages}


Arch = Union[MobileNetV2Arch, ResNet50Arch]
ARCH_TYPES = {"mobilenetv2": MobileNetV2Arch, "resnet50": ResNet50Arch}


def parse_arch(data: Any, source: str) -> Arch:
    """Validate an arch.json mapping; ``source`` names it in errors."""
    if not isinstance(data, dict) or data.get("format") != ARCH_FORMAT:
        raise ConfigError(f"'{source}' is not an arch.json: expected a mapping with format = '{ARCH_FORMAT}'")
    if data.get("version") != ARCH_VERSION:
        raise ConfigError(f"arch '{source}': version = {data.get('version')!r}, expected {ARCH_VERSION} "
                          f"(this dcsnas reads arch.json version {ARCH_VERSION}; derive it again)")
    skeleton = data.get("skeleton")
    if not isinstance(skeleton, str) or skeleton not in ARCH_TYPES:
        raise ConfigError(f"arch '{source}': key 'skeleton' = {skeleton!r}; allowed: {', '.join(ARCH_TYPES)}")
    try:
        arch = from_dict(ARCH_TYPES[skeleton], data)
    except ConfigError as exc:
        raise ConfigError(f"arch '{source}': {exc}") from None
    names = [s.name for s in arch.stages]
    if len(set(names)) < len(names):
        raise ConfigError(f"arch '{source}': stage names repeat: {names}")
    _check_attentions(arch, source)
    return arch


def _check_attentions(arch: Arch, source: str) -> None:
    widths = arch.attention_widths()
    for i, stage in enumerate(arch.stages):
        if stage.attention is not None:
            try:
                create_attention(stage.attention.name, widths[stage.name], **stage.attention.options)
            except ConfigError as exc:
                raise ConfigError(f"arch '{source}': stages[{i}].attention ({stage.name}, "
                                  f"{widths[stage.name]} channels): {exc}") from None


def load_arch(path: str | Path) -> Arch:
    """Read and validate an arch.json file (:func:`parse_arch`)."""
    return parse_arch(read_json(path, "arch file"), str(path))


def write_arch(path: str | Path, arch: Arch) -> None:
    """Write ``arch`` as JSON, atomically: format, version and skeleton first, then the rest."""
    data = to_dict(arch)
    first = ("format", "version", "skeleton", "space", "input_size", "flops", "params")
    atomic_write_json(path, {**{k: data[k] for k in first}, **data})
