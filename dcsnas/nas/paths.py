"""The paths of the supernet that a search's weight steps train (``search.sampling``), drawn from a generator.

- ``gumbel`` (FBNet, GDAS): the path is a Gumbel-softmax sample of α (the supernet draws it itself).
- ``uniform`` (SPOS: Guo et al., "Single Path One-Shot Neural Architecture Search with Uniform Sampling",
  ECCV 2020): every weight step trains one path whose options are drawn uniformly and independently,
  decoupled from α, so that every candidate trains equally often whatever α says (:func:`uniform_path`).
- ``fair`` (FairNAS: Chu et al., "FairNAS: Rethinking Evaluation Fairness of Weight Sharing Neural
  Architecture Search", ICCV 2021): every weight step trains m paths on the same batch and takes one
  optimizer step on their summed losses; the m paths together use every option of every choice with m
  options exactly once (strict fairness; m = the largest number of options), each choice with fewer
  options every one of its options at least once (:func:`fair_paths`).
- ``sandwich`` (Yu et al., "BigNAS: Scaling Up Neural Architecture Search with Big Single-Stage Models",
  ECCV 2020; the sandwich rule of Yu & Huang, "Universally Slimmable Networks", ICCV 2019): every weight
  step trains the costliest path, the cheapest one and n uniform ones on the same batch, one optimizer step on
  their summed losses; all but the costliest also learn its soft labels (in-place distillation,
  :func:`~dcsnas.losses.distillation.soft_label_distillation`) (:func:`sandwich_paths`).

A path maps every choice key to an option index. Draws come from the supernet's architecture generator, the
same on every DDP rank, so all ranks train the same paths.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from dcsnas.models.skeleton import Choice

Path = dict[str, int]


def _randint(high: int, count: int, generator: torch.Generator) -> list[int]:
    return torch.randint(high, (count,), generator=generator, device=generator.device).tolist()


def uniform_path(choices: Mapping[str, Choice], generator: torch.Generator) -> Path:
    """One path: every choice's option uniform over its options, independently."""
    return {key: _randint(len(choice.options), 1, generator)[0] for key, choice in choices.items()}


def fair_paths(choices: Mapping[str, Choice], generator: torch.Generator) -> list[Path]:
    """m paths (m = the most options of a choice): per choice a random permutation of its n options,
    followed by m - n options drawn uniformly, dealt out to the paths in a random order."""
    m = max(len(choice.options) for choice in choices.values())
    columns = {}
    for key, choice in choices.items():
        n = len(choice.options)
        options = torch.randperm(n, generator=generator, device=generator.device).tolist()
        options += _randint(n, m - n, generator)
        order = torch.randperm(m, generator=generator, device=generator.device).tolist()
        columns[key] = [options[i] for i in order]
    return [{key: column[k] for key, column in columns.items()} for k in range(m)]


def sandwich_paths(choices: Mapping[str, Choice], cheapest: Path, costliest: Path, n: int,
                   generator: torch.Generator) -> list[Path]:
    """The costliest path, the cheapest one and ``n`` paths of :func:`uniform_path`, in that order."""
    return [dict(costliest), dict(cheapest)] + [uniform_path(choices, generator) for _ in range(n)]
