"""Benchmark: render the ``small`` synthetic preset on one CPU core; prints JSON with images/s.

The process is pinned to one core and renders with one worker (the generator does not import torch).

Usage: python experiments/bench/synth.py [--preset small] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from dcsnas.data.synthetic import generate

    with tempfile.TemporaryDirectory() as out:
        stats = generate(args.preset, args.seed, out, show_progress=False, workers=1)
    print(
        json.dumps(
            {
                "preset": args.preset,
                "images": stats["images"],
                "seconds": stats["seconds"],
                "images_per_s": stats["images_per_s"],
            }
        )
    )


if __name__ == "__main__":
    main()
