"""``dcsnas retrain --arch arch.json --config FILE``: train a derived architecture from scratch with the
training engine (backbone ``searched``), into a normal training run directory."""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

from dcsnas.commands import add_config_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser("retrain", help="train a derived architecture (arch.json) from scratch")
    parser.add_argument("--arch", required=True, metavar="FILE", help="arch.json from dcsnas search/derive")
    add_config_arguments(parser, config_required=True)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from dcsnas.commands.train import prepare_run, train_and_report
    from dcsnas.engine.trainer import Trainer
    from dcsnas.models.arch import write_arch
    from dcsnas.nas.arch import SPACE_FILE, load_arch_in_space

    arch = load_arch_in_space(args.arch)
    if not (Path(args.arch).parent / SPACE_FILE).is_file():
        warnings.warn(f"no {SPACE_FILE} beside '{args.arch}' (it is not in its search's run directory), so its "
                      f"widths, ops and attentions are not checked against the space '{arch.space}' it names")
    overrides = ("model.backbone=searched", f"model.arch={Path(args.arch).resolve()}")
    cfg, run_dir = prepare_run(args, "retrain", extra_overrides=overrides)
    size = [cfg.data.transforms.height, cfg.data.transforms.width]
    if size != arch.input_size:
        warnings.warn(f"arch '{args.arch}' was searched for {arch.input_size[0]}×{arch.input_size[1]} inputs, "
                      f"retraining at {size[0]}×{size[1]}: its FLOPs differ from the {arch.flops} in the file")
    if int(os.environ.get("RANK", "0")) == 0:  # a copy beside the run's config, from one DDP rank
        write_arch(run_dir.arch, arch)
    train_and_report(Trainer(cfg, run_dir, show_progress=not args.no_progress), args.resume)
