"""Deriving an architecture from a search (DESIGN §6): :func:`derive_arch` takes the argmax of every choice
of a space and writes it as a :mod:`dcsnas.models.arch` description, with the FLOPs and parameters of the
cost model. :func:`check_in_space` refuses an arch.json that is not one of the space a search kept beside it
(:data:`SPACE_FILE`); :func:`load_arch_in_space` is the loader of the commands that read a derived
architecture (``retrain``, ``bench``, ``compare``, the demo).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from dcsnas.config import config_hash, read_yaml
from dcsnas.errors import ConfigError
from dcsnas.models.arch import (
    ARCH_FORMAT,
    ARCH_VERSION,
    STEM,
    Arch,
    ArchAttention,
    ArchStage,
    MobileNetV2Arch,
    ResNet50Arch,
    ResNetArchStage,
    load_arch,
)
from dcsnas.nas.cost import CostModel
from dcsnas.nas.space import AttentionCandidate, MobileNetV2Space, SearchSpace, parse_space

SPACE_FILE = "space.yaml"  # the copy of its space a search keeps beside its arch.json


def check_in_space(arch: Arch, space: SearchSpace, source: str) -> None:
    """Refuse an architecture that is not one of ``space``: another space (``search.space_hash``), or a
    width, op or attention that is not an option of its choice (a hand-edited arch.json)."""
    stored = arch.search.get("space_hash")
    if stored != config_hash(space):
        raise ConfigError(f"arch '{source}' was not derived from the space beside it: search.space_hash = "
                          f"{stored!r}, the space's hash is {config_hash(space)!r}")
    if (len(arch.stages) != len(space.stages)
            or isinstance(arch, MobileNetV2Arch) != isinstance(space, MobileNetV2Space)):
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


def load_arch_in_space(path: str | Path) -> Arch:
    """Read and validate an arch.json file (:func:`dcsnas.models.arch.load_arch`); when the search's copy of its
    space lies beside it (a search run directory), the architecture must be one of that space
    (:func:`check_in_space`)."""
    arch = load_arch(path)
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
