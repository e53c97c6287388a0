"""``dcsnas extract``: embeddings of image folders with a trained run or an exported model, as ``.npz``.

``--images FOLDER``: arrays ``features`` [N, D] and ``paths``, plus ``pids`` and ``camids`` when every file
name follows the naming (the folder is a split). ``--query Q --gallery G``: a ``dcsnas eval --features``
file (qf, gf, q/g_pids, q/g_camids, q/g_paths); as the data set loaders do, junk (pid -1) is dropped and
distractors (pid 0) are kept in the gallery only. The naming: the run's ``data.options`` (``pattern``,
``camid_base``) or the Market-1501 one, ``--pattern`` to override.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("extract", help="embeddings of image folders (a run or an exported model) to .npz",
                              description="Compute Re-ID embeddings of the images in a folder, or of a query and a "
                                          "gallery folder (written as a dcsnas eval --features file).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", metavar="DIR", help="a run directory of dcsnas train/retrain")
    source.add_argument("--model", metavar="FILE", help="a file written by dcsnas export (ONNX or TorchScript)")
    p.add_argument("--images", metavar="FOLDER", help="a folder of images (.jpg, .jpeg, .png, .bmp)")
    p.add_argument("--query", metavar="FOLDER", help="with --gallery: write an eval --features file")
    p.add_argument("--gallery", metavar="FOLDER", help="with --query")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="output file")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last", help="with --run (default: last)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average with the flipped image's embedding (default: the run's eval.flip)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per forward")
    p.add_argument("--pattern", help="file-name regex with groups (?P<pid>...) and (?P<camid>...)")
    p.add_argument("--trust-torchscript", action="store_true",
                   help="allow a TorchScript --model: loading one runs the code it holds, so only for a file from a "
                        "source you trust (ONNX files need no trust)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def _naming(args: argparse.Namespace) -> tuple[str, int]:
    from dcsnas.data.folder import MARKET_PATTERN

    options: dict = {}
    if args.run:
        from dcsnas.engine.rundir import open_run_dir

        options = open_run_dir(args.run).saved_config().get("data", {}).get("options", {}) or {}
    return args.pattern or options.get("pattern", MARKET_PATTERN), int(options.get("camid_base", 1))


def _images(folder: str) -> list[str]:
    from pathlib import Path

    from dcsnas.data.folder import IMAGE_EXTENSIONS
    from dcsnas.errors import DataError

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder '{folder}' does not exist")
    paths = sorted(str(p.resolve()) for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise DataError(f"image folder '{folder}' has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from dcsnas.commands import print_json
    from dcsnas.data.folder import compile_pattern, scan_split
    from dcsnas.errors import ConfigError, DataError
    from dcsnas.extract import FeatureExtractor
    from dcsnas.metrics import save_features
    from dcsnas.utils.io import atomic_open
    from dcsnas.utils.outpath import check_output_file

    if bool(args.images) == bool(args.query or args.gallery) or bool(args.query) != bool(args.gallery):
        raise ConfigError("give either --images FOLDER or both --query FOLDER and --gallery FOLDER")
    if args.batch_size is not None and not 1 <= args.batch_size <= 4096:
        raise ConfigError(f"--batch-size must be an integer in [1, 4096], got {args.batch_size}")
    check_output_file(args.out, args.force)
    pattern, camid_base = _naming(args)
    regex = compile_pattern(pattern)
    extractor = FeatureExtractor(args.run or args.model, args.device, args.checkpoint, args.flip, args.batch_size,
                                 trust_torchscript=args.trust_torchscript)
    report = {"source": args.run or args.model, "out": args.out, "flip": extractor.flip,
              "embedding_dim": extractor.embedding_dim}
    if args.images:
        paths = _images(args.images)
        arrays = {"features": extractor(paths).numpy(), "paths": np.asarray(paths)}
        try:
            records = scan_split(Path(args.images), regex, camid_base)
        except DataError:  # not a split: names without identities
            records = None
        if records is not None:
            arrays.update(pids=np.asarray([r.pid for r in records]), camids=np.asarray([r.camid for r in records]))
        with atomic_open(args.out, "wb") as fh:
            np.savez(fh, **arrays)
        report.update(images=len(paths), labelled=records is not None)
    else:
        splits = {}
        for prefix, folder in (("q", args.query), ("g", args.gallery)):
            records = [r for r in scan_split(Path(folder), regex, camid_base) if r.pid != -1]
            records = [r for r in records if prefix == "g" or r.pid != 0]
            if not records:
                raise DataError(f"'{folder}' has no usable images (junk pid -1{', distractor pid 0' * (prefix == 'q')} "
                                "dropped)")
            splits[prefix] = records
        feats = {p: extractor([str(Path(r.path).resolve()) for r in recs]).numpy() for p, recs in splits.items()}
        q, g = splits["q"], splits["g"]
        save_features(args.out, feats["q"], feats["g"], [r.pid for r in q], [r.pid for r in g],
                      [r.camid for r in q], [r.camid for r in g], [str(Path(r.path).resolve()) for r in q],
                      [str(Path(r.path).resolve()) for r in g])
        report.update(num_queries=len(q), num_gallery=len(g))
    print_json(report)
    return 0
