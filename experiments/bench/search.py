"""Benchmark: one training step of the DCS-DNAS supernet (hard and soft mode) against the derived network's
own training step, on the same batch. Prints JSON.

For each of ``--archs`` architectures drawn at random from the space, the supernet's logits are set so that
hard mode samples that architecture, and its training step is compared with the step of the network derived
from it (``dcsnas.models`` backbone ``searched``). Soft mode runs every candidate whatever the logits; it is
measured once. Steps: :func:`dcsnas.bench.model.train_throughput` (forward, CE + triplet, backward, Adam;
median time). Peak memory of a step after a warm-up step (activations, gradients, a fresh Adam state), in
MiB above what was in use before it: on CUDA from the timing run; on CPU in a fresh worker process per
model, started with :func:`dcsnas.bench.memory.memory_env` and measured with
:func:`dcsnas.bench.memory.peak_memory`.

    python experiments/bench/search.py --space search_spaces/mbv2_reid.yaml --height 128 --width 64
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def build(case: dict) -> torch.nn.Module:
    """The derived network (``case["arch"]``: an arch.json) or the supernet in ``case["mode"]`` whose
    logits select ``case["indices"]`` (a gap of 50 between logits: Gumbel noise never overturns it)."""
    from dcsnas.models.builder import ModelConfig, create_model
    from dcsnas.nas.space import load_space
    from dcsnas.nas.supernet import SuperNet

    torch.manual_seed(0)
    if "arch" in case:
        return create_model(ModelConfig(backbone="searched", arch=case["arch"]), case["classes"])
    model = SuperNet(load_space(case["space"]), case["classes"], mode=case["mode"])
    with torch.no_grad():
        for key, alpha in model.arch.alphas.items():
            alpha.zero_()[case["indices"][key]] = 50.0
    return model


def step_memory_mb(case: dict) -> float | None:
    """Peak memory (MiB) of a training step of ``case``'s model after a warm-up step, on ``case["device"]``."""
    from dcsnas.bench.memory import peak_memory
    from dcsnas.bench.model import train_throughput

    model = build(case)
    train_throughput(model, case["classes"], case["shape"], case["device"], steps=1, warmup=0)  # warm-up
    with peak_memory(case["device"]) as peak:
        train_throughput(model, case["classes"], case["shape"], case["device"], steps=1, warmup=0)
    return peak.mb


def measure(case: dict) -> dict:
    """``step_ms`` (median over ``case["steps"]`` after one warm-up step) and ``peak_mb``."""
    from dcsnas.bench.memory import memory_env
    from dcsnas.bench.model import train_throughput

    timing = train_throughput(build(case), case["classes"], case["shape"], case["device"], steps=case["steps"],
                              warmup=1)
    if torch.device(case["device"]).type == "cuda":
        peak = timing["peak_memory_mb"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            spec = Path(tmp) / "case.json"
            spec.write_text(json.dumps(case))
            proc = subprocess.run([sys.executable, __file__, "--memory-worker", str(spec)], capture_output=True,
                                  text=True, env=memory_env(mmap_threshold=4096), check=True)
        peak = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"step_ms": timing["step_ms"], "peak_mb": peak}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/mbv2_reid.yaml")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="images per step (4 per identity)")
    parser.add_argument("--archs", type=int, default=3, help="random architectures compared")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-worker", metavar="CASE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(json.dumps(step_memory_mb(json.loads(Path(args.memory_worker).read_text()))))
        return {}

    from dcsnas.models.arch import write_arch
    from dcsnas.nas.arch import derive_arch
    from dcsnas.nas.cost import measure_costs
    from dcsnas.nas.space import load_space

    space = load_space(args.space)
    costs = measure_costs(space, (args.height, args.width))
    rng = random.Random(args.seed)
    common = {"space": args.space, "classes": args.batch // 4, "shape": [args.batch, 3, args.height, args.width],
              "steps": args.steps, "device": args.device}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.archs):
            indices = {c.key: rng.randrange(len(c.options)) for c in space.choices()}
            arch = derive_arch(space, indices, costs, {})
            write_arch(Path(tmp) / f"arch{i}.json", arch)
            derived = measure({**common, "arch": str(Path(tmp) / f"arch{i}.json")})
            hard = measure({**common, "mode": "hard", "indices": indices})
            rows.append({"mflops": arch.flops / 1e6, "derived": derived, "hard": hard,
                         "hard_over_derived": hard["step_ms"] / derived["step_ms"]})
    soft = measure({**common, "mode": "soft", "indices": {c.key: 0 for c in space.choices()}})
    result = {
        "space": space.name, "input": [args.height, args.width], "batch": args.batch, "device": args.device,
        "threads": args.threads, "archs": rows, "soft": soft,
        "hard_over_derived_mean": statistics.mean(r["hard_over_derived"] for r in rows),
        "hard_over_derived_max": max(r["hard_over_derived"] for r in rows),
        "soft_over_derived_mean": soft["step_ms"] / statistics.mean(r["derived"]["step_ms"] for r in rows),
        "target_hard_over_derived_max": 2.0,
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
