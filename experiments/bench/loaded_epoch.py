"""Wall time of a short ``dcsnas train`` with its default thread settings on a machine with other work
running; prints JSON.

Each case (a source tree ``--code`` and an OpenMP wait policy ``--policy``) starts ``--concurrent``
identical ``dcsnas train`` processes at once (the "other work" is another training, as when several people
or jobs share the machine; each process reads the OpenMP wait policy at start-up) and reports their mean
wall time and mean training time (``train_time_s``: the epoch loop); ``--load`` busy-looping Python
processes can be added beside them. Cases alternate over ``--repeats`` rounds so that all see the same
machine. ``--code DIR`` (repeatable) names the source trees to compare side by side (e.g. an export of the
previous version and this checkout); the environment is cleared of ``OMP_WAIT_POLICY``/``OMP_NUM_THREADS``
so that ``--policy default`` leaves each code its own defaults.

    python experiments/bench/loaded_epoch.py --data data/synthetic-tiny --code /tmp/old --code .
    python experiments/bench/loaded_epoch.py --data data/synthetic-tiny --code . --policy ACTIVE --policy PASSIVE
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

CONFIGS = Path(__file__).resolve().parents[1] / "cpu"


def spin() -> None:
    while True:
        pass


def run_case(code: str, policy: str, config: Path, data: str, out: Path, concurrent: int,
             epochs: int) -> tuple[float, float]:
    """Mean wall time and mean ``train_time_s`` (the epoch loop, from metrics.json), in seconds, of
    ``concurrent`` trainings started together; ``policy``: OMP_WAIT_POLICY, ``default`` leaves it unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(Path(code).resolve())
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, "-m", "dcsnas.cli", "train", "--config", str(config), "--set", f"data.root={data}",
           "--set", f"optim.epochs={epochs}", "--set", "eval.before_training=false", "--set", "eval.every=0",
           "--no-progress"]
    tic = time.perf_counter()
    procs = [subprocess.Popen([*cmd, "--out", str(out / str(i))], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for i in range(concurrent)]
    walls = []
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
        walls.append(time.perf_counter() - tic)
    train = [json.loads((out / str(i) / "metrics.json").read_text())["train_time_s"] for i in range(concurrent)]
    return sum(walls) / concurrent, sum(train) / concurrent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIGS / "tiny_test.yaml"),
                        help="a train config (default: experiments/cpu/tiny_test.yaml, the `tiny` preset)")
    parser.add_argument("--data", required=True, help="the synthetic data set the config trains on")
    parser.add_argument("--code", action="append", required=True, help="a source tree (repeatable)")
    parser.add_argument("--policy", action="append", help="OMP_WAIT_POLICY of a case: default (unset), PASSIVE, "
                        "ACTIVE (repeatable; default: default)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--concurrent", type=int, default=2, help="trainings of one case run at once")
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes beside the runs")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cases = [(code, policy) for code in args.code for policy in args.policy or ["default"]]
    spinners = [mp.Process(target=spin, daemon=True) for _ in range(args.load)]
    for p in spinners:
        p.start()
    results: dict[str, dict[str, list[float]]] = {f"{c} ({p})": {"wall_s": [], "train_s": []} for c, p in cases}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats):
                for i, (code, policy) in enumerate(cases):
                    wall, train = run_case(code, policy, Path(args.config), args.data, Path(tmp) / f"{r}-{i}",
                                           args.concurrent, args.epochs)
                    results[f"{code} ({policy})"]["wall_s"].append(round(wall, 1))
                    results[f"{code} ({policy})"]["train_s"].append(round(train, 1))
    finally:
        for p in spinners:
            p.terminate()
    print(json.dumps({"config": args.config, "data": args.data, "epochs": args.epochs, "cpu_count": os.cpu_count(),
                      "concurrent_trainings": args.concurrent, "load_processes": args.load,
                      "cases": {name: {**r, "median_train_s": sorted(r["train_s"])[len(r["train_s"]) // 2]}
                                for name, r in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
