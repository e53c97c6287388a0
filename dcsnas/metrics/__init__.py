"""Re-ID evaluation: CMC, mAP and mINP (Market-1501 and CUHK03 protocols), k-reciprocal re-ranking, chunked
evaluation of features, rank-list images.

- :func:`evaluate_rank`: metrics of a query-gallery distance matrix;
- :func:`evaluate_features`: distances and metrics from features, a chunk of queries at a time (CPU or CUDA);
- :func:`pairwise_distance`, :func:`rerank_distance`: the distances themselves;
- :func:`summarize`: the JSON form of a result; :func:`load_features`/:func:`save_features`: the .npz features file;
- :func:`save_rank_lists`: PNG rank lists.
"""

from dcsnas.metrics.distance import PairwiseDistance, pairwise_distance
from dcsnas.metrics.evaluate import evaluate_features, summarize
from dcsnas.metrics.feature_file import load_features, save_features
from dcsnas.metrics.rank import RankAccumulator, evaluate_rank
from dcsnas.metrics.rerank import KReciprocalReranker, rerank_distance
from dcsnas.metrics.validation import MetricsInputError
from dcsnas.metrics.visualize import save_rank_lists

__all__ = [
    "KReciprocalReranker",
    "MetricsInputError",
    "PairwiseDistance",
    "RankAccumulator",
    "evaluate_features",
    "evaluate_rank",
    "load_features",
    "pairwise_distance",
    "rerank_distance",
    "save_features",
    "save_rank_lists",
    "summarize",
]
