"""Deriving an architecture from a search (DESIGN §6): :func:`derive_arch` takes the argmax of every choice
of a space and writes it as a :mod:`dcsnas.models.arch` description, with the FLOPs and parameters of the
cost model. :func:`check_in_space` refuses an arch.json that is not one of the space a search kept beside it
(:data:`SPACE_FILE`); :func:`load_arch_in_space` is the loader of the commands that read a derived
architecture (``retrain``, ``bench``, ``compare``, the demo).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dcsnas.config import config_hash, read_yaml
from dcsnas.errors import ConfigError
from dcsnas.models.arch import ARCH_FORMAT, ARCH_VERSION, Arch, load_arch
from dcsnas.models.skeleton import SKELETONS
from dcsnas.nas.cost import CostModel
from dcsnas.nas.space import SearchSpace, parse_space

SPACE_FILE = "space.yaml"  # the copy of its space a search keeps beside its arch.json


def check_in_space(arch: Arch, space: SearchSpace, source: str) -> dict[str, int]:
    """Refuse an architecture that is not one of ``space``: another space (``search.space_hash``), or a
    width, op or attention that is not an option of its choice (a hand-edited arch.json); else its option
    indices (:meth:`~dcsnas.models.skeleton.Skeleton.indices`)."""
    stored = arch.search.get("space_hash")
    if stored != config_hash(space):
        raise ConfigError(f"arch '{source}' was not derived from the space beside it: search.space_hash = "
                          f"{stored!r}, the space's hash is {config_hash(space)!r}")
    return SKELETONS[space.skeleton].indices(space, arch, source)


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
    """The architecture taking option ``indices[key]`` of every choice (the argmax, for a search)
    (:meth:`~dcsnas.models.skeleton.Skeleton.derive`), with the cost model's FLOPs and parameters."""
    return SKELETONS[space.skeleton].derive(space, indices, dict(
        format=ARCH_FORMAT, version=ARCH_VERSION, space=space.name, input_size=list(costs.input_size),
        flops=costs.exact(indices, "flops"), params=costs.exact(indices, "params"), search=search))
