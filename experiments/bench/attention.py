"""The attention benchmark's target case: B = 8, C = 256, 96x32 (ResNet-50 layer1 at 384x128), CPU fwd+bwd.

CSALR (96 landmarks, G = 2) against SA with the explicit map and SA's default path; prints JSON with the
measured rows and the target ratios (see :mod:`dcsnas.bench.attention` for the method).

    python experiments/bench/attention.py [--repeats 3] [--rounds 3]
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
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = run_cases(["sa_explicit", "sa_sdpa", "csalr_g2"], [TARGET_SHAPE], batch=8, repeats=args.repeats,
                     device="cpu", threads=2, rounds=args.rounds)
    print(json.dumps({"cpu_threads": 2, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                      "load_average_before": round(load, 2), "load_average_after": round(os.getloadavg()[0], 2),
                      "rows": rows, "targets": check_targets(rows)}, indent=2))


if __name__ == "__main__":
    main()
