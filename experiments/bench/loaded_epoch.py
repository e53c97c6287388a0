"""Wall time of a 1-epoch ``dcsnas train`` with its default thread settings on a machine with other work
running; prints JSON.

Each case starts ``--concurrent`` identical ``dcsnas train`` processes of one code at once (the "other work"
is another training, as when several people or jobs share the machine; each process reads the OpenMP wait
policy at start-up) and reports their mean wall time; ``--load`` busy-looping Python processes can be added
beside them. Cases alternate over ``--repeats`` rounds so that both codes see the same machine.
``--code DIR`` (repeatable) names the source trees to compare side by side (e.g. an export of the previous
version and this checkout); the environment is cleared of ``OMP_WAIT_POLICY``/``OMP_NUM_THREADS`` so each
code uses its own defaults.

    python experiments/bench/loaded_epoch.py --data data/synthetic-tiny --code /tmp/old --code .
    python experiments/bench/loaded_epoch.py --config experiments/cpu/dcsfb_mbv2_small.yaml \
        --data data/synthetic-small --code /tmp/old --code .
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


def run_case(code: str, config: Path, data: str, out: Path, concurrent: int) -> float:
    """Mean wall time (s) of ``concurrent`` trainings started together."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(Path(code).resolve())
    cmd = [sys.executable, "-m", "dcsnas.cli", "train", "--config", str(config), "--set", f"data.root={data}",
           "--set", "optim.epochs=1", "--set", "eval.before_training=false", "--no-progress"]
    tic = time.perf_counter()
    procs = [subprocess.Popen([*cmd, "--out", str(out / str(i))], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for i in range(concurrent)]
    walls = []
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
        walls.append(time.perf_counter() - tic)
    return sum(walls) / len(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIGS / "tiny_test.yaml"),
                        help="a train config (default: experiments/cpu/tiny_test.yaml, the `tiny` preset)")
    parser.add_argument("--data", required=True, help="the synthetic data set the config trains on")
    parser.add_argument("--code", action="append", required=True, help="a source tree (repeatable)")
    parser.add_argument("--concurrent", type=int, default=2, help="trainings of one code run at once")
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes beside the runs")
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
                    out = Path(tmp) / f"{r}-{i}"
                    times[code].append(run_case(code, Path(args.config), args.data, out, args.concurrent))
    finally:
        for p in spinners:
            p.terminate()
    print(json.dumps({"config": args.config, "data": args.data, "epochs": 1, "cpu_count": os.cpu_count(),
                      "concurrent_trainings": args.concurrent, "load_processes": args.load,
                      "seconds": {code: [round(t, 1) for t in ts] for code, ts in times.items()},
                      "median_s": {code: round(sorted(ts)[len(ts) // 2], 1) for code, ts in times.items()}},
                     indent=2))


if __name__ == "__main__":
    main()
