"""Does a supernet learn, and what stops it? One search of a space with its weights trained on one fixed
path (the first option of every choice, every step) or on the paths of ``search.sampling``; prints its CE
curve (as a multiple of uniform), the final embedding spread and the test mAP of the trained path as JSON.

    python experiments/bench/supernet_paths.py --path fixed --out runs/paths-fixed \\
        --set search.space=experiments/demo/space_mbv2_64x32.yaml --set search.warmup_epochs=15 --set threads=1
    python experiments/bench/supernet_paths.py --path sampled --out runs/paths-fair --set search.sampling=fair ...

The base config is the search-vs-random benchmark's search (``--config`` to change it). ``fixed`` is a search
strategy (docs/architecture.md, "Add a search strategy"): the weight step inside ``fixed_architecture``, no
architecture step; its test mAP is that path's with the shared weights after BatchNorm recalibration.
``sampled``: the search as configured, its mAP the argmax path's. The figures of docs/training_recipe.md
("Why the op-choice supernet stays at chance") come from these commands.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=["fixed", "sampled"], required=True)
    parser.add_argument("--config", default=str(ROOT / "experiments/bench/search_vs_random/search.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", required=True, help="the run directory (must not exist)")
    args = parser.parse_args()

    from dcsnas.config import load_config
    from dcsnas.engine.rundir import create_run_dir
    from dcsnas.nas.config import SearchConfig
    from dcsnas.nas.search import Searcher, dcs_step

    cfg = load_config(SearchConfig, args.config, args.set)
    first = None

    def fixed_path(searcher: Searcher, epoch: int):
        weights = searcher.weight_step(epoch)

        def step(images, pids):
            with searcher.model.fixed_architecture(first):
                return weights(images, pids)

        return step

    searcher = Searcher(cfg, create_run_dir(args.out, "search", cfg), show_progress=False,
                        strategy=fixed_path if args.path == "fixed" else dcs_step)
    first = {key: 0 for key in searcher.model.arch.choices}
    metrics = searcher.fit()
    test = searcher.evaluate_architecture(first, show_progress=False) if args.path == "fixed" else metrics["test"]
    history = metrics["history"]
    print(json.dumps({
        "path": args.path, "sampling": cfg.search.sampling, "space": cfg.search.space, "epochs": len(history),
        "ce_ratio": [round(h["train"]["health/ce_ratio"], 4) for h in history],
        "fspread_last": history[-1]["train"]["health/fspread"], "test_mAP": test["mAP"],
        "train_time_s": metrics["train_time_s"], "run": args.out,
    }))


if __name__ == "__main__":
    main()
