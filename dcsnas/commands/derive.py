"""``dcsnas derive RUN``: write the argmax architecture of a search run as ``arch.json``."""

from __future__ import annotations

import argparse

from dcsnas.commands import print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser("derive", help="derive arch.json from a search run (argmax of every choice)")
    parser.add_argument("run", metavar="RUN", help="the search's run directory")
    parser.add_argument("--checkpoint", default="last", choices=("last", "best"),
                        help="the search checkpoint to derive from (default: last)")
    parser.add_argument("--out", metavar="FILE", help="where to write it (default: RUN/arch.json)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from dcsnas.config import from_dict
    from dcsnas.engine.checkpoint import load_checkpoint
    from dcsnas.engine.rundir import open_run_dir
    from dcsnas.models.arch import write_arch
    from dcsnas.nas.arch import derive_arch
    from dcsnas.nas.config import SearchConfig
    from dcsnas.nas.cost import cached_costs
    from dcsnas.nas.distribution import ArchDistribution
    from dcsnas.nas.search import COST_FILE, run_space, search_info
    from dcsnas.utils.outpath import check_output_file

    if args.out:
        check_output_file(args.out, args.force)
    run_dir = open_run_dir(args.run)
    space = run_space(run_dir)
    cfg = from_dict(SearchConfig, run_dir.saved_config())
    path = run_dir.checkpoints / f"{args.checkpoint}.pt"
    state = load_checkpoint(path)["model"]
    distribution = ArchDistribution(space.choices())
    distribution.load_state_dict({k[len("arch."):]: v for k, v in state.items() if k.startswith("arch.")})
    costs = cached_costs(space, (cfg.data.transforms.height, cfg.data.transforms.width), run_dir.path / COST_FILE)
    arch = derive_arch(space, distribution.argmax(), costs, search_info(cfg, space))
    out = args.out or run_dir.arch
    write_arch(out, arch)
    print_json(arch_summary(out, arch.flops))


def arch_summary(path, flops: int) -> dict:
    """The printed summary of an arch.json: its path, MFLOPs per image (multiply-add = 2) and M parameters of
    the inference network (:func:`~dcsnas.models.builder.arch_params`)."""
    from dcsnas.models.builder import arch_params

    return {"arch": str(path), "mflops": round(flops / 1e6, 3), "mparams": round(arch_params(str(path)) / 1e6, 6)}
