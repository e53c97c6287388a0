"""Benchmark of Re-ID evaluation (features -> metrics) at Market-1501 and MSMT17 scale; prints JSON.

Each case runs in a fresh subprocess so its peak resident memory (``ru_maxrss``) is its own. Features are random
2048-d float32 vectors (generated in chunks) with a realistic identity/camera structure; only the evaluation is
timed, not the generation. ``cpu_seconds`` (all threads) and the 1-minute load average before the run tell
whether other processes shared the cores.

The ``market`` case also times, interleaved with the evaluation over ``--rounds`` rounds (medians reported):

- ``gemm``: the distance GEMM alone, ``qf @ gf.T`` in one product;
- ``torchreid``: torchreid's evaluation of features, its ``compute_distance_matrix`` (|q|^2 + |g|^2, then
  ``addmm_``; transcribed here) and its Cython ``evaluate_cy`` (full ``argsort`` of every row), when the compiled
  module is importable (``torchreid.metrics.rank_cylib.rank_cy``, ``torchreid.reid.metrics.rank_cylib.rank_cy``,
  or the module named by ``--torchreid-cy``); its mAP and CMC are compared with ours.

    python experiments/bench/eval.py --case market|msmt|rerank|all [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
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
TORCHREID_CY = ("torchreid.metrics.rank_cylib.rank_cy", "torchreid.reid.metrics.rank_cylib.rank_cy")


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


def torchreid_evaluator(module_name=None):
    """torchreid's compiled ``evaluate_cy`` and the module it came from, or (None, reason)."""
    for name in [module_name] if module_name else TORCHREID_CY:
        try:
            return importlib.import_module(name).evaluate_cy, name
        except ImportError:
            continue
    return None, f"not importable: {module_name or ', '.join(TORCHREID_CY)}"


def torchreid_evaluate(evaluate_cy, qf, gf, q_pids, g_pids, q_camids, g_camids):
    """torchreid's path from features to (cmc, mAP): compute_distance_matrix(euclidean), then evaluate_cy."""
    import torch

    m, n = qf.size(0), gf.size(0)
    distmat = torch.pow(qf, 2).sum(dim=1, keepdim=True).expand(m, n) + \
        torch.pow(gf, 2).sum(dim=1, keepdim=True).expand(n, m).t()
    distmat.addmm_(qf, gf.t(), beta=1, alpha=-2)
    return evaluate_cy(distmat.numpy(), q_pids, g_pids, q_camids, g_camids, 50)


def _timed(fn):
    t, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - cpu


def run_case(name: str, threads: int, rounds: int, torchreid_cy=None) -> dict:
    import torch

    from dcsnas.metrics import evaluate_features, evaluate_rank, pairwise_distance

    torch.set_num_threads(threads)
    cfg = CASES[name]
    rng = np.random.default_rng(0)
    q_pids, g_pids, q_camids, g_camids = labels(
        cfg["n_q"], cfg["n_g"], cfg["n_ids"], cfg["n_distractors"], cfg["n_cams"], rng
    )
    qf, gf = features(cfg["n_q"], rng), features(cfg["n_g"], rng)
    rss_inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    load = os.getloadavg()[0]

    def ours():
        return evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric="euclidean", rerank=cfg["rerank"])

    res, seconds, cpu = _timed(ours)
    out = {
        "case": name,
        "num_query": cfg["n_q"],
        "num_gallery": cfg["n_g"],
        "dim": DIM,
        "rerank": cfg["rerank"],
        "threads": threads,
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
    if name != "market":
        return out
    distmat = pairwise_distance(qf, gf).numpy()  # the metric step alone, from a precomputed distance matrix
    out["distmat_to_metrics_seconds"] = round(_timed(lambda: evaluate_rank(distmat, q_pids, g_pids, q_camids,
                                                                           g_camids))[1], 3)
    distmat = None  # freed before the comparison
    qt, gt = torch.from_numpy(qf), torch.from_numpy(gf)
    evaluate_cy, source = torchreid_evaluator(torchreid_cy)
    contenders = {"ours": ours, "gemm": lambda: qt @ gt.T}
    if evaluate_cy is not None:
        contenders["torchreid"] = lambda: torchreid_evaluate(evaluate_cy, qt, gt, q_pids, g_pids, q_camids, g_camids)
    wall, cpu_time, results = {k: [] for k in contenders}, {k: [] for k in contenders}, {}
    for _ in range(rounds):  # interleaved, so that load from other processes spreads over all of them
        for key, fn in contenders.items():
            results[key], t, c = _timed(fn)
            wall[key].append(t)
            cpu_time[key].append(c)
    side = {key: {"seconds": round(statistics.median(wall[key]), 3), "seconds_min": round(min(wall[key]), 3),
                  "cpu_seconds": round(statistics.median(cpu_time[key]), 3)} for key in contenders}
    side["rounds"], side["load_average_after"] = rounds, round(os.getloadavg()[0], 2)
    for measure in ("seconds", "seconds_min", "cpu_seconds"):
        side[f"ours_over_gemm_{measure}"] = round(side["ours"][measure] / side["gemm"][measure], 3)
        if "torchreid" in side:
            side[f"torchreid_over_ours_{measure}"] = round(side["torchreid"][measure] / side["ours"][measure], 3)
    if evaluate_cy is None:
        side["torchreid"] = source
    else:
        cmc, mean_ap = results["torchreid"]
        side["torchreid_source"] = source
        side["torchreid_mAP_abs_difference"] = float(abs(mean_ap - results["ours"]["mAP"]))
        side["torchreid_cmc_max_abs_difference"] = float(np.abs(cmc - results["ours"]["cmc"]).max())
    out["side_by_side"] = side
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (and ranking threads)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the market comparison")
    parser.add_argument("--torchreid-cy", default=None, help="module that holds torchreid's compiled evaluate_cy")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        print(json.dumps(run_case(args.case, args.threads, args.rounds, args.torchreid_cy)))
        return
    results = []
    for name in CASES if args.case == "all" else [args.case]:
        command = [sys.executable, __file__, "--case", name, "--in-process", "--threads", str(args.threads),
                   "--rounds", str(args.rounds)] + (["--torchreid-cy", args.torchreid_cy] if args.torchreid_cy else [])
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"case {name} failed:\n{proc.stderr}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(json.dumps({"cpu_threads": args.threads, "results": results}, indent=2))


if __name__ == "__main__":
    main()
