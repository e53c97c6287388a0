"""``dcsnas train``: train a fixed-backbone Re-ID model (DCS-FB, PCB + attention, BoT baselines)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dcsnas.commands import add_config_arguments, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a Re-ID model (DCS-FB and any fixed backbone)")
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def prepare_run(args: argparse.Namespace, command: str, schema=None, extra_overrides: tuple[str, ...] = ()):
    """Load the config (``--config`` + ``--set``; a ``searched`` model's arch.json is checked against the space
    beside it) and create the run directory (or reopen it for ``--resume``), locked by this process (rank 0
    under torchrun)."""
    from dcsnas.config import PATH_KEYS, load_config
    from dcsnas.engine.config import TrainConfig
    from dcsnas.engine.rundir import RunDir, create_run_dir, lock_run_dir, open_run_dir
    from dcsnas.errors import ConfigError
    from dcsnas.nas.arch import load_arch_in_space

    if args.resume and not args.out:  # flag errors first: they need no config
        raise ConfigError("--resume needs --out DIR: the run directory to continue")
    if args.resume and args.force:
        raise ConfigError("--resume and --force exclude each other: --resume continues the run in --out, "
                          "--force starts it over")
    cfg = load_config(schema or TrainConfig, args.config, [*extra_overrides, *args.overrides],
                      required_paths=PATH_KEYS)
    model = getattr(cfg, "model", None)
    if model is not None and model.backbone == "searched" and model.arch:
        load_arch_in_space(model.arch)  # a derived architecture must be one of the space its search kept beside it
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not args.out:
            raise ConfigError("under torchrun, give --out DIR so that every rank uses the same run directory")
        if int(os.environ.get("RANK", "0")) != 0:  # only rank 0 writes into the run directory
            return cfg, RunDir(Path(args.out))
    if args.resume:
        run = open_run_dir(args.out)
        lock_run_dir(run)
        return cfg, run
    return cfg, create_run_dir(args.out, command, cfg, force=args.force, config_file=args.config)


def train_and_report(trainer, resume: bool) -> None:
    from dcsnas.engine.distributed import cleanup

    if resume:
        trainer.resume()
    metrics = trainer.fit()
    if trainer.dist.is_main:
        print_json({"run": str(trainer.run.path), **{k: v for k, v in metrics.get("test", {}).items() if k != "cmc"}})
    cleanup(trainer.dist)


def run(args: argparse.Namespace) -> None:
    from dcsnas.engine.trainer import Trainer

    cfg, run_dir = prepare_run(args, "train")
    train_and_report(Trainer(cfg, run_dir, show_progress=not args.no_progress), args.resume)
