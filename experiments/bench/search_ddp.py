"""Benchmark: DCS-DNAS search throughput under DDP, ``torchrun --nproc_per_node N`` for each N of ``--procs``
(gloo on CPU, ``--threads`` threads per process; nccl on CUDA with ``--device cuda``, one GPU per process).
Prints JSON.

Every run is the real ``dcsnas search`` (``dcsnas.cli.main``) on the same synthetic data (generated once,
``--preset``) with the recipe ``--config``, every step a weight step and an architecture step
(``search.warmup_epochs=0``), started by torchrun on this script in worker mode, which times each rank's
training epochs (:func:`dcsnas.engine.loop.train_epoch`: wall clock and the process's CPU time) and counts the
images of its weight and architecture steps. Per run and rank: ``images``, ``wall_s``, ``cpu_s``; ``images_per_s``
(wall) and ``images_per_cpu_s``. Per N, the medians over ranks and repeats: ``images_per_s_per_process``,
``images_per_s_total`` (× N), ``scaling_efficiency`` (images/s per process over the first N's), and
``cpu_efficiency`` (images per CPU-second over the first N's: the work DDP adds, without the time a rank
waits for the others, which on a loaded machine is mostly waiting to be scheduled). ``--repeat R`` runs the
``--procs`` sequence R times, interleaved, so that a change of the machine's load hits every N alike.

    python experiments/bench/search_ddp.py --procs 1 2 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def worker(out: Path, argv: list[str]) -> int:
    """``dcsnas.cli.main(argv)`` in one torchrun rank, timing its training epochs into ``out/rank<r>.json``."""
    from dcsnas.cli import main as cli
    from dcsnas.engine import loop
    from dcsnas.nas.search import Searcher

    totals = {"images": 0, "wall_s": 0.0, "cpu_s": 0.0}
    train_epoch, begin_epoch, arch_step = loop.train_epoch, Searcher.begin_epoch, Searcher.arch_step

    def timed_epoch(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        stats = train_epoch(*args, **kwargs)
        totals["wall_s"] += time.perf_counter() - wall
        totals["cpu_s"] += time.process_time() - cpu
        return stats

    def counted_begin(self, epoch):  # the epoch's step: a weight step (+ an architecture step)
        step = begin_epoch(self, epoch)

        def counted_step(images, pids):
            totals["images"] += images.shape[0]
            return step(images, pids)
        return counted_step

    def counted_arch(self, images, pids, ib_on):
        totals["images"] += images.shape[0]
        return arch_step(self, images, pids, ib_on)

    loop.train_epoch = timed_epoch
    Searcher.begin_epoch, Searcher.arch_step = counted_begin, counted_arch
    code = cli(argv)
    (out / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(totals))
    return code


def run(procs: int, args, out: Path, overrides: list[str]) -> list[dict]:
    """One torchrun of ``procs`` workers; per rank its totals and rates."""
    timings = out / "timings"
    timings.mkdir(parents=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
               __file__, "--worker", str(timings), "search", "--config", str(args.config), "--out", str(out / "run"),
               "--no-progress"]
    for override in overrides:
        command += ["--set", override]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"torchrun with {procs} processes failed:\n{proc.stderr[-4000:]}")
    ranks = []
    for rank in range(procs):
        t = json.loads((timings / f"rank{rank}.json").read_text())
        ranks.append({"procs": procs, "rank": rank, **{k: round(v, 3) for k, v in t.items()},
                      "images_per_s": round(t["images"] / t["wall_s"], 2),
                      "images_per_cpu_s": round(t["images"] / t["cpu_s"], 2)})
    return ranks


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--config", type=Path, default=ROOT / "experiments" / "cpu" / "search_tiny.yaml")
    parser.add_argument("--space", default="search_spaces/tiny.yaml")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, help="synthetic data folder to use (default: generated in a temp dir)")
    args = parser.parse_args(argv)

    from dcsnas.data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / f"synthetic-{args.preset}"
        if args.data is None:
            generate(args.preset, 0, data, show_progress=False)
        overrides = [f"data.root={data}", f"search.space={args.space}", f"data.p={args.p}", f"data.k={args.k}",
                     f"optim.epochs={args.epochs}", "search.warmup_epochs=0", f"device={args.device}",
                     "data.num_workers=0", f"threads={args.threads}", f"data.transforms.height={args.height}",
                     f"data.transforms.width={args.width}"]
        runs = []
        for repeat in range(args.repeat):
            for procs in args.procs:
                runs += run(procs, args, Path(tmp) / f"{procs}-{repeat}", overrides)
    median = []
    for procs in args.procs:
        mine = [r for r in runs if r["procs"] == procs]
        median.append({"procs": procs,
                       "images_per_s_per_process": statistics.median(r["images_per_s"] for r in mine),
                       "images_per_cpu_s_per_process": statistics.median(r["images_per_cpu_s"] for r in mine)})
    for m in median:
        m["images_per_s_total"] = round(m["procs"] * m["images_per_s_per_process"], 2)
        m["scaling_efficiency"] = round(m["images_per_s_per_process"] / median[0]["images_per_s_per_process"], 3)
        m["cpu_efficiency"] = round(m["images_per_cpu_s_per_process"] / median[0]["images_per_cpu_s_per_process"], 3)
    report = {"device": args.device, "preset": args.preset, "space": args.space, "p": args.p, "k": args.k,
              "input_size": [args.height, args.width], "epochs": args.epochs, "threads_per_process": args.threads,
              "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()), "median": median, "runs": runs}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        sys.exit(worker(Path(sys.argv[2]), sys.argv[3:]))
    main()
