"""Benchmark of the attention modules (``dcsnas bench attention``).

Speed and memory: forward + backward of one module (``out.sum().backward()``, input with gradient, gamma = 1)
at the feature shapes of ResNet-50 stages. Every (case, shape) pair runs in fresh subprocesses
(``python -m dcsnas.bench.attention SPEC``), so allocator state and thread pools of one case never reach
another; after one warm-up step they measure:

- time: median and minimum wall time over ``repeats`` steps (CUDA: synchronised), and the median CPU time
  of the process (all threads; on a shared machine it shows the work done, whatever the contention);
- peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated before the step; on
  CPU the peak resident set of the step: ``VmHWM`` is reset through ``/proc/self/clear_refs`` just before
  the step and the resident set before it is subtracted. On the CPU it is measured in its own worker, run
  with glibc's ``MALLOC_MMAP_THRESHOLD_`` = 64 KiB, so freed tensors go back to the system and the resident
  set tracks live tensors rather than what malloc keeps cached; times come from a worker with the default
  allocator (under that threshold every large tensor is a fresh mapping, page-faulted on first use, which
  charged a kernel of many tensors up to 1.8x its time).

Workers run with ``OMP_WAIT_POLICY=PASSIVE`` unless the caller sets it: with OpenMP's default busy-waiting,
a machine shared with other processes made small LAPACK calls (CSALR's m x m solve) up to 50x slower.

Approximation: relative Frobenius error ||A - A_SA||_F / ||A_SA||_F of the maps reconstructed by CSA and
CSALR (G = 1, same Q/K/V weights as SA) for a range of landmark counts and Q/K gains (:data:`QK_GAINS`),
on torchvision ResNet-50 layer1 features of synthetic Re-ID images (:func:`dcsnas.data.synthetic.generate`,
preset ``tiny``, resized to 256x128). ImageNet weights are used only when already in the torch hub cache
(nothing is downloaded).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image
from torchvision import models
from torchvision.models import ResNet50_Weights
from torchvision.transforms import functional as TF

from dcsnas.attention.landmarks import landmark_grid
from dcsnas.attention.registry import create_attention
from dcsnas.bench.memory import peak_memory
from dcsnas.data.synthetic import TRAIN_DIR, generate
from dcsnas.utils.io import atomic_savefig

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "sa_sdpa": ("sa", {}),  # SA's default path: fused SDPA on CUDA, query-chunked exact attention elsewhere
    "sa_explicit": ("sa", {"explicit": True}),
    "csa_g2": ("csa", {"landmarks": 96, "groups": 2}),
    "csalr_g1": ("csalr", {"landmarks": 96, "groups": 1}),
    "csalr_g2": ("csalr", {"landmarks": 96, "groups": 2}),
    "csalr_g4": ("csalr", {"landmarks": 96, "groups": 4}),
    "csalr_g8": ("csalr", {"landmarks": 96, "groups": 8}),
    "dcs_sa": ("dcs", {"backend": "sa"}),
    "dcs_csalr_g2": ("dcs", {"backend": "csalr", "landmarks": 96, "groups": 2}),
}
# ResNet-50 stage outputs (C, H, W) for 256x128 and 384x128 inputs.
SHAPES: dict[str, tuple[int, int, int]] = {
    "256x128/layer1": (256, 64, 32),
    "256x128/layer2": (512, 32, 16),
    "256x128/layer3": (1024, 16, 8),
    "384x128/layer1": (256, 96, 32),
    "384x128/layer2": (512, 48, 16),
    "384x128/layer3": (1024, 24, 8),
}
TARGET_SHAPE = "384x128/layer1"
# (case, baseline, measure, required ratio baseline / case); times are also compared on CPU time
TARGETS = [
    ("csalr_g2", "sa_explicit", "time_ms", 4.0),
    ("csalr_g2", "sa_explicit", "cpu_time_ms", 4.0),
    ("csalr_g2", "sa_sdpa", "time_ms", 8.0),
    ("csalr_g2", "sa_sdpa", "cpu_time_ms", 8.0),
    ("csalr_g2", "sa_explicit", "peak_mb", 8.0),
]
LANDMARK_COUNTS = (8, 16, 32, 64, 96, 128, 256, 512)
# Random Q/K weights give near-uniform SA maps; larger gains (logits x gain^2) give the peaked maps of a
# trained network, so the error is reported over a range of map sharpness (row entropy / log n).
QK_GAINS = (1.0, 4.0, 8.0)
MEMORY_METHOD = {
    "cpu": "peak resident set of one fwd+bwd step (VmHWM reset via /proc/self/clear_refs) minus the resident set "
           "before it; fresh subprocess per case, MALLOC_MMAP_THRESHOLD_=65536 (times: another, default malloc)",
    "cuda": "torch.cuda.max_memory_allocated during one fwd+bwd step minus memory allocated before it",
}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Step times, CPU times (ms) and peak memory (MiB) of one case: ``spec`` = case, shape, batch, repeats,
    device, threads and optionally dtype (``float32``, or ``bfloat16``/``float16``: the forward under autocast)
    and time (false: the peak only)."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    name, options = CASES[spec["case"]]
    channels, height, width = SHAPES[spec["shape"]]
    torch.manual_seed(0)
    module = create_attention(name, channels, **options).to(device)
    torch.nn.init.ones_(module.gamma)
    x = torch.randn(spec["batch"], channels, height, width, device=device, requires_grad=True)

    autocast = spec.get("dtype", "float32") != "float32"

    def step() -> None:
        with torch.autocast(device.type, dtype=getattr(torch, spec.get("dtype", "bfloat16")), enabled=autocast):
            out = module(x)
        out.float().sum().backward()
        x.grad = None
        module.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    with peak_memory(device) as peak:
        step()
    times, cpu_times = [], []
    for _ in range(spec.get("repeats", 0) if spec.get("time", True) else 0):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        times.append((time.perf_counter() - start) * 1000)
        cpu_times.append((time.process_time() - cpu_start) * 1000)
    return {"times_ms": times, "cpu_times_ms": cpu_times, "peak_mb": peak.mb}


def run_cases(
    cases, shapes, batch: int, repeats: int, device: str, threads: int, rounds: int = 1, dtype: str = "float32"
) -> list[dict[str, Any]]:
    """:func:`measure` every (case, shape) pair in fresh subprocesses (CPU: one for times, one for the peak),
    ``rounds`` times interleaved.

    Interleaving spreads the cases of a comparison over the same stretch of time, so a burst of load from
    other processes does not fall on one case only. Times are pooled over the rounds; the peak is the largest.
    """
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    memory_env = {**env, "MALLOC_MMAP_THRESHOLD_": "65536"}

    def run(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-m", "dcsnas.bench.attention", json.dumps(spec)],
                              capture_output=True, text=True, env=env, check=False)
        if proc.returncode:
            raise RuntimeError(f"benchmark case {spec['case']} at {spec['shape']} failed:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    pooled: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(rounds):
        for shape in shapes:
            for case in cases:
                spec = {"case": case, "shape": shape, "batch": batch, "repeats": repeats, "device": device,
                        "threads": threads, "dtype": dtype}
                result = run(spec, env)
                if torch.device(device).type == "cpu":  # the peak from a worker of its own (module docstring)
                    result["peak_mb"] = run({**spec, "time": False}, memory_env)["peak_mb"]
                into = pooled.setdefault((shape, case), {"times_ms": [], "cpu_times_ms": [], "peak_mb": 0.0})
                into["times_ms"] += result["times_ms"]
                into["cpu_times_ms"] += result["cpu_times_ms"]
                into["peak_mb"] = max(into["peak_mb"], result["peak_mb"])
    rows = []
    for (shape, case), r in pooled.items():
        name, options = CASES[case]
        channels, height, width = SHAPES[shape]
        rows.append({
            "case": case, "attention": name, "options": options, "shape": shape, "dtype": dtype,
            "channels": channels, "height": height, "width": width, "n": height * width,
            "time_ms": round(statistics.median(r["times_ms"]), 2), "time_min_ms": round(min(r["times_ms"]), 2),
            "cpu_time_ms": round(statistics.median(r["cpu_times_ms"]), 2), "peak_mb": round(r["peak_mb"], 1),
        })
    return rows


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ratios of :data:`TARGETS` at :data:`TARGET_SHAPE` (ratio = baseline / case, from medians)."""
    at = {r["case"]: r for r in rows if r["shape"] == TARGET_SHAPE}
    out = []
    for case, baseline, key, required in TARGETS:
        if case in at and baseline in at:
            ratio = at[baseline][key] / at[case][key]
            out.append({"case": case, "baseline": baseline, "measure": key, "ratio": round(ratio, 2),
                        "required": required, "met": ratio >= required})
    return out


def _imagenet_weights():
    """ResNet-50 ImageNet weights if already in the torch hub cache, else ``None`` (never downloads)."""
    for weights in (ResNet50_Weights.IMAGENET1K_V2, ResNet50_Weights.IMAGENET1K_V1):
        if (Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name).is_file():
            return weights
    return None


def reid_features(batch: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """ResNet-50 layer1 features [batch, 256, 64, 32] of synthetic Re-ID images, the images, the weights' name."""
    with tempfile.TemporaryDirectory() as tmp:
        generate("tiny", 0, tmp, show_progress=False)
        paths = sorted((Path(tmp) / TRAIN_DIR).glob("*.jpg"))
        paths = paths[:: max(1, len(paths) // batch)][:batch]
        images = torch.stack([TF.to_tensor(Image.open(p).convert("RGB").resize((128, 256))) for p in paths])
    weights = _imagenet_weights()
    net = models.resnet50(weights=weights).eval()
    normalised = TF.normalize(images, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        features = net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(normalised)))))
    return features, images, weights.name if weights else "none (random init, no ImageNet weights in the cache)"


def attention_maps(features: torch.Tensor, name: str, landmarks: Optional[int], qk_gain: float = 1.0) -> torch.Tensor:
    """The [B, n, n] map of ``name`` (G = 1) on ``features`` with SA's seed-0 weights, Q and K scaled by ``qk_gain``."""
    channels = features.shape[1]
    torch.manual_seed(0)
    sa = create_attention("sa", channels)
    weights, qk = sa.state_dict(), 2 * sa.qk_channels  # G = 1: the qkv conv's rows are Q, K, then V
    for key in ("qkv.weight", "qkv.bias"):
        weights[key] = torch.cat([weights[key][:qk] * qk_gain, weights[key][qk:]])
    options = {} if name == "sa" else {"landmarks": landmarks, "groups": 1}
    module = create_attention(name, channels, **options)
    module.load_state_dict(weights)
    with torch.no_grad():
        return module(features, need_weights=True)[1][:, 0]


def approximation_errors(features: torch.Tensor, counts, qk_gains=QK_GAINS) -> list[dict[str, Any]]:
    """||A - A_SA||_F / ||A_SA||_F of CSA and CSALR for each landmark count (and n), per Q/K gain."""
    size = tuple(features.shape[2:])
    n = size[0] * size[1]
    out = []
    for gain in qk_gains:
        exact = attention_maps(features, "sa", None, gain)
        entropy = -(exact * exact.clamp_min(1e-30).log()).sum(-1).mean() / math.log(n)
        rows = []
        for count in [*counts, n]:
            row = {"landmarks": count, "grid": list(landmark_grid(count, size))}
            for name in ("csa", "csalr"):
                approx = attention_maps(features, name, count, gain)
                row[name] = round(float((approx - exact).norm() / exact.norm()), 6)
            rows.append(row)
        out.append({"qk_gain": gain, "sa_row_entropy_over_log_n": round(float(entropy), 4), "errors": rows})
    return out


def visualize(
    features: torch.Tensor, images: torch.Tensor, path: str, landmarks: int = 96, qk_gain: float = 4.0
) -> None:
    """A figure like seed 001 Fig. 4: for a few query points, the SA map beside the CSALR reconstruction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = features.shape[2:]
    exact = attention_maps(features[:1], "sa", None, qk_gain)[0]
    approx = attention_maps(features[:1], "csalr", landmarks, qk_gain)[0]
    points = [(0.15, 0.5), (0.4, 0.35), (0.55, 0.65), (0.85, 0.4)]  # (row, column) fractions
    fig, axes = plt.subplots(len(points), 3, figsize=(6, 2.6 * len(points)))
    for (fr, fc), (ax_img, ax_sa, ax_lr) in zip(points, axes):
        r, c = int(fr * height), int(fc * width)
        ax_img.imshow(images[0].permute(1, 2, 0))
        ax_img.scatter([c * images.shape[3] / width], [r * images.shape[2] / height], c="red", s=30)
        for ax, attn, title in ((ax_sa, exact, "SA"), (ax_lr, approx, f"CSALR ({landmarks} landmarks)")):
            ax.imshow(attn[r * width + c].view(height, width), cmap="jet")
            ax.scatter([c], [r], c="white", s=20, marker="x")
            ax.set_title(title, fontsize=8)
        for ax in (ax_img, ax_sa, ax_lr):
            ax.axis("off")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def run_benchmark(
    device: str = "cpu", batch: int = 8, repeats: int = 3, quick: bool = False, threads: Optional[int] = None,
    rounds: int = 1, visualize_path: Optional[str] = None,
) -> dict[str, Any]:
    """The whole benchmark as a JSON-able dict (``quick``: the target shape and fewer landmark counts)."""
    threads = threads or torch.get_num_threads()
    shapes = [TARGET_SHAPE] if quick else list(SHAPES)
    load_before = os.getloadavg()
    rows = run_cases(list(CASES), shapes, batch, repeats, device, threads, rounds)
    features, images, weights = reid_features(batch)
    approximation = approximation_errors(features, LANDMARK_COUNTS[::2] if quick else LANDMARK_COUNTS)
    if visualize_path:
        visualize(features, images, visualize_path)
    return {
        "device": device, "threads": threads, "torch": torch.__version__, "batch": batch, "repeats": repeats,
        "rounds": rounds, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "memory_method": MEMORY_METHOD[torch.device(device).type],
        "speed": rows,
        "targets": check_targets(rows),
        "approximation": {
            "features": f"torchvision resnet50 layer1, {list(features.shape)}",
            "images": "dcsnas.data.synthetic.generate('tiny', 0), bounding_box_train, resized to 256x128",
            "weights": weights,
            "qkv": "SA's default-initialised 1x1 convs (seed 0), Q and K scaled by qk_gain, shared by CSA and CSALR",
            "by_qk_gain": approximation,
        },
    }


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
