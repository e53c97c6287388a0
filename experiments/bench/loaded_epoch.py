"""Wall time of a 1-epoch ``dcsnas train`` with its default thread settings on a machine with other work
running; prints JSON.

Each case runs ``dcsnas train`` in a fresh process (so the OpenMP wait policy is read at start-up) while
``--load`` busy-looping processes hold CPU cores (the "other engineers' jobs"); cases alternate over
``--repeats`` rounds so that both codes see the same machine. ``--code DIR`` (repeatable) names the source
trees to compare side by side (e.g. an export of the previous version and this checkout); the environment
is cleared of ``OMP_WAIT_POLICY``/``OMP_NUM_THREADS`` so each code uses its own defaults.

    python experiments/bench/loaded_epoch.py --data data/synthetic-small --code /tmp/old --code .
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "cpu" / "dcsfb_mbv2_small.yaml"


def spin() -> None:
    while True:
        pass


def run_case(code: str, data: str, out: Path, extra: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(Path(code).resolve())
    cmd = [sys.executable, "-m", "dcsnas.cli", "train", "--config", str(CONFIG), "--set", f"data.root={data}",
           "--set", "optim.epochs=1", "--set", "eval.before_training=false", "--out", str(out), "--no-progress",
           *extra]
    tic = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the synthetic `small` data set")
    parser.add_argument("--code", action="append", required=True, help="a source tree (repeatable)")
    parser.add_argument("--load", type=int, default=1, help="busy-looping processes beside the runs")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    spinners = [mp.Process(target=spin, daemon=True) for _ in range(args.load)]
    for p in spinners:
        p.start()
    times: dict[str, list[float]] = {code: [] for code in args.code}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats):
                for i, code in enumerate(args.code):
                    times[code].append(run_case(code, args.data, Path(tmp) / f"{r}-{i}", []))
    finally:
        for p in spinners:
            p.terminate()
    print(json.dumps({"config": str(CONFIG), "epochs": 1, "cpu_count": os.cpu_count(), "load_processes": args.load,
                      "seconds": {code: [round(t, 1) for t in ts] for code, ts in times.items()},
                      "median_s": {code: round(sorted(ts)[len(ts) // 2], 1) for code, ts in times.items()}},
                     indent=2))


if __name__ == "__main__":
    main()
