"""``dcsnas compare RUN [RUN ...] [--out DIR]``: trained runs side by side (see :mod:`dcsnas.compare`).

Prints the table (and, for runs repeated over seeds, the groups' mean ± std; with ``--paired REF`` the
per-seed differences against REF's group); with ``--out`` also writes compare.csv, compare.json and the
PNG figures there.
"""

from __future__ import annotations

import argparse

from dcsnas.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare trained runs: accuracy, params, FLOPs, latency, memory; Pareto front and figures",
        description="Compare train/retrain runs of one data set: mAP, CMC, mINP, params, FLOPs, latency and peak "
                    "memory (models rebuilt from each run's config, profiled at batch 1 and the run's input size), "
                    "training time; the mAP-FLOPs Pareto front, CMC curves and diagrams of searched architectures.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories of dcsnas train or retrain")
    p.add_argument("--out", metavar="DIR", help="write compare.csv, compare.json and the PNG figures here")
    p.add_argument("--force", action="store_true", help="replace existing compare.csv/compare.json/figures in --out")
    p.add_argument("--device", default="auto",
                   help="where latency and memory are measured: cpu; cuda or cuda:N (CPU too); auto (default: "
                        "CPU, plus CUDA when present)")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards per latency median (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed forwards before measuring (default: 3)")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="do not measure latency")
    p.add_argument("--paired", metavar="REF",
                   help="a run (name or path) whose seed group is the reference: per-seed differences of every other "
                        "group with a 95%% paired t confidence interval")
    p.set_defaults(func=run)


def _devices(name: str) -> list[str]:
    import torch

    from dcsnas.engine.device import resolve_device

    if name == "auto":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    device = resolve_device(name)
    return ["cpu"] if device.type == "cpu" else ["cpu", str(device)]


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.warmup < 0:
        raise ConfigError(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    from dcsnas.compare import compare_runs
    from dcsnas.utils.outpath import check_output_dir

    if args.out:
        check_output_dir(args.out, ["compare.csv", "compare.json", "map_vs_flops.png", "cmc.png"], args.force)

    report = compare_runs(args.runs, args.out, _devices(args.device), args.repeats, args.warmup, args.latency,
                          args.paired)
    print(report["table"])
    if "files" in report:
        print(f"wrote {', '.join(report['files'].values())}")
    return 0
