"""The attention benchmark's target case: B = 8, C = 256, 96x32 (ResNet-50 layer1 at 384x128), CPU fwd+bwd.

CSALR (96 landmarks, G = 2) against SA with the explicit map and SA's default path; prints JSON with the
measured rows and the target ratios (see :mod:`dcsnas.bench.attention` for the method). ``--dtype bfloat16``
runs the forward under CPU autocast.

    python experiments/bench/attention.py [--repeats 3] [--rounds 3] [--threads 2] [--dtype float32|bfloat16]
        [--no-explicit]
"""

from __future__ import annotations

import argparse
import json
import os

from dcsnas.bench.attention import TARGET_SHAPE, check_targets, run_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the three cases")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--no-explicit", action="store_true", help="leave out SA with the explicit map (slowest)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    cases = ["sa_sdpa", "csalr_g2"] if args.no_explicit else ["sa_explicit", "sa_sdpa", "csalr_g2"]
    rows = run_cases(cases, [TARGET_SHAPE], batch=8, repeats=args.repeats, device="cpu", threads=args.threads,
                     rounds=args.rounds, dtype=args.dtype)
    print(json.dumps({"cpu_threads": args.threads, "dtype": args.dtype,
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                      "load_average_before": round(load, 2), "load_average_after": round(os.getloadavg()[0], 2),
                      "rows": rows, "targets": check_targets(rows)}, indent=2))


if __name__ == "__main__":
    main()
