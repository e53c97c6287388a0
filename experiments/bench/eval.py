"""Benchmark of Re-ID evaluation (features -> metrics) at Market-1501 and MSMT17 scale; prints JSON.

Each case runs in a fresh subprocess so its peak resident memory (``ru_maxrss``) is its own. Features are random
2048-d float32 vectors (generated in chunks) with a realistic identity/camera structure; only the evaluation is
timed, not the generation. ``cpu_seconds`` (all threads) and the 1-minute load average before the run tell
whether other processes shared the 2 cores.

    python experiments/bench/eval.py --case market|msmt|rerank|all
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

CASES = {
    # n_query, n_gallery, identities, distractors (pid 0, gallery only), cameras, rerank
    "market": {"n_q": 3368, "n_g": 15913, "n_ids": 751, "n_distractors": 2798, "n_cams": 6, "rerank": False},
    "msmt": {"n_q": 11659, "n_g": 82161, "n_ids": 3060, "n_distractors": 0, "n_cams": 15, "rerank": False},
    "rerank": {"n_q": 3368, "n_g": 15913, "n_ids": 751, "n_distractors": 2798, "n_cams": 6, "rerank": True},
}
DIM = 2048


def labels(n_q, n_g, n_ids, n_distractors, n_cams, rng):
    """Identities 1..n_ids, each seen by 2..n_cams cameras; gallery = identity images + distractors (pid 0);
    queries = images of random (identity, camera) pairs. Returns q_pids, g_pids, q_camids, g_camids."""
    seen = np.argsort(rng.random((n_ids, n_cams)), axis=1)  # row p - 1: identity p's cameras come first
    num_seen = rng.integers(2, n_cams + 1, n_ids)

    def camera_of(pids):
        return seen[pids - 1, (rng.random(len(pids)) * num_seen[pids - 1]).astype(np.int64)]

    g_pids = np.concatenate([np.arange(1, n_ids + 1), rng.integers(1, n_ids + 1, n_g - n_distractors - n_ids)])
    g_camids = np.concatenate([camera_of(g_pids), rng.integers(0, n_cams, n_distractors)])
    g_pids = np.concatenate([g_pids, np.zeros(n_distractors, dtype=np.int64)])
    q_pids = rng.integers(1, n_ids + 1, n_q)
    q_camids = camera_of(q_pids)
    return q_pids, g_pids, q_camids, g_camids


def features(n, rng, chunk=8192):
    out = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, chunk):
        out[s : s + chunk] = rng.standard_normal((min(chunk, n - s), DIM), dtype=np.float32)
    return out


def run_case(name: str) -> dict:
    import torch

    from dcsnas.metrics import evaluate_features, evaluate_rank, pairwise_distance

    torch.set_num_threads(2)
    cfg = CASES[name]
    rng = np.random.default_rng(0)
    q_pids, g_pids, q_camids, g_camids = labels(
        cfg["n_q"], cfg["n_g"], cfg["n_ids"], cfg["n_distractors"], cfg["n_cams"], rng
    )
    qf, gf = features(cfg["n_q"], rng), features(cfg["n_g"], rng)
    rss_inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    load = os.getloadavg()[0]
    t, cpu = time.perf_counter(), time.process_time()
    res = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric="euclidean", rerank=cfg["rerank"])
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    out = {
        "case": name,
        "num_query": cfg["n_q"],
        "num_gallery": cfg["n_g"],
        "dim": DIM,
        "rerank": cfg["rerank"],
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "load_average_before": round(load, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "rss_after_inputs_gib": round(rss_inputs, 3),
        "input_gib": round((qf.nbytes + gf.nbytes) / 2**30, 3),
        "mAP": round(res["mAP"], 5),
        "rank-1": round(float(res["cmc"][0]), 5),
        "num_valid_queries": res["num_valid_queries"],
    }
    if name == "market":  # the metric step alone, from a precomputed distance matrix
        distmat = pairwise_distance(qf, gf).numpy()
        t = time.perf_counter()
        evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
        out["distmat_to_metrics_seconds"] = round(time.perf_counter() - t, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        print(json.dumps(run_case(args.case)))
        return
    results = []
    for name in CASES if args.case == "all" else [args.case]:
        proc = subprocess.run(
            [sys.executable, __file__, "--case", name, "--in-process"], capture_output=True, text=True, check=False
        )
        if proc.returncode:
            sys.exit(f"case {name} failed:\n{proc.stderr}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(json.dumps({"cpu_threads": 2, "results": results}, indent=2))


if __name__ == "__main__":
    main()
