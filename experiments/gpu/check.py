"""One check of the GPU path, run by ``experiments/gpu/check.sh OUT_DIR [--device cuda|cpu] [--tiny]``.

Writes ``OUT_DIR/check.json`` (rewritten after every section, so the figures of finished sections survive a
later failure) and ``OUT_DIR/check.log`` (everything the sections print). Scratch data, run directories and
checkpoints go to a temporary work folder (``--work``), removed at the end unless ``--keep-work``.

Sections, each in its own Python process (a fresh CUDA context; a CUDA error or a hang ends that process
only) with a time cap, in this order:

- ``env``: Python, torch, CUDA, cuDNN, the GPU; the packages dcsnas needs (a missing one is an error);
  a bf16 matrix product on the device checked against fp32;
- ``data``: the synthetic data set (``dcsnas.data.synthetic.generate``: ``small``; ``tiny`` as well);
- ``train_bf16``, ``train_fp16``: ``dcsnas train`` of experiments/gpu/dcsfb_resnet50_market1501.yaml
  (DCS-FB ResNet-50, DCS-CSALR after layer1-3, IB loss) on the synthetic data, AMP in that dtype,
  channels-last, a few hundred steps;
- ``search``: ``dcsnas search`` of experiments/gpu/dcs_dnas_market.yaml (hard mode, mbv2_reid.yaml,
  256x128); ``search_child``: ``dcsnas retrain`` of the derived arch.json with the same data and losses;
  the supernet's weight step against the child's step;
- ``attention``: SA (SDPA), CSALR G=1, 2 and DCS-CSALR at the ResNet-50 stage shapes of 256x128 and
  384x128 inputs (forward + backward: time, peak memory; :func:`dcsnas.bench.attention.measure`), then
  ``dcsnas bench attention --quick`` (every case at 384x128/layer1, approximation errors);
- ``model``: ``dcsnas bench model --train`` (images/s, peak memory per image) and the inference profile of
  PCB, PCB + SA and PCB + CSALR (G = 1, 2, 4, 8) at 384x128, beside seed 001 Table 5;
- ``eval``: features -> metrics at Market-1501 scale on the device against the CPU result; re-ranking on the device;
- ``nni``: ``dcsnas search --strategy nni:random`` on the tiny space (skipped when NNI is not installed).

Step times come from a global optimizer step hook (``torch.optim.optimizer.register_optimizer_step_post_hook``,
synchronised on CUDA): a training iteration is the time between two steps of the weight optimizer (the one
with the most parameters), data loading included; medians drop the epoch boundaries. Peak memory:
``torch.cuda.max_memory_allocated`` of the section's process (whole run, evaluation included).

Exit status: 0 when every section passed, 1 when one failed or ran out of time (its error is in the JSON
and on stderr), 2 for a bad command line.

The driver process imports neither torch nor dcsnas (it must outlive whatever breaks in them and hold no
CUDA context), so the section functions import them where they run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[2]
JSON_NAME, LOG_NAME = "check.json", "check.log"
TRAIN_CONFIG = "experiments/gpu/dcsfb_resnet50_market1501.yaml"
SEARCH_CONFIG = "experiments/gpu/dcs_dnas_market.yaml"
NNI_CONFIG = "experiments/cpu/nni_random_tiny.yaml"
SPACE = "search_spaces/mbv2_reid.yaml"
REQUIRED = ("numpy", "yaml", "PIL", "tqdm", "torchvision", "tensorboard", "matplotlib", "sklearn")
GLOBAL_BUDGET_S = 475  # whole check on the GPU, well inside 8 minutes
TINY_BUDGET_S = 1800  # the CPU smoke test on a shared machine

# Seed 001 Table 5 ("Comparison of the speed and memory cost of the models with and without SA or CSALR"):
# (config, model, groups, memory MB/image, FPS), transcribed from the paper.
TABLE5 = (
    ("experiments/paper/csalr/pcb_base.yaml", "PCB", None, 137.64, 581.81),
    ("experiments/paper/csalr/pcb_sa.yaml", "PCB + SA", 1, 300.68, 266.67),
    ("experiments/paper/csalr/ablation_groups_1.yaml", "PCB + CSALR", 1, 165.00, 507.93),
    ("experiments/paper/csalr/pcb_csalr.yaml", "PCB + CSALR", 2, 192.25, 460.43),
    ("experiments/paper/csalr/ablation_groups_4.yaml", "PCB + CSALR", 4, 221.97, 418.30),
    ("experiments/paper/csalr/ablation_groups_8.yaml", "PCB + CSALR", 8, 254.75, 380.95),
)
ATTENTION_CASES = ("sa_sdpa", "csalr_g1", "csalr_g2", "dcs_csalr_g2")

# Sizes of every section: the GPU check, and the CPU smoke test (--tiny).
PLANS: dict[str, dict[str, Any]] = {
    "full": {
        "caps": {"env": 20, "data": 30, "train_bf16": 60, "train_fp16": 60, "search": 85, "search_child": 35,
                 "attention": 75, "model": 90, "eval": 35, "nni": 30},
        "presets": ["small", "tiny"], "preset": "small", "size": [256, 128], "pk": [16, 4], "test_batch": 256,
        "train_epochs": 6, "train_ib_warmup": 3, "search_epochs": 13, "search_warmup": 1, "search_ib_warmup": 2,
        "search_size": [256, 128], "child_epochs": 4,
        "attention_cli": {"batch": 8, "repeats": 10},
        "attention_cases": {"batch": 32, "repeats": 10, "shapes": ["256x128/layer1", "256x128/layer2",
                                                                   "256x128/layer3", "384x128/layer1",
                                                                   "384x128/layer2", "384x128/layer3"]},
        "model_configs": [row[0] for row in TABLE5], "model_batch": 64, "model_repeats": 10, "model_fp32": True,
        "eval_cases": {"market": {"n_q": 3368, "n_g": 15913, "n_ids": 751, "n_distractors": 2798, "n_cams": 6}},
        "eval_rerank": "market", "eval_cpu_reference": "market",
    },
    "tiny": {
        "caps": {"env": 120, "data": 120, "train_bf16": 300, "train_fp16": 300, "search": 300, "search_child": 240,
                 "attention": 400, "model": 400, "eval": 120, "nni": 300},
        "presets": ["tiny"], "preset": "tiny", "size": [64, 32], "pk": [4, 2], "test_batch": 32,
        # 64x32 leaves 4x2 maps after layer3: 8 landmarks (a 4x2 grid) instead of the config's 96
        "train_attention": "[{stage: layer1, name: dcs, options: {backend: csalr, landmarks: 8, groups: 2}}, "
                           "{stage: layer2, name: dcs, options: {backend: csalr, landmarks: 8, groups: 2}}, "
                           "{stage: layer3, name: dcs, options: {backend: csalr, landmarks: 8, groups: 2}}]",
        "train_epochs": 1, "train_ib_warmup": 0, "search_epochs": 2, "search_warmup": 1, "search_ib_warmup": 1,
        "search_size": [128, 64],  # the smallest input whose stage-4 map fits mbv2_reid's 32 landmarks
        "child_epochs": 1,
        "attention_cli": {"batch": 1, "repeats": 1},
        "attention_cases": {"batch": 1, "repeats": 1, "shapes": ["256x128/layer3"]},
        "model_configs": [TABLE5[0][0], TABLE5[3][0]], "model_batch": 2, "model_repeats": 1, "model_fp32": False,
        "eval_cases": {"market": {"n_q": 200, "n_g": 1000, "n_ids": 60, "n_distractors": 100, "n_cams": 6}},
        "eval_rerank": "market", "eval_cpu_reference": "market",
    },
}
SECTIONS = tuple(PLANS["full"]["caps"])
DEPENDS = {"train_bf16": "data", "train_fp16": "data", "search": "data", "search_child": "search", "nni": "data"}


# ============================================================================ helpers (both processes)
def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def non_finite(obj: Any, path: str = "") -> list[str]:
    """Paths of the NaN/inf numbers in a JSON-able object."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in non_finite(v, f"{path}[{i}]")]
    return [path] if is_number(obj) and not math.isfinite(obj) else []


def write_json(path: Path, obj: Any) -> None:
    """Atomically (temp file + rename), so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# ============================================================================ sections (worker process)
class Worker:
    """What a section's process has: its plan, folders, device and a partial result written as it goes."""

    def __init__(self, name: str, spec: dict[str, Any]):
        self.name, self.spec = name, spec
        self.plan: dict[str, Any] = PLANS[spec["plan"]]
        self.device: str = spec["device"]
        self.cuda = self.device.startswith("cuda")
        self.work = Path(spec["work"])
        self.result_path = Path(spec["result"])
        self.figures: dict[str, Any] = {}
        self.started = time.monotonic()

    def time_left(self) -> float:
        """Seconds left of the section's cap."""
        return self.spec["cap_s"] - (time.monotonic() - self.started)

    def save(self) -> None:
        write_json(self.result_path, self.figures)

    def put(self, key: str, value: Any) -> None:
        self.figures[key] = value
        self.save()

    def sync(self) -> None:
        """Wait for the device, so that an asynchronous CUDA error surfaces here."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def cli(self, *argv: str) -> None:
        """``dcsnas ARGV`` in this process (``dcsnas.cli.main``); a non-zero exit is an error."""
        from dcsnas.cli import main

        print(f"[{self.name}] dcsnas {' '.join(argv)}", flush=True)
        code = main(list(argv))
        self.sync()
        if code:
            raise RuntimeError(f"dcsnas {argv[0]} exited with {code} (its message is in {LOG_NAME})")

    def peak_memory(self) -> dict[str, Optional[float]]:
        if not self.cuda:
            return {"peak_allocated_mb": None, "peak_reserved_mb": None}
        import torch

        return {"peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
                "peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20}

    def reset_peak(self) -> None:
        if self.cuda:
            import gc

            import torch

            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def data_root(self, preset: str) -> Path:
        return self.work / "data" / preset

    def run_dir(self, name: str) -> Path:
        """A fresh run directory in the scratch folder (one left by an earlier check is removed)."""
        path = self.work / "runs" / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    def data_overrides(self, preset: str, size: list[int]) -> list[str]:
        p, k = self.plan["pk"]
        return ["--set", "data.dataset=synthetic", "--set", f"data.root={self.data_root(preset)}",
                "--set", f"data.p={p}", "--set", f"data.k={k}",
                "--set", f"data.num_workers={self.spec['num_workers']}",
                "--set", f"data.test_batch_size={self.plan['test_batch']}",
                "--set", f"data.transforms.height={size[0]}", "--set", f"data.transforms.width={size[1]}",
                "--set", f"device={self.device}"]


class StepClock:
    """Times of every optimizer step in this process (synchronised on CUDA), by optimizer."""

    def __init__(self, cuda: bool):
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.synchronize: Optional[Callable[[], None]] = torch.cuda.synchronize if cuda else None
        self.events: list[tuple[int, float]] = []
        self.sizes: dict[int, int] = {}
        self.handle = register_optimizer_step_post_hook(self._hook)

    def _hook(self, optimizer, args, kwargs) -> None:
        if self.synchronize is not None:
            self.synchronize()
        key = id(optimizer)
        if key not in self.sizes:
            self.sizes[key] = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
        self.events.append((key, time.perf_counter()))

    def close(self) -> None:
        self.handle.remove()

    def intervals(self, split: bool = False) -> dict[str, Any]:
        """``iteration_ms``: median time between consecutive steps of the weight optimizer (the one with the
        most parameters). ``split`` (a search, whose only other optimizer is α's): also ``arch_part_ms``
        (weight step -> α step) and ``weight_part_ms`` (α step -> next weight step), medians."""
        if not self.events:
            raise RuntimeError("no optimizer step was taken")
        weights = max(self.sizes, key=self.sizes.get)
        times = [t for key, t in self.events if key == weights]
        iteration = [(b - a) * 1000 for a, b in zip(times, times[1:])]
        out: dict[str, Any] = {"weight_steps": len(times), "optimizers": len(self.sizes),
                               "iteration_ms": statistics.median(iteration) if iteration else None}
        others = {key for key in self.sizes if key != weights}
        if split and len(others) != 1:
            raise RuntimeError(f"expected the weight and the architecture optimizer, found {len(self.sizes)}")
        if split:
            other = others.pop()
            arch, weight = [], []
            for (k1, t1), (k2, t2) in zip(self.events, self.events[1:]):
                if k1 == weights and k2 == other:
                    arch.append((t2 - t1) * 1000)
                elif k1 == other and k2 == weights:
                    weight.append((t2 - t1) * 1000)
            out["other_steps"] = sum(1 for key, _ in self.events if key == other)
            if arch and weight:
                out["arch_part_ms"] = statistics.median(arch)
                out["weight_part_ms"] = statistics.median(weight)
        return out


def read_metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


def loss_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """First and last epoch's mean train loss (``total``); an error if any epoch's loss is not finite."""
    history = metrics.get("history", [])
    totals = [record["train"]["total"] for record in history]
    if not totals:
        raise RuntimeError("metrics.json has no training history")
    bad = [i + 1 for i, v in enumerate(totals) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite mean training loss in epochs {bad}: {totals}")
    return {"loss_first_epoch": totals[0], "loss_last_epoch": totals[-1], "epochs": len(totals)}


def test_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    test = metrics.get("test") or {}
    return {k: test[k] for k in ("mAP", "rank-1", "mINP") if k in test}


def section_env(w: Worker) -> None:
    import torch

    f: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                         "platform": platform.platform(), "torch": torch.__version__,
                         "torch_cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
                         "torch_threads": torch.get_num_threads(), "device": w.device,
                         "cuda_available": torch.cuda.is_available()}
    import dcsnas

    f["dcsnas"] = dcsnas.__version__
    f["dcsnas_path"] = str(Path(dcsnas.__file__).resolve().parent)
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    f["missing_packages"] = missing
    f["nni"] = importlib.util.find_spec("nni") is not None
    shm = Path("/dev/shm")
    f["dev_shm_free_gb"] = shutil.disk_usage(shm).free / 2**30 if shm.is_dir() else None
    w.figures.update(f)
    w.save()
    print(f"[env] python {f['python']}, torch {f['torch']} (CUDA {f['torch_cuda']}), dcsnas {f['dcsnas']} "
          f"from {f['dcsnas_path']}", flush=True)
    if missing:
        raise RuntimeError(f"packages dcsnas needs are missing: {', '.join(missing)}")
    if Path(f["dcsnas_path"]).parent != ROOT:
        raise RuntimeError(f"dcsnas is imported from {f['dcsnas_path']}, not from this checkout {ROOT}; "
                           "run through check.sh (it sets PYTHONPATH)")
    device = torch.device(w.device)
    if w.cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {w.device} but torch {torch.__version__} sees no CUDA device")
        props = torch.cuda.get_device_properties(device)
        f.update({"gpu": props.name, "gpu_memory_gb": props.total_memory / 2**30,
                  "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
                  "cudnn": torch.backends.cudnn.version(), "bf16_supported": torch.cuda.is_bf16_supported(),
                  "flash_sdp_enabled": torch.backends.cuda.flash_sdp_enabled(),
                  "mem_efficient_sdp_enabled": torch.backends.cuda.mem_efficient_sdp_enabled(),
                  "tf32_matmul": torch.backends.cuda.matmul.allow_tf32})
        print(f"[env] {props.name}, {f['gpu_memory_gb']:.0f} GiB, capability {f['capability']}, "
              f"cuDNN {f['cudnn']}", flush=True)
    # a matrix product in bf16 (autocast) against fp32 on the device: the relative error of bf16 rounding
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(512, 512, generator=g).to(device) for _ in range(2))
    exact = a @ b
    with torch.autocast(device.type, dtype=torch.bfloat16):
        low = a @ b
    w.sync()
    f["bf16_matmul_rel_error"] = float((low.float() - exact).norm() / exact.norm())
    if not f["bf16_matmul_rel_error"] < 0.05:
        raise RuntimeError(f"bf16 matrix product is off by {f['bf16_matmul_rel_error']} relative to fp32")
    w.figures.update(f)
    w.save()


def section_data(w: Worker) -> None:
    from dcsnas.data.synthetic import generate

    workers = max(1, min(8, (os.cpu_count() or 1)))
    for preset in w.plan["presets"]:
        print(f"[data] synthetic preset {preset} ({workers} workers)", flush=True)
        stats = generate(preset, 0, w.data_root(preset), show_progress=False, workers=workers)
        w.put(preset, {"images": stats["images"], "seconds": stats["seconds"],
                       "images_per_s": stats["images_per_s"]})


def _train(w: Worker, amp_dtype: str) -> None:
    plan = w.plan
    run = w.run_dir(f"train-{amp_dtype}")
    argv = ["train", "--config", TRAIN_CONFIG, "--out", str(run), "--no-progress",
            *w.data_overrides(plan["preset"], plan["size"]),
            "--set", "model.pretrained=false", "--set", "amp=true", "--set", f"amp_dtype={amp_dtype}",
            "--set", "channels_last=true", "--set", f"optim.epochs={plan['train_epochs']}",
            "--set", "optim.warmup_epochs=1", "--set", "optim.milestones=[1000]",
            "--set", "eval.every=0", "--set", f"loss.ib_warmup_epochs={plan['train_ib_warmup']}"]
    if "train_attention" in plan:
        argv += ["--set", f"model.attention={plan['train_attention']}"]
    clock, metrics, batch = _timed_cli(w, argv, run)
    steps = clock.intervals()
    f = {"amp_dtype": amp_dtype if w.cuda else None, "channels_last": w.cuda, "batch": batch,
         "input": plan["size"], **steps, **loss_summary(metrics), "test": test_summary(metrics),
         "train_time_s": metrics["train_time_s"], **w.peak_memory()}
    f["images_per_s"] = batch / steps["iteration_ms"] * 1000 if steps["iteration_ms"] else None
    f["images_per_s_end_to_end"] = steps["weight_steps"] * batch / metrics["train_time_s"]
    w.figures.update(f)
    w.save()


def _timed_cli(w: Worker, argv: list[str], run: Path) -> tuple[StepClock, dict, int]:
    """Run ``dcsnas argv`` with the step clock and a fresh peak-memory counter: (clock, metrics.json of
    ``run``, images per batch)."""
    clock = StepClock(w.cuda)
    w.reset_peak()
    try:
        w.cli(*argv)
    finally:
        clock.close()
    return clock, read_metrics(run), w.plan["pk"][0] * w.plan["pk"][1]


def section_train_bf16(w: Worker) -> None:
    _train(w, "bfloat16")


def section_train_fp16(w: Worker) -> None:
    _train(w, "float16")


def section_search(w: Worker) -> None:
    plan = w.plan
    run = w.run_dir("search")
    argv = ["search", "--config", SEARCH_CONFIG, "--out", str(run), "--no-progress",
            *w.data_overrides(plan["preset"], plan["search_size"]),
            "--set", f"search.space={SPACE}", "--set", "search.mode=hard",
            "--set", f"optim.epochs={plan['search_epochs']}", "--set", "optim.warmup_epochs=0",
            "--set", "optim.milestones=[1000]", "--set", f"search.warmup_epochs={plan['search_warmup']}",
            "--set", f"loss.ib_warmup_epochs={plan['search_ib_warmup']}",
            "--set", "eval.every=0", "--set", "eval.val_identities=0"]
    clock, metrics, batch = _timed_cli(w, argv, run)
    f = {"mode": "hard", "space": SPACE, "input": plan["search_size"], "batch": batch,
         **clock.intervals(split=True), **loss_summary(metrics), "supernet_test": test_summary(metrics),
         "train_time_s": metrics["train_time_s"], "arch_mflops": metrics["arch"]["flops"] / 1e6,
         **w.peak_memory()}
    w.figures.update(f)
    w.save()


def section_search_child(w: Worker) -> None:
    import yaml

    plan = w.plan
    search_run = w.work / "runs" / "search"
    # the search's own config (data, losses, optimizer) without its search section: the child trains as the
    # supernet's weights did
    config = yaml.safe_load((search_run / "config.yaml").read_text())
    head = config.pop("head", "bnneck")
    config.pop("search", None)
    config.pop("nni", None)
    config["model"] = {"head": head}
    config["optim"]["epochs"] = plan["child_epochs"]
    if config["loss"].get("ib_warmup_epochs") is not None:  # the IB term must start within the child's epochs
        config["loss"]["ib_warmup_epochs"] = min(config["loss"]["ib_warmup_epochs"], plan["child_epochs"] - 1)
    config_path = w.work / "child.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run = w.run_dir("child")
    clock = StepClock(w.cuda)
    w.reset_peak()
    try:
        w.cli("retrain", "--arch", str(search_run / "arch.json"), "--config", str(config_path), "--out", str(run),
              "--no-progress")
    finally:
        clock.close()
    metrics = read_metrics(run)
    steps = clock.intervals()
    f = {"config": "the search's resolved config without its search section", **steps, **loss_summary(metrics),
         "test": test_summary(metrics), **w.peak_memory()}
    search = json.loads(Path(w.spec["results"]["search"]).read_text())
    if steps["iteration_ms"] and search.get("weight_part_ms"):
        f["supernet_weight_step_over_child_step"] = search["weight_part_ms"] / steps["iteration_ms"]
    if steps["iteration_ms"] and search.get("iteration_ms"):
        f["search_iteration_over_child_step"] = search["iteration_ms"] / steps["iteration_ms"]
    w.figures.update(f)
    w.save()


def section_attention(w: Worker) -> None:
    """SA (SDPA), CSALR G=1, 2 and DCS-CSALR at the stage shapes, measured in this process with the
    benchmark's own step (:func:`dcsnas.bench.attention.measure`: one warm-up, then peak memory and times of
    forward + backward); then ``dcsnas bench attention --quick``, whose every case runs in a fresh process."""
    import torch

    from dcsnas.bench.attention import measure
    from dcsnas.bench.memory import METHODS

    cases = w.plan["attention_cases"]
    rows = []
    for shape in cases["shapes"]:
        print(f"[attention] {', '.join(ATTENTION_CASES)} at {shape}, batch {cases['batch']}", flush=True)
        for case in ATTENTION_CASES:
            r = measure({"case": case, "shape": shape, "batch": cases["batch"], "repeats": cases["repeats"],
                         "device": w.device, "threads": torch.get_num_threads()})
            rows.append({"case": case, "shape": shape, "time_ms": statistics.median(r["times_ms"]),
                         "time_min_ms": min(r["times_ms"]), "peak_mb": r["peak_mb"]})
        w.put("stage_shapes", {"batch": cases["batch"], "repeats": cases["repeats"], "in_process": True,
                               "memory_method": METHODS[torch.device(w.device).type] + " (in this process: on "
                               "CPU blocks malloc reuses do not show)", "rows": rows})
    cli = w.plan["attention_cli"]
    out = w.work / "attention.json"
    w.cli("bench", "attention", "--device", w.device, "--quick", "--batch", str(cli["batch"]),
          "--repeats", str(cli["repeats"]), "--out", str(out))
    bench = json.loads(out.read_text())
    keep = ("case", "shape", "n", "time_ms", "time_min_ms", "peak_mb")
    w.put("quick", {"batch": bench["batch"], "repeats": bench["repeats"], "memory_method": bench["memory_method"],
                    "speed": [{k: r[k] for k in keep} for r in bench["speed"]], "targets": bench["targets"],
                    "approximation_weights": bench["approximation"]["weights"]})


def _table5_row(config: str) -> tuple:
    return next(row for row in TABLE5 if row[0] == config)


def section_model(w: Worker) -> None:
    plan = w.plan
    batch = plan["model_batch"]
    modes = [("inference", []), ("train", ["--train"])]
    if plan["model_fp32"] and w.cuda:
        modes.append(("train_fp32", ["--train", "--set", "amp=false"]))
    rows = []
    for config in plan["model_configs"]:
        _, model, groups, paper_mb, paper_fps = _table5_row(config)
        row: dict[str, Any] = {"config": config, "model": model, "groups": groups,
                               "paper_memory_mb_per_image": paper_mb, "paper_fps": paper_fps}
        rows.append(row)
        for mode, extra in modes:
            out = w.work / f"model-{Path(config).stem}-{mode}.json"
            w.reset_peak()
            w.cli("bench", "model", "--config", config, "--set", "model.pretrained=false", "--device", w.device,
                  "--batch", str(batch), "--repeats", str(plan["model_repeats"]), *extra, "--out", str(out))
            r = json.loads(out.read_text())
            if mode == "inference":
                row[mode] = {"images_per_s": batch / r["latency_ms"] * 1000, "latency_ms": r["latency_ms"],
                             "peak_memory_mb": r["peak_memory_mb"],
                             "memory_mb_per_image": r["peak_memory_mb"] / batch if r["peak_memory_mb"] is not None
                             else None, "gflops_per_image": r["flops"] / batch / 1e9, "params": r["params"]}
            else:
                row[mode] = {"images_per_s": r["images_per_s"], "amp_dtype": r["amp_dtype"],
                             "peak_memory_mb": r["peak_memory_mb"],
                             "memory_mb_per_image": r["peak_memory_mb"] / batch if r["peak_memory_mb"] is not None
                             else None}
            w.put("rows", _with_ratios(rows))
    w.put("batch", batch)
    w.put("input", [384, 128])
    w.put("note", "paper: memory in MB/image and FPS of seed 001 Table 5 (its setting is not stated). Here, "
                  "per image = / batch: inference: dcsnas bench model (one forward, memory above weights and input); "
                  "train/train_fp32: dcsnas bench model --train (AMP as the config / fp32; memory = peak allocated "
                  "during the steps: weights, gradients and Adam state included). *_vs_pcb: ratio to the PCB row, "
                  "beside the paper's paper_*_vs_pcb")


def _with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's figures divided by the PCB row's (when measured), and the paper's same ratios."""
    base = next((r for r in rows if r["groups"] is None), None)
    for r in rows:
        if base is None:
            break
        r["paper_memory_vs_pcb"] = r["paper_memory_mb_per_image"] / base["paper_memory_mb_per_image"]
        r["paper_fps_vs_pcb"] = r["paper_fps"] / base["paper_fps"]
        for mode in ("train", "train_fp32", "inference"):
            if mode in r and mode in base:
                mine, ref = r[mode], base[mode]
                mine["images_per_s_vs_pcb"] = mine["images_per_s"] / ref["images_per_s"]
                if mine["memory_mb_per_image"] is not None and ref["memory_mb_per_image"]:
                    mine["memory_vs_pcb"] = mine["memory_mb_per_image"] / ref["memory_mb_per_image"]
    return rows


def _bench_eval_module():
    """experiments/bench/eval.py (its Market/MSMT-like labels and features), imported from its file."""
    spec = importlib.util.spec_from_file_location("bench_eval", ROOT / "experiments" / "bench" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section_eval(w: Worker) -> None:
    import numpy as np
    import torch

    from dcsnas.metrics import evaluate_features

    bench = _bench_eval_module()
    device = torch.device(w.device)
    for name, case in w.plan["eval_cases"].items():
        rng = np.random.default_rng(0)
        labels = bench.labels(case["n_q"], case["n_g"], case["n_ids"], case["n_distractors"], case["n_cams"], rng)
        qf, gf = bench.features(case["n_q"], rng), bench.features(case["n_g"], rng)
        qd, gd = torch.from_numpy(qf).to(device), torch.from_numpy(gf).to(device)
        row: dict[str, Any] = {"num_query": case["n_q"], "num_gallery": case["n_g"], "dim": qf.shape[1]}
        runs = [("device", qd, gd, False)]
        if name == w.plan["eval_cpu_reference"]:
            runs.append(("cpu", torch.from_numpy(qf), torch.from_numpy(gf), False))
        if name == w.plan["eval_rerank"]:
            runs.append(("device_rerank", qd, gd, True))
        results = {}
        for key, q, g, rerank in runs:
            if rerank and w.time_left() < w.spec["cap_s"] / 2:
                row[key] = {"skipped": "less than half of the section's cap left"}
                continue
            w.reset_peak()
            w.sync()
            tic = time.perf_counter()
            res = evaluate_features(q, g, *labels, metric="euclidean", rerank=rerank)
            w.sync()
            seconds = time.perf_counter() - tic
            results[key] = res
            row[key] = {"seconds": seconds, "mAP": res["mAP"], "rank-1": float(res["cmc"][0]),
                        "num_valid_queries": res["num_valid_queries"],
                        **(w.peak_memory() if key.startswith("device") else {})}
            w.put(name, row)
        if "cpu" in results:
            a, b = results["device"], results["cpu"]
            row["device_vs_cpu_max_abs_diff"] = max(abs(a["mAP"] - b["mAP"]), abs(a["mINP"] - b["mINP"]),
                                                    float(np.abs(np.asarray(a["cmc"]) - np.asarray(b["cmc"])).max()))
            w.put(name, row)
            if not row["device_vs_cpu_max_abs_diff"] < 1e-4:
                raise RuntimeError(f"{name}: metrics on {w.device} differ from CPU by "
                                   f"{row['device_vs_cpu_max_abs_diff']}")


def section_nni(w: Worker) -> None:
    if importlib.util.find_spec("nni") is None:
        w.put("skipped", "nni is not installed")
        print("[nni] skipped: nni is not installed", flush=True)
        return
    run = w.run_dir("nni-random")
    w.cli("search", "--strategy", "nni:random", "--config", NNI_CONFIG, "--out", str(run), "--no-progress",
          "--set", f"data.root={w.data_root('tiny')}", "--set", f"device={w.device}",
          "--set", "nni.max_trials=2", "--set", "nni.trial_epochs=1")
    metrics = read_metrics(run)
    w.put("strategy", "nni:random")
    w.put("arch_mflops", metrics["arch"]["flops"] / 1e6)


def worker_main(name: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    w = Worker(name, spec)
    w.save()
    try:
        globals()[f"section_{name}"](w)
        w.sync()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        return 1
    return 0


# ============================================================================ driver
class Check:
    """Runs the sections one after another, each in a worker process with its cap, into OUT_DIR."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.plan_name = "tiny" if args.tiny else "full"
        self.plan = PLANS[self.plan_name]
        self.out = Path(args.out_dir).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / LOG_NAME
        self.json_path = self.out / JSON_NAME
        self.start = time.monotonic()
        self.budget = args.budget_s or (TINY_BUDGET_S if args.tiny else GLOBAL_BUDGET_S)
        self.work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="dcsnas-check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.results_dir = self.work / "results"
        self.results_dir.mkdir(exist_ok=True)
        self.report: dict[str, Any] = {
            "check": "dcsnas GPU path", "command": ["experiments/gpu/check.sh", *sys.argv[1:]],
            "device": args.device, "tiny": args.tiny, "plan": self.plan_name, "budget_s": self.budget,
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "status": "running", "failed": [], "sections": {},
        }
        self.log_path.write_text("")

    def say(self, text: str, error: bool = False) -> None:
        print(text, file=sys.stderr if error else sys.stdout, flush=True)
        with self.log_path.open("a") as log:
            log.write(text + "\n")

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def save(self) -> None:
        self.report["elapsed_s"] = round(self.elapsed(), 1)
        write_json(self.json_path, self.report)

    def run_section(self, name: str) -> dict[str, Any]:
        cap = min(self.plan["caps"][name], self.budget - self.elapsed())
        entry: dict[str, Any] = {"status": "running", "cap_s": round(cap, 1)}
        self.report["sections"][name] = entry
        dependency = DEPENDS.get(name)
        if dependency in self.report["sections"] and self.report["sections"][dependency]["status"] != "passed":
            entry.update(status="skipped", error=f"needs section {dependency}, which did not pass")
            return entry
        if cap < 5:
            entry.update(status="failed", error=f"no time left in the {self.budget:.0f} s budget")
            return entry
        result = self.results_dir / f"{name}.json"
        spec = {"plan": self.plan_name, "device": self.args.device, "work": str(self.work), "result": str(result),
                "cap_s": cap,
                "num_workers": self.num_workers(),
                "results": {n: str(self.results_dir / f"{n}.json") for n in SECTIONS}}
        spec_path = self.results_dir / f"{name}.spec.json"
        write_json(spec_path, spec)
        self.say(f"== {name} (cap {cap:.0f} s, {self.elapsed():.0f} s elapsed)")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        tic = time.monotonic()
        with self.log_path.open("a") as log:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", name, str(spec_path)],
                                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = proc.wait(timeout=cap)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                code, timed_out = proc.wait(), True
        entry["seconds"] = round(time.monotonic() - tic, 1)
        entry["figures"] = json.loads(result.read_text()) if result.is_file() else {}
        bad = non_finite(entry["figures"])
        if timed_out:
            entry.update(status="failed", error=f"ran past its cap of {cap:.0f} s (figures so far kept)")
        elif code:
            entry.update(status="failed", error=f"exited with {code}: " + _error_tail(self.log_path))
        elif bad:
            entry.update(status="failed", error=f"non-finite figures: {', '.join(bad)}")
        else:
            entry["status"] = "passed"
        return entry

    def say_versions(self, env: dict[str, Any]) -> None:
        self.say(f"   python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}, cuDNN "
                 f"{env.get('cudnn')}), GPU {env.get('gpu')}, dcsnas {env.get('dcsnas')} from {env.get('dcsnas_path')}")

    def num_workers(self) -> int:
        """Data-loader workers: ``--num-workers``, else 0 with --tiny, else up to 8 (two cores left free)."""
        if self.args.num_workers is not None:
            return self.args.num_workers
        if self.args.tiny:
            return 0
        return max(0, min(8, (os.cpu_count() or 2) - 2))

    def run(self) -> int:
        asked = self.args.sections.split(",") if self.args.sections else list(SECTIONS)
        unknown = [n for n in asked if n not in SECTIONS]
        if unknown:
            self.say(f"check: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", True)
            return 2
        names = with_dependencies(asked)
        self.say(f"dcsnas GPU check: device {self.args.device}, plan {self.plan_name}, budget {self.budget:.0f} s, "
                 f"out {self.out}, work {self.work}")
        self.save()
        try:
            for name in names:
                entry = self.run_section(name)
                self.save()
                self.say(f"   {name}: {entry['status']} in {entry.get('seconds', 0)} s"
                         + (f": {entry['error']}" if "error" in entry else ""), entry["status"] == "failed")
                if entry["status"] != "passed":
                    self.report["failed"].append(name)
                if name == "env":
                    self.say_versions(entry["figures"])
                if name == "env" and entry["status"] != "passed":
                    self.say("   env failed: the other sections were not run", True)
                    break
        finally:
            self.report["status"] = "failed" if self.report["failed"] else "passed"
            self.save()
            if not self.args.keep_work and not self.args.work:
                shutil.rmtree(self.work, ignore_errors=True)
        summary = f"check {self.report['status']} in {self.elapsed():.0f} s: {self.json_path}"
        if self.report["failed"]:
            self.say(f"{summary}; FAILED: {', '.join(self.report['failed'])} (details in {self.log_path})", True)
            return 1
        self.say(summary)
        return 0


def with_dependencies(names: list[str]) -> list[str]:
    """``names``, ``env`` and the sections they need (``search_child`` needs ``search``, which needs ``data``),
    in the order of :data:`SECTIONS`."""
    wanted = {"env", *names}
    while True:
        more = {DEPENDS[n] for n in wanted if n in DEPENDS} - wanted
        if not more:
            return [n for n in SECTIONS if n in wanted]
        wanted |= more


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _error_tail(log_path: Path, lines: int = 12) -> str:
    """The last lines of the log (the worker's traceback)."""
    text = log_path.read_text(errors="replace").strip().splitlines()
    return "\n".join(text[-lines:])


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="experiments/gpu/check.sh", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder for check.json and check.log")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny preset and sizes (the CPU smoke test)")
    parser.add_argument("--sections", help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    parser.add_argument("--budget-s", type=float, help=f"whole-check time budget in s (default {GLOBAL_BUDGET_S}; "
                                                       f"--tiny: {TINY_BUDGET_S})")
    parser.add_argument("--work", metavar="DIR", help="scratch folder for data and runs, kept (runs in it are "
                                                      "replaced; default: a temporary folder, removed at the end)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary scratch folder")
    parser.add_argument("--num-workers", type=int, help="data-loader workers (default: up to 8; --tiny: 0)")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1], argv[2])
    return Check(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
