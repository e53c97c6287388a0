"""A trained DCS-DNAS supernet as the evaluator of NNI's multi-trial strategies (``nni.evaluator: supernet``).

Each architecture NNI samples is scored by the supernet of a finished ``dcsnas search`` run with its shared
weights (:func:`~dcsnas.nas.search.load_supernet`): the BatchNorm statistics of the path are recalibrated on
the search's weight-split batches, then the path is evaluated by retrieval among the images of the search's
architecture split (per identity the first image of each camera a query, the rest gallery), which the
weights never trained on. No network is trained and the test split is never read, so random search and
regularized evolution over the supernet cost seconds per trial and select as honestly as the DCS-DNAS
architecture steps do (the one-shot evaluation of SPOS, Guo et al. 2020, with NNI's strategies).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dcsnas.nas.search import Searcher, load_supernet
from dcsnas.nas.space import SearchSpace
from dcsnas.nni.deps import Evaluator, nni
from dcsnas.nni.space import sample_indices

SCRATCH = "supernet-eval"
"""The folder of the NNI search's run directory that holds the supernet's scratch run (its logs)."""


class SupernetEvaluator(Evaluator):
    """NNI evaluator: a sample's metric is ``metric`` (mAP, mINP or rank-1, in [0, 1]) of its path in the
    trained ``searcher`` on the architecture split; ``scores`` keeps every trial's metrics."""

    def __init__(self, searcher: Searcher, space: SearchSpace, metric: str = "mAP"):
        self.searcher, self.space, self.metric = searcher, space, metric
        self.scores: list[dict[str, Any]] = []

    @classmethod
    def from_run(cls, search_run: str | Path, root: Path, metric: str = "mAP") -> "SupernetEvaluator":
        """The supernet of ``search_run``, its scratch run in ``root``/:data:`SCRATCH` (replaced: this
        evaluator's own folder in the NNI search's run directory)."""
        if (root / SCRATCH).exists():
            shutil.rmtree(root / SCRATCH)
        searcher = load_supernet(search_run, root / SCRATCH)
        return cls(searcher, searcher.space, metric)

    def evaluate(self, model: Any) -> Any:
        raise NotImplementedError("SupernetEvaluator scores NNI's sample, not a model instance (see _execute)")

    def _execute(self, model: Any) -> float:
        """NNI's hook for an executable model: score ``model.sample`` and report it as the trial's result."""
        indices = sample_indices(self.space, model.sample)
        result = self.searcher.evaluate_architecture(indices, "arch", show_progress=False)
        self.scores.append({"indices": indices, **{k: v for k, v in result.items() if k != "cmc"}})
        nni.report_final_result(float(result[self.metric]))
        return float(result[self.metric])

    def close(self) -> None:
        self.searcher.logger.close()
