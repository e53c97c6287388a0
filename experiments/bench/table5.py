"""Seed 001 Table 5 side by side: latency and memory overheads of SA and CSALR (G = 1, 2, 4, 8) over PCB.

The models are those of the paper configs (``experiments/paper/csalr/``: PCB on ResNet-50 at 384x128, the
attention after layer1, layer2 and layer3, 96 landmarks per group), built with ``model.pretrained=false``
(the weights do not change the cost) and profiled by :func:`dcsnas.bench.model.profile_models` in eval mode
without gradients: latency (median of ``--repeats`` forwards of a ``--batch`` batch, the models interleaved
in rounds) and peak memory of one forward above the weights and input (CPU: a fresh worker process, see
:mod:`dcsnas.bench.model`); and the peak memory of one training step (train-mode forward and backward, the
sum of the outputs as loss). Each overhead is (model - PCB) / PCB, next to the paper's, which the paper
reports as memory in MB/image and FPS (latency overhead = FPS_PCB / FPS - 1); the paper does not say
whether its memory is that of training or inference (its 138 MB/image for PCB is far above an inference
forward's), nor its batch. Ours are of the device named in the JSON.

Prints JSON, then the markdown table::

    python experiments/bench/table5.py [--quick] [--threads 1] [--device cpu|cuda] [--batch 4] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from dcsnas.bench.model import profile_models
from dcsnas.config import load_config
from dcsnas.engine.config import TrainConfig
from dcsnas.models.builder import create_model

CONFIGS = Path(__file__).resolve().parents[1] / "paper" / "csalr"
# row: (config, groups or None, paper memory MB/image, paper FPS) from seed 001 Table 5
ROWS = {
    "PCB": ("pcb_base.yaml", None, 137.64, 581.81),
    "PCB + SA": ("pcb_sa.yaml", 1, 300.68, 266.67),
    "PCB + CSALR G1": ("ablation_groups_1.yaml", 1, 165.00, 507.93),
    "PCB + CSALR G2": ("pcb_csalr.yaml", 2, 192.25, 460.43),
    "PCB + CSALR G4": ("ablation_groups_4.yaml", 4, 221.97, 418.30),
    "PCB + CSALR G8": ("ablation_groups_8.yaml", 8, 254.75, 380.95),
}
NUM_CLASSES = 751  # Market-1501 training identities


def build(config: str) -> tuple[torch.nn.Module, tuple[int, int]]:
    cfg = load_config(TrainConfig, CONFIGS / config, ["model.pretrained=false"])
    return create_model(cfg.model, NUM_CLASSES), (cfg.data.transforms.height, cfg.data.transforms.width)


def percent(value: float, base: float) -> float:
    return round(100 * (value / base - 1), 1)


def table(device: str, batch: int, repeats: int, warmup: int) -> list[dict]:
    models, shapes = [], []
    for config, *_ in ROWS.values():
        torch.manual_seed(0)
        model, size = build(config)
        models.append(model)
        shapes.append((batch, 3, *size))
    profiles = profile_models(models, shapes, device, repeats=repeats, warmup=warmup, train_memory=True)
    base = profiles[0]
    base_paper_memory, base_paper_fps = ROWS["PCB"][2], ROWS["PCB"][3]
    out = []
    for (name, (config, groups, paper_memory, paper_fps)), prof in zip(ROWS.items(), profiles):
        memory, train = prof["peak_memory_mb"], prof["train_peak_memory_mb"]
        out.append({
            "model": name, "config": f"experiments/paper/csalr/{config}", "groups": groups,
            "flops": prof["flops"], "latency_ms": round(prof["latency_ms"], 2),
            "latency_min_ms": round(prof["latency_min_ms"], 2),
            "latency_overhead_percent": percent(prof["latency_ms"], base["latency_ms"]),
            "peak_memory_mb": None if memory is None else round(memory, 1),
            "memory_mb_per_image": None if memory is None else round(memory / batch, 2),
            "memory_overhead_percent": None if memory is None else percent(memory, base["peak_memory_mb"]),
            "train_memory_mb_per_image": None if train is None else round(train / batch, 2),
            "train_memory_overhead_percent": None if train is None else percent(train,
                                                                               base["train_peak_memory_mb"]),
            "paper_memory_mb_per_image": paper_memory, "paper_fps": paper_fps,
            "paper_memory_overhead_percent": percent(paper_memory, base_paper_memory),
            "paper_latency_overhead_percent": percent(base_paper_fps, paper_fps),
        })
    return out


def markdown(rows: list[dict]) -> str:
    def cell(value, fmt):
        return "n/a" if value is None else format(value, fmt)

    lines = ["| model | latency ms | latency overhead | paper | inference MiB/image | overhead | "
             "training MiB/image | overhead | paper memory overhead |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['latency_ms']:.1f} | {r['latency_overhead_percent']:+.1f} % | "
                     f"{r['paper_latency_overhead_percent']:+.1f} % | {cell(r['memory_mb_per_image'], '.2f')} | "
                     f"{cell(r['memory_overhead_percent'], '+.1f')} % | {cell(r['train_memory_mb_per_image'], '.1f')}"
                     f" | {cell(r['train_memory_overhead_percent'], '+.1f')} % | "
                     f"{r['paper_memory_overhead_percent']:+.1f} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per model")
    parser.add_argument("--quick", action="store_true", help="batch 2, 2 timed forwards: a check that it runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch, repeats, warmup = (2, 2, 1) if args.quick else (args.batch, args.repeats, 2)
    load = os.getloadavg()
    rows = table(args.device, batch, repeats, warmup)
    print(json.dumps({
        "device": args.device, "threads": args.threads, "torch": torch.__version__, "batch": batch,
        "repeats": repeats, "quick": args.quick, "load_average_before": [round(v, 2) for v in load],
        "load_average_after": [round(v, 2) for v in os.getloadavg()], "rows": rows,
    }, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
