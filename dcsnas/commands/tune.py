"""``dcsnas tune --config FILE``: an NNI hyper-parameter experiment (TPE by default) whose trials are
``dcsnas train``/``retrain`` runs; writes the trials' summary into the run directory (see
:class:`dcsnas.nni.config.TuneConfig` and ``experiments/cpu/tune_tiny.yaml``). Needs NNI 3.0. Exits with 1 when
no trial succeeded."""

from __future__ import annotations

import argparse
import sys

from dcsnas.commands import print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser("tune", help="NNI hyper-parameter sweep over dcsnas train/retrain trials")
    parser.add_argument("--config", required=True, metavar="FILE", help="tune config (YAML)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                        help="override a tune config key (dotted, e.g. --set max_trials=20); repeatable")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/tune-<time>)")
    parser.add_argument("--force", action="store_true",
                        help="start over in a --out that holds a run (its content is moved aside)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dcsnas.engine.lifecycle import RunRequest
    from dcsnas.nni.config import TuneConfig

    request = RunRequest("tune", args.out, force=args.force, config_file=args.config, overrides=tuple(args.overrides))
    cfg = request.load_config(TuneConfig)
    from dcsnas.nni.tune import run_tune  # needs NNI: after the config is checked

    with request.start(cfg, lambda run: run) as run_dir:  # the experiment checks and runs its trials in one call
        summary = run_tune(cfg, run_dir)
    print_json({"run": str(run_dir.path), "best": summary["best"], "num_trials": summary["num_trials"],
                "num_succeeded": summary["num_succeeded"]})
    if summary["num_succeeded"] == 0:
        print(f"dcsnas: error: no trial succeeded; their logs (trial.stderr) are under {run_dir.path / 'nni'}",
              file=sys.stderr)
        return 1
    return 0
