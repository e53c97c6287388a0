"""``dcsnas export --run DIR --format onnx|torchscript [--out FILE]``: a trained run's inference graph as a
file, verified against PyTorch (see :mod:`dcsnas.export`); prints the file, the parity figures and the
metadata as JSON."""

from __future__ import annotations

import argparse

from dcsnas.commands import print_json

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a trained run to ONNX or TorchScript (embeddings out), checked against PyTorch",
        description="Write the inference graph of a train/retrain run (images [N, 3, H, W] in, embeddings [N, D] "
                    "out, dynamic batch; classifiers and deep-supervision branches dropped) with its input size and "
                    "normalisation in the file's metadata, and check it against PyTorch on random inputs of two "
                    "batch sizes (max |difference| <= 1e-4 of each embedding's norm). ONNX needs the export extra: "
                    'pip install "dcsnas[export]".',
    )
    p.add_argument("--run", required=True, metavar="DIR", help="a finished run directory of dcsnas train/retrain")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last", help="default: last")
    p.add_argument("--format", required=True, choices=tuple(SUFFIXES), help="onnx or torchscript")
    p.add_argument("--out", metavar="FILE", help="output file (default: DIR/model.onnx or DIR/model.pt)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dcsnas.export import export_run
    from dcsnas.utils.outpath import check_output_file

    out = check_output_file(args.out or Path(args.run) / f"model{SUFFIXES[args.format]}", args.force)
    print_json(export_run(args.run, out, args.format, args.checkpoint))
    return 0
