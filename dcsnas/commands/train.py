"""``dcsnas train``: train a fixed-backbone Re-ID model (DCS-FB, PCB + attention, BoT baselines)."""

from __future__ import annotations

import argparse

from dcsnas.commands import add_config_arguments, print_json, run_request


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a Re-ID model (DCS-FB and any fixed backbone)")
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def train(request, cfg, show_progress: bool, arch=None) -> None:
    """Train ``cfg`` in the run directory of ``request`` (:meth:`~dcsnas.engine.lifecycle.RunRequest.start`; a
    retrain's ``arch`` is copied there, beside the config) and print the run's test metrics."""
    from dcsnas.engine.distributed import cleanup
    from dcsnas.engine.trainer import Trainer
    from dcsnas.models.arch import write_arch

    def build(run):
        if arch is not None and request.writes_run_dir:
            write_arch(run.arch, arch)
        return Trainer(cfg, run, show_progress=show_progress)

    with request.start(cfg, build) as trainer:
        metrics = trainer.fit()
    if trainer.dist.is_main:
        print_json({"run": str(trainer.run.path), **{k: v for k, v in metrics.get("test", {}).items() if k != "cmc"}})
    cleanup(trainer.dist)


def run(args: argparse.Namespace) -> None:
    from dcsnas.engine.config import TrainConfig
    from dcsnas.nas.arch import load_arch_in_space

    request = run_request(args, "train")
    cfg = request.load_config(TrainConfig)
    if cfg.model.backbone == "searched" and cfg.model.arch:
        load_arch_in_space(cfg.model.arch)  # a derived architecture must be one of the space its search kept beside it
    train(request, cfg, not args.no_progress)
