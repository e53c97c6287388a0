"""``dcsnas bench``: benchmarks printed as JSON. Each target is a sub-subcommand (``attention``, ``model``,
``latency-table``).

A new target adds a ``_register_<target>(sub)`` function and one line in :func:`register`.
"""

from __future__ import annotations

import argparse

from dcsnas.commands import print_json
from dcsnas.errors import ConfigError

LIMITS = {"batch": 4096, "num_classes": 100_000, "repeats": 100_000}  # the largest value of each flag (else 1024)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="benchmarks printed as JSON", description="Benchmarks printed as JSON.")
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    _register_attention(targets)
    _register_model(targets)
    _register_latency_table(targets)


def _register_attention(targets: argparse._SubParsersAction) -> None:
    p = targets.add_parser(
        "attention",
        help="SA/CSA/CSALR/DCS: fwd+bwd time, peak memory, attention-map approximation error",
        description="Forward+backward time and peak memory of every attention module at ResNet-50 stage shapes, "
                    "and the approximation error of CSA/CSALR attention maps against SA on real backbone features.",
    )
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--batch", type=int, default=8, help="batch size (default: 8)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per case (default: 3)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default)")
    p.add_argument("--rounds", type=int, default=1,
                   help="interleaved rounds over the cases, times pooled (steadier ratios on a shared machine)")
    p.add_argument("--quick", action="store_true", help="only the 384x128 layer1 shape and fewer landmark counts")
    p.add_argument("--out", metavar="FILE", help="also write the JSON to FILE")
    p.add_argument("--visualize", metavar="PNG", help="write SA vs CSALR attention maps for a few query points")
    p.add_argument("--force", action="store_true", help="replace existing --out/--visualize files")
    p.set_defaults(func=_run_attention)


def _run_attention(args: argparse.Namespace) -> int:
    for name in ("batch", "repeats", "threads", "rounds"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= LIMITS.get(name, 1024):
            raise ConfigError(f"--{name} must be an integer in [1, {LIMITS.get(name, 1024)}], got {value}")
    from dcsnas.bench.attention import run_benchmark
    from dcsnas.engine.device import resolve_device
    from dcsnas.utils.io import atomic_write_json
    from dcsnas.utils.outpath import check_output_file

    for path in (args.out, args.visualize):
        if path:
            check_output_file(path, args.force)
    device = str(resolve_device(args.device))
    result = run_benchmark(device, args.batch, args.repeats, args.quick, args.threads, args.rounds, args.visualize)
    if args.out:
        atomic_write_json(args.out, result)
    print_json(result)
    return 0


def _register_model(targets: argparse._SubParsersAction) -> None:
    p = targets.add_parser(
        "model",
        help="params, FLOPs, latency and peak memory of a model config or arch.json; --train: images/s",
        description="Profile the model of a train config (or of an arch.json): parameters, FLOPs (the "
                    "convolutions counted by torch.utils.flop_counter, attention by its analytic formulas), "
                    "latency and peak memory of one forward at the config's input size (an arch.json's own "
                    "input size by default; --set data.transforms.height/width override it); with --train, "
                    "images/s of full training steps (AMP and channels-last on CUDA as in training).",
    )
    p.add_argument("--config", metavar="FILE", help="train config YAML (default: the built-in defaults)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config key, e.g. --set model.backbone=mobilenetv2; repeatable")
    p.add_argument("--arch", metavar="ARCH.json", help="profile the network an arch.json describes")
    p.add_argument("--batch", type=int, default=1, help="batch size (default: 1; --train: data.p × data.k)")
    p.add_argument("--num-classes", type=int, default=751, help="training identities of the classifier (751)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards or steps (default: 20)")
    p.add_argument("--train", action="store_true", help="measure training steps instead of inference")
    p.add_argument("--out", metavar="FILE", help="also write the JSON to FILE")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_run_model)


def _run_model(args: argparse.Namespace) -> int:
    for name, limit in LIMITS.items():
        if not 1 <= getattr(args, name) <= limit:
            raise ConfigError(f"--{name.replace('_', '-')} must be an integer in [1, {limit}], got "
                              f"{getattr(args, name)}")
    import torch

    from dcsnas.bench.model import profile_model, train_throughput
    from dcsnas.config import load_config
    from dcsnas.engine.config import TrainConfig
    from dcsnas.engine.device import resolve_device
    from dcsnas.models.builder import create_model
    from dcsnas.nas.arch import load_arch_in_space
    from dcsnas.utils.io import atomic_write_json
    from dcsnas.utils.outpath import check_output_file

    if args.out:
        check_output_file(args.out, args.force)
    extra = []
    if args.arch:  # the arch's own input size, unless --set overrides it
        height, width = load_arch_in_space(args.arch).input_size
        extra = ["model.backbone=searched", f"model.arch={args.arch}", f"data.transforms.height={height}",
                 f"data.transforms.width={width}"]
    cfg = load_config(TrainConfig, args.config, [*extra, *args.overrides])
    device = resolve_device(args.device)
    model = create_model(cfg.model, args.num_classes)
    size = (cfg.data.transforms.height, cfg.data.transforms.width)
    if args.train:
        batch = args.batch if args.batch > 1 else cfg.data.p * cfg.data.k
        cuda = device.type == "cuda"
        result = train_throughput(model, args.num_classes, (batch, 3, *size), device, steps=args.repeats,
                                  amp_dtype=getattr(torch, cfg.amp_dtype) if cfg.amp and cuda else None,
                                  channels_last=cfg.channels_last and cuda)
    else:
        result = profile_model(model, (args.batch, 3, *size), device, repeats=args.repeats)
    result = {"backbone": cfg.model.backbone, "attention": [a.name for a in cfg.model.attention], **result}
    if args.out:
        atomic_write_json(args.out, result)
    print_json(result)
    return 0


def _register_latency_table(targets: argparse._SubParsersAction) -> None:
    p = targets.add_parser(
        "latency-table",
        help="the latency lookup table of a search space (ms per part and option) for search.cost.metric: latency",
        description="Measure the latency lookup table of a search space (FBNet's LUT): for every part of the space "
                    "and every combination of its options, the median ms of one forward of that module alone at its "
                    "input shape, batch and device, after warm-up forwards (torch.utils.benchmark). Writes it as JSON "
                    "to --out (search.cost.table reads it); with --check N, also compares the table's sum with the "
                    "measured latency of N random derived networks.",
    )
    p.add_argument("--space", required=True, metavar="SPACE.yaml", help="search-space YAML")
    p.add_argument("--input-size", type=int, nargs=2, required=True, metavar=("H", "W"), help="input height, width")
    p.add_argument("--batch", type=int, default=1, help="batch size of every entry (default: 1)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default)")
    p.add_argument("--warmup", type=int, default=5, help="untimed forwards per module (default: 5)")
    p.add_argument("--repeats", type=int, default=20, help="timed blocks per module; the median is kept (default: 20)")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="also time N random architectures built standalone against the table's sum (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --check architectures (default: 0)")
    p.add_argument("--rounds", type=int, default=3,
                   help="--check: interleaved rounds over the architectures, the median kept (default: 3)")
    p.add_argument("--out", required=True, metavar="FILE.json", help="where the table is written")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_run_latency_table)


def _run_latency_table(args: argparse.Namespace) -> int:
    limits = {"input_size": (1, 8192), "batch": (1, LIMITS["batch"]), "threads": (1, 1024), "warmup": (0, 10_000),
              "repeats": (1, LIMITS["repeats"]), "check": (0, 1000), "seed": (0, 2**31 - 1), "rounds": (1, 100)}
    for name, (low, high) in limits.items():
        value = getattr(args, name)
        for v in value if isinstance(value, list) else [value]:
            if v is not None and not low <= v <= high:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer in [{low}, {high}], got {v}")
    from dcsnas.bench.latency import check_table
    from dcsnas.engine.device import resolve_device
    from dcsnas.nas.cost import measure_costs
    from dcsnas.nas.latency import match_space, measure_table, write_table
    from dcsnas.nas.space import load_space
    from dcsnas.utils.outpath import check_output_file

    check_output_file(args.out, args.force)
    space = load_space(args.space)
    size = tuple(args.input_size)
    costs = measure_costs(space, size)  # FLOPs on the meta device: refuses an input size the space cannot take
    device = resolve_device(args.device)
    table = measure_table(space, size, args.batch, device, args.threads, args.warmup, args.repeats)
    costs = costs.with_latency(match_space(table, space, args.out))
    write_table(table, args.out)
    low, high = costs.span("latency")
    result = {"out": args.out, "space": space.name, **{k: table[k] for k in ("device", "device_name", "torch", "batch",
                                                                                "input_size", "threads")},
              "entries": len(table["entries"]), "latency_ms": {"fastest": round(low, 4), "slowest": round(high, 4)}}
    if args.check:
        result["check"] = check_table(space, costs, table, args.check, args.seed, device, args.threads, args.warmup,
                                      args.repeats, rounds=args.rounds)
    print_json(result)
    return 0
