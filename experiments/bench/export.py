"""Benchmark of ``dcsnas export``: wall time of each export (TorchScript trace, ONNX through the TorchScript-based
and the torch.export-based exporter) and its parity with PyTorch, for Re-ID models with each attention; prints
JSON, one line per export as it finishes (a slow exporter does not hide the others' figures). Random weights
(attention on: gamma = 0.5), no data needed.

    python experiments/bench/export.py [--models mbv2-csalr,resnet50-csalr] [--height 256 --width 128]
        [--cases torchscript,onnx:torchscript,onnx:dynamo]

``export_s`` includes the parity check (two batches through onnxruntime / TorchScript and PyTorch);
``relative`` is max over samples of max_j |file - torch| / ||torch_i||. One thread by default (``--threads``);
the 1-minute load average before the run tells whether other processes shared the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from dcsnas.attention import AttentionBlock
from dcsnas.engine.inference import inference_model
from dcsnas.export import ExportError, export_checked
from dcsnas.models.builder import AttentionPlacement, ModelConfig, create_model

MODELS = {
    "mbv2-sa": ModelConfig(backbone="mobilenetv2", attention=[AttentionPlacement("stage2", "sa")]),
    "mbv2-csalr": ModelConfig(backbone="mobilenetv2", attention=[AttentionPlacement("stage2", "csalr")]),
    "mbv2-dcs-csalr": ModelConfig(backbone="mobilenetv2", attention=[
        AttentionPlacement("stage2", "dcs", {"backend": "csalr", "landmarks": 96, "groups": 2})]),
    "resnet50-csalr": ModelConfig(backbone="resnet50", attention=[AttentionPlacement(s, "csalr")
                                                                  for s in ("layer1", "layer2", "layer3")]),
    "pcb-csalr": ModelConfig(backbone="resnet50", head="pcb", attention=[AttentionPlacement("layer2", "csalr")]),
}
CASES = {"torchscript": ("torchscript", "auto"), "onnx:torchscript": ("onnx", "torchscript"),
         "onnx:dynamo": ("onnx", "dynamo")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mbv2-csalr,resnet50-csalr", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = {"torch": torch.__version__, "input": [args.height, args.width], "threads": args.threads,
              "load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = create_model(MODELS[name], 751)
            for module in model.modules():
                if isinstance(module, AttentionBlock):
                    module.gamma.data.fill_(0.5)
            model = inference_model(model)
            for fmt, exporter in (CASES[c] for c in args.cases.split(",")):
                tic = time.perf_counter()
                try:
                    report = export_checked(model, Path(tmp) / f"{name}.{fmt}", fmt,
                                            {"input_size": [args.height, args.width]}, exporter)
                    parity = report["parity"]
                    outcome = {"relative": parity["relative"], "max_abs_diff": parity["max_abs_diff"]}
                except ExportError as exc:
                    outcome = {"error": str(exc)}
                print(json.dumps({**header, "model": name, "format": fmt, "exporter": exporter,
                                  "export_s": round(time.perf_counter() - tic, 2), **outcome}), flush=True)


if __name__ == "__main__":
    main()
