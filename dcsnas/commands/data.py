"""``dcsnas data synth`` (generate the synthetic data set) and ``dcsnas data info`` (data set statistics)."""

from __future__ import annotations

import argparse

from dcsnas.commands import print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="generate the synthetic data set; inspect data sets")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = sub.add_parser("synth", help="write the synthetic Re-ID data set (Market-1501 layout)")
    synth.add_argument("--preset", default="small",
                       help="tiny (tests), small (CPU demo) or market (Market-1501 counts)")
    synth.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files")
    synth.add_argument("--out", required=True, metavar="DIR", help="output folder")
    synth.set_defaults(func=run_synth)

    info = sub.add_parser("info", help="print per-split statistics of a data set as JSON")
    info.add_argument("--dataset", required=True, help="market1501, dukemtmcreid, cuhk03, msmt17, synthetic, folder")
    info.add_argument("--root", required=True, metavar="DIR", help="the data set's folder")
    info.add_argument("--option", dest="options", metavar="KEY=VALUE", action="append", default=[],
                      help="a loader option, e.g. subset=labeled (cuhk03) or pattern=REGEX (folder); repeatable")
    info.set_defaults(func=run_info)


def run_synth(args: argparse.Namespace) -> None:
    from dcsnas.data.synthetic import generate

    stats = generate(args.preset, args.seed, args.out)
    print_json(stats)


def run_info(args: argparse.Namespace) -> None:
    from dcsnas.config import parse_override
    from dcsnas.data.registry import build_dataset

    options = {}
    for text in args.options:  # numbers, booleans and lists are parsed; anything else (a regex) stays verbatim
        keys, value = parse_override(text)
        options[".".join(keys)] = value if isinstance(value, (bool, int, float, list)) else text.split("=", 1)[1]
    print_json(build_dataset(args.dataset, args.root, **options).stats())
