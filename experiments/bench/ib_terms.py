"""The IB bound's terms on one training batch of the ``tiny`` synthetic preset, for both ``loss.ib_ixf``
settings; prints JSON with each term's value (nats) and the norm of its gradient with respect to F (the
pooled embedding the classifier reads).

The recipe is experiments/cpu/tiny_test.yaml with η = 0.1 from epoch 0: the centroids and Q(a|y) come from
the epoch-start refresh of the untrained network, the batch is the epoch's first P×K batch.

Usage: python experiments/bench/ib_terms.py [--seed 0] [--data DIR (default: a fresh tiny preset)]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

RECIPE = Path(__file__).resolve().parents[1] / "cpu" / "tiny_test.yaml"


def ib_terms(data: str, seed: int) -> dict:
    import torch

    from dcsnas.config import load_config
    from dcsnas.engine.config import TrainConfig
    from dcsnas.engine.rundir import create_run_dir
    from dcsnas.engine.trainer import Trainer

    cfg = load_config(TrainConfig, RECIPE, [f"data.root={data}", f"seed={seed}", "device=cpu", "loss.ib_weight=0.1",
                                            "loss.ib_warmup_epochs=0"])
    with tempfile.TemporaryDirectory() as runs:
        trainer = Trainer(cfg, create_run_dir(Path(runs) / "run", "train", cfg), show_progress=False)
        trainer.begin_epoch(0)
        images, pids, _, _ = next(iter(trainer.train_loader))
        trainer.model.train()
        features = trainer.model(images)["pooled"].float()  # F: [B, C]
        ib = trainer.training.ib
        x = ib.input(images)
        report = {"batch": len(pids), "feature_dim": features.shape[1], "input_dim": x.shape[1],
                  "clusters": ib.bound.feature_centroids.shape[0]}
        for mode in ("authors", "batch_mi"):
            ib.bound.ixf = mode
            terms = ib.bound(features, x, pids)
            row = {}
            for name in ("ixf", "iyf", "total"):
                (grad,) = torch.autograd.grad(terms[name], features, retain_graph=True)
                row[name] = float(terms[name].detach())
                row[f"grad_norm_{name}"] = float(grad.norm())
            report[mode] = row
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="a tiny synthetic data set (default: generated in a temporary folder)")
    args = parser.parse_args()
    if args.data:
        print(json.dumps(ib_terms(args.data, args.seed)))
        return
    from dcsnas.data.synthetic import generate

    with tempfile.TemporaryDirectory() as root:
        generate("tiny", 0, root, show_progress=False)
        print(json.dumps(ib_terms(root, args.seed)))


if __name__ == "__main__":
    main()
