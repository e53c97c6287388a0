"""Subcommands of the ``dcsnas`` CLI: one module per command, each with ``register(subparsers)``.

Helpers shared by the command modules live here.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_config_arguments(parser: argparse.ArgumentParser, config_required: bool = False) -> None:
    """``--config FILE``, repeated ``--set key=value``, ``--out DIR``, ``--resume`` and ``--force``."""
    parser.add_argument("--config", metavar="FILE", required=config_required, help="YAML config file")
    parser.add_argument(
        "--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
        help="override a config key (dotted, e.g. --set optim.lr=3.5e-4); repeatable",
    )
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/<command>-<time>); one that "
                        "holds a run is refused unless --resume or --force")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--force", action="store_true",
                        help="start over in a --out that holds a run: its content is moved aside to "
                             "<out>.replaced-<time>")


def run_request(args: argparse.Namespace, command: str):
    """The :class:`~dcsnas.engine.lifecycle.RunRequest` of the arguments of :func:`add_config_arguments`."""
    from dcsnas.engine.lifecycle import RunRequest

    return RunRequest(command, args.out, args.resume, args.force, args.config, tuple(args.overrides))


def print_json(obj: Any) -> None:
    from dcsnas.utils.io import json_default

    json.dump(obj, sys.stdout, indent=2, default=json_default)
    sys.stdout.write("\n")
