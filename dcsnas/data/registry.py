"""Data sets by name: ``build_dataset(name, root, **options)``; registry ``DATASETS``
(:class:`~dcsnas.utils.registry.Registry`; the loaders of the other modules are registered here, where the
registry can import them all).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcsnas.data.base import ReIDDataset
from dcsnas.data.cuhk03 import load_cuhk03
from dcsnas.data.dukemtmcreid import load_dukemtmcreid
from dcsnas.data.folder import load_folder_dataset
from dcsnas.data.market1501 import load_market1501
from dcsnas.data.msmt17 import load_msmt17
from dcsnas.data.synthetic import META_NAME
from dcsnas.errors import DataError
from dcsnas.utils.registry import Registry

DATASETS: Registry[Callable[..., ReIDDataset]] = Registry("data set")
DATASETS.register("market1501")(load_market1501)
DATASETS.register("dukemtmcreid")(load_dukemtmcreid)
DATASETS.register("cuhk03")(load_cuhk03)
DATASETS.register("msmt17")(load_msmt17)
DATASETS.register("folder")(functools.partial(load_folder_dataset, "folder"))


@DATASETS.register("synthetic")
def load_synthetic(root: str | Path) -> ReIDDataset:
    """The synthetic data set written by ``dcsnas data synth`` (Market-1501 layout and naming); one whose
    ``synth_meta.json`` says it is not complete (a stopped ``data synth``) is refused."""
    meta = Path(root) / META_NAME
    if meta.is_file():
        try:
            complete = json.loads(meta.read_text()).get("complete") is True
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise DataError(f"synthetic data set '{root}': {META_NAME} is not valid JSON") from None
        if not complete:
            raise DataError(f"synthetic data set '{root}' is incomplete ({META_NAME} says complete: false: its "
                            "`dcsnas data synth` was stopped); generate it again with dcsnas data synth --out "
                            f"{root}")
    return load_folder_dataset("synthetic", root)


def build_dataset(name: str, root: str | Path, **options: Any) -> ReIDDataset:
    """Load data set ``name`` from ``root``; ``options`` are the loader's keyword arguments (checked)."""
    return DATASETS.create(name, "data.dataset", root, **options)
