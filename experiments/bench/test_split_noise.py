"""How much of a run's test mAP is the sampling of the test split? Per-query AP (Market protocol: the
gallery images of the query's identity and camera left out) of trained runs on their own data set, its
spread, the standard error of each run's mAP over the queries and, per pair of runs, the correlation of
their per-query APs and the standard error of their mAP difference. Prints JSON.

    python experiments/bench/test_split_noise.py RUN_DIR RUN_DIR ...
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np


def per_query_ap(arrays: dict) -> np.ndarray:
    """AP of every query that has a match (Euclidean distances of the features, as ``dcsnas eval``)."""
    qf, gf = np.asarray(arrays["qf"], np.float64), np.asarray(arrays["gf"], np.float64)
    dist = (qf ** 2).sum(1)[:, None] + (gf ** 2).sum(1)[None] - 2 * qf @ gf.T
    g_pids, g_cams = np.asarray(arrays["g_pids"]), np.asarray(arrays["g_camids"])
    aps = []
    for i, (pid, cam) in enumerate(zip(np.asarray(arrays["q_pids"]), np.asarray(arrays["q_camids"]))):
        keep = ~((g_pids == pid) & (g_cams == cam)) & (g_pids >= 0)
        match = (g_pids[keep][np.argsort(dist[i][keep], kind="stable")] == pid).astype(np.float64)
        if match.sum() > 0:
            aps.append(float((np.cumsum(match) / np.arange(1, len(match) + 1) * match).sum() / match.sum()))
    return np.array(aps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()

    from dcsnas.engine.evaluator import extract_run_features

    aps, report = {}, {"runs": {}, "pairs": []}
    for run in args.runs:
        arrays, _ = extract_run_features(run, show_progress=False)
        aps[run] = ap = per_query_ap({k: v.cpu().numpy() if hasattr(v, "cpu") else v for k, v in arrays.items()})
        report["runs"][run] = {"mAP": 100 * ap.mean(), "queries": len(ap), "ap_std": ap.std(ddof=1),
                               "mAP_se": 100 * ap.std(ddof=1) / np.sqrt(len(ap))}
    for a, b in itertools.combinations(args.runs, 2):
        diff = aps[a] - aps[b]
        report["pairs"].append({"runs": [a, b], "corr": float(np.corrcoef(aps[a], aps[b])[0, 1]),
                                "difference_se": 100 * diff.std(ddof=1) / np.sqrt(len(diff))})
    print(json.dumps(report, default=float))


if __name__ == "__main__":
    main()
