"""``dcsnas eval``: Re-ID metrics (mAP, mINP, CMC) printed as JSON.

The features come from a file (``--features FILE.npz``) or from a trained run (``--run DIR``: its model and
checkpoint on its data set's query and gallery, or with ``--dataset``/``--root`` on another data set's:
cross-domain evaluation); both end in :func:`dcsnas.metrics.evaluate_features`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dcsnas.commands import print_json
from dcsnas.errors import ConfigError, DataError

METRICS = ("euclidean", "cosine")
PROTOCOLS = ("market", "cuhk03")
MAX_ATTENTION_FIGURES = 8


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate Re-ID features: mAP, mINP, CMC (JSON), optional re-ranking and rank-list images",
        description="Evaluate query features against gallery features and print the metrics as JSON.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--features", metavar="FILE.npz",
        help="arrays qf, gf, q_pids, g_pids, q_camids, g_camids (+ optional q_paths, g_paths, relative to the file)",
    )
    source.add_argument("--run", metavar="DIR", help="a run directory of dcsnas train/retrain")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last", help="with --run (default: last)")
    p.add_argument("--dataset", metavar="NAME", help="with --run: evaluate on this data set's query and gallery "
                   "instead of the run's (cross-domain, e.g. trained on market1501, evaluated on dukemtmcreid)")
    p.add_argument("--root", metavar="DIR", help="with --run: the folder of --dataset (default: the run's data.root)")
    p.add_argument("--no-progress", action="store_true", help="with --run: no progress bars")
    p.add_argument("--flip", action="store_true", help="with --run: average with the flipped image's features")
    p.add_argument("--device", default="auto", help="with --run: auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--metric", choices=METRICS,
                   help="distance (default: the run's eval.metric with --run, else euclidean, squared)")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    p.add_argument("--max-rank", type=int, metavar="R",
                   help="length of the CMC curve (default: the run's eval.max_rank with --run, else 50)")
    p.add_argument("--protocol", choices=PROTOCOLS,
                   help="market or cuhk03 single-shot (default: the run's eval.protocol with --run, else market)")
    p.add_argument("--seed", type=int,
                   help="seed of the cuhk03 protocol's random draws (default: the run's eval.protocol_seed "
                        "with --run, else 0)")
    p.add_argument("--chunk-size", type=int, metavar="N", help="queries evaluated at a time (default: automatic)")
    p.add_argument("--visualize", type=int, metavar="K",
                   help="write a PNG rank list (query + top K) per query; with --run also the attention maps and DCS "
                        "channel masks of the trained network for the first (up to 8) queries, and a t-SNE of the "
                        "query/gallery embeddings coloured by identity")
    p.add_argument("--vis-queries", type=int, metavar="N", help="draw only the first N queries (default: all)")
    p.add_argument("--out", metavar="DIR", help="folder for metrics.json and the rank lists (ranks/); not a run "
                   "directory")
    p.add_argument("--force", action="store_true", help="replace an existing metrics.json in --out")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    for name in ("max_rank", "chunk_size", "visualize", "vis_queries"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.visualize is not None and args.out is None:
        raise ConfigError("--visualize needs --out DIR for the images")
    if (args.dataset or args.root) and not args.run:
        raise ConfigError("--dataset and --root need --run DIR (a features file is already computed on its data)")
    if args.vis_queries is not None and args.visualize is None:
        raise ConfigError("--vis-queries needs --visualize K")


def _network_views(args: argparse.Namespace, data: dict, count: int) -> dict:
    """With ``--run --visualize``: ``attention/`` (attention maps and DCS masks of the run's network on the first
    ``count`` queries; none for a network without attention) and ``tsne.png`` in ``--out``."""
    import numpy as np
    import torch
    from PIL import Image

    from dcsnas.attention.token_dcs import TokenAttention
    from dcsnas.data.transforms import build_transforms
    from dcsnas.engine.attention_maps import attention_outputs, save_attention_figures
    from dcsnas.engine.inference import load_run_model
    from dcsnas.metrics.tsne import plot_tsne

    out, views = Path(args.out), {}
    loaded = load_run_model(args.run, args.checkpoint, finished=False)
    if len(loaded.model.attentions) or any(isinstance(m, TokenAttention) for m in loaded.model.modules()):
        size = loaded.config.data.transforms
        paths = [str(p) for p in data["q_paths"][:count]]
        images = [Image.open(p).convert("RGB") for p in paths]
        batch = torch.stack([build_transforms(size, False)(img) for img in images])
        written = save_attention_figures(out / "attention", [img.resize((size.width, size.height)) for img in images],
                                         attention_outputs(loaded.model, batch),
                                         [f"{i:05d}_{Path(p).stem}" for i, p in enumerate(paths)])
        views["attention_maps"] = {"dir": str(out / "attention"), "count": len(written)}
    arrays = {k: np.asarray(data[k].cpu() if hasattr(data[k], "cpu") else data[k]) for k in ("qf", "gf")}
    points = plot_tsne(arrays["qf"], arrays["gf"], data["q_pids"], data["g_pids"], out / "tsne.png")
    views["tsne"] = {"path": str(out / "tsne.png"), "points": points}
    return views


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.out:
        from dcsnas.utils.outpath import check_output_dir

        check_output_dir(args.out, ["metrics.json"], args.force)
    from dcsnas.metrics import evaluate_features, load_features, save_rank_lists, summarize
    from dcsnas.utils.io import atomic_write_json

    info: dict = {}
    if args.run:
        from dcsnas.engine.evaluator import extract_run_features

        data, info = extract_run_features(args.run, args.checkpoint, args.flip or None, args.device,
                                          not args.no_progress, args.dataset, args.root)
        args.rerank = args.rerank or info["rerank"]
    else:
        data = load_features(args.features)
    defaults = {"metric": "euclidean", "protocol": "market", "protocol_seed": 0, "max_rank": 50, **info}
    args.metric = args.metric or defaults["metric"]
    args.protocol = args.protocol or defaults["protocol"]
    args.seed = defaults["protocol_seed"] if args.seed is None else args.seed
    args.max_rank = defaults["max_rank"] if args.max_rank is None else args.max_rank
    source = args.run or args.features
    if args.visualize and not {"q_paths", "g_paths"} <= data.keys():
        raise DataError(f"{source} has no q_paths/g_paths arrays: --visualize needs the image paths")
    result = evaluate_features(
        data["qf"], data["gf"], data["q_pids"], data["g_pids"], data["q_camids"], data["g_camids"],
        metric=args.metric, rerank=args.rerank, chunk_size=args.chunk_size, max_rank=args.max_rank,
        protocol=args.protocol, seed=args.seed, topk=args.visualize or 0,
    )
    report = {
        **info,
        **summarize(result),
        "metric": args.metric,
        "rerank": args.rerank,
        "protocol": args.protocol,
        "num_queries": len(data["qf"]),
        "num_gallery": len(data["gf"]),
    }
    if args.out:
        atomic_write_json(Path(args.out) / "metrics.json", report)
    if args.visualize:
        n = len(data["qf"]) if args.vis_queries is None else min(args.vis_queries, len(data["qf"]))
        paths = save_rank_lists(
            Path(args.out) / "ranks", result["topk"], data["q_paths"], data["g_paths"],
            data["q_pids"], data["g_pids"], queries=range(n),
        )
        report["rank_lists"] = {"dir": str(Path(args.out) / "ranks"), "count": len(paths)}
        if args.run:
            report.update(_network_views(args, data, min(n, MAX_ATTENTION_FIGURES)))
    print_json(report)
    return 0
