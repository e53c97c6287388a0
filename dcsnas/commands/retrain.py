"""``dcsnas retrain --arch arch.json --config FILE``: train a derived architecture from scratch with the
training engine (backbone ``searched``), into a normal training run directory."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from dcsnas.commands import add_config_arguments, run_request


def register(subparsers) -> None:
    parser = subparsers.add_parser("retrain", help="train a derived architecture (arch.json) from scratch")
    parser.add_argument("--arch", required=True, metavar="FILE", help="arch.json from dcsnas search/derive")
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from dcsnas.commands.train import train
    from dcsnas.engine.config import TrainConfig
    from dcsnas.errors import ConfigError
    from dcsnas.nas.arch import SPACE_FILE, load_arch_in_space

    request = run_request(args, "retrain")
    if args.config is None and not args.resume:
        raise ConfigError("retrain needs --config FILE: the training recipe of the derived network (a --resume "
                          "without it continues with the run's own config.yaml)")
    arch = load_arch_in_space(args.arch)
    if not (Path(args.arch).parent / SPACE_FILE).is_file():
        warnings.warn(f"no {SPACE_FILE} beside '{args.arch}' (it is not in its search's run directory), so its "
                      f"widths, ops and attentions are not checked against the space '{arch.space}' it names")
    cfg = request.load_config(TrainConfig, ("model.backbone=searched", f"model.arch={Path(args.arch).resolve()}"))
    size = [cfg.data.transforms.height, cfg.data.transforms.width]
    if size != arch.input_size:
        warnings.warn(f"arch '{args.arch}' was searched for {arch.input_size[0]}×{arch.input_size[1]} inputs, "
                      f"retraining at {size[0]}×{size[1]}: its FLOPs differ from the {arch.flops} in the file")
    train(request, cfg, not args.no_progress, arch)
