"""``dcsnas search``: architecture search into a run directory that ends with ``arch.json``.

``--strategy dcs`` (default): DCS-DNAS (:class:`~dcsnas.nas.search.Searcher`), in one process or under
``torchrun`` (DDP, ``--resume`` too). ``--strategy nni:*``: one of NNI's strategies on the same space and
data (:func:`dcsnas.nni.strategies.run_nni_search`; config schema :class:`~dcsnas.nni.config.NNISearchConfig`, no
``--resume``), in one process on one device.
"""

from __future__ import annotations

import argparse
import os

from dcsnas.commands import add_config_arguments, print_json, run_request


def register(subparsers) -> None:
    parser = subparsers.add_parser("search",
                                   help="search an architecture (DCS-DNAS or an NNI strategy); writes arch.json")
    add_config_arguments(parser)
    parser.add_argument("--strategy", default="dcs",
                        help="dcs (DCS-DNAS, the default) or an NNI strategy: nni:random, nni:evolution, nni:darts, "
                             "nni:gumbel-darts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    if args.strategy != "dcs":
        run_nni(args)
        return
    from dcsnas.engine.distributed import cleanup
    from dcsnas.nas.config import SearchConfig
    from dcsnas.nas.search import Searcher

    request = run_request(args, "search")
    cfg = request.load_config(SearchConfig)
    with request.start(cfg, lambda run: Searcher(cfg, run, show_progress=not args.no_progress)) as searcher:
        metrics = searcher.fit()
    if searcher.dist.is_main:
        test = {k: v for k, v in metrics["test"].items() if k != "cmc"}
        print_json({"run": str(searcher.run.path), "strategy": "dcs", **_arch(metrics), "supernet_test": test})
    cleanup(searcher.dist)


def run_nni(args: argparse.Namespace) -> None:
    from dcsnas.errors import ConfigError

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"--strategy {args.strategy} runs in a single process on one device (NNI's Lightning "
                          "path); start it without torchrun, or use --strategy dcs under torchrun")
    if args.resume:
        raise ConfigError(f"--resume: --strategy {args.strategy} cannot be resumed (NNI's experiment is not "
                          "checkpointed here); start it again into a new --out")
    from dcsnas.nni.config import NNISearchConfig
    from dcsnas.nni.strategies import run_nni_search

    request = run_request(args, "search")
    cfg = request.load_config(NNISearchConfig)
    with request.start(cfg, lambda run: run) as run_dir:  # NNI's experiment checks and trains in one call
        metrics = run_nni_search(cfg, run_dir, args.strategy, show_progress=not args.no_progress)
    print_json({"run": str(run_dir.path), "strategy": args.strategy, **_arch(metrics)})


def _arch(metrics: dict) -> dict:
    from dcsnas.commands.derive import arch_summary

    arch = metrics["arch"]
    return arch_summary(arch["path"], arch["flops"])
