"""Model profiling (dcsnas.bench.model) and peak memory (dcsnas.bench.memory): keys, exact counts, and
memory that a forward's tensors must show. No timing assertions."""

import subprocess
import sys

import pytest
import torch.nn.functional as F
from torch import nn

from dcsnas.bench.memory import cpu_peak_supported, memory_env
from dcsnas.bench.model import count_inference_params, profile_model, profile_models
from dcsnas.models.builder import ModelConfig, create_model
from dcsnas.utils.flops import count_params

KEYS = {"params", "params_total", "flops", "weights_mb", "latency_ms", "latency_min_ms", "peak_memory_mb",
        "input_shape", "device", "threads", "repeats", "warmup", "memory_method"}


class GatedConv(nn.Module):
    """Uses ``conv``'s weights functionally, ``gate`` through a hard threshold (no gradient) and ``classifier``
    in training only."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.gate = nn.Conv2d(3, 4, 1)
        self.classifier = nn.Linear(4, 10)

    def forward(self, x):
        y = F.conv2d(x, self.conv.weight, self.conv.bias) * (self.gate(x) > 0).float()
        return self.classifier(y.mean((2, 3))) if self.training else y


def test_inference_params_count_functional_and_thresholded_weights_but_not_training_only_ones():
    net = GatedConv()
    net.conv.bias.requires_grad_(False)
    assert count_inference_params(net, (1, 3, 8, 8)) == 2 * (4 * 3 + 4)
    assert net.training and not net.conv.bias.requires_grad and net.conv.weight.requires_grad
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.skipif(not cpu_peak_supported(), reason="needs a writable /proc/self/clear_refs (Linux)")
def test_cpu_peak_memory_sees_a_new_tensor():
    # in a fresh process started the way the profiler starts its memory worker (memory_env): in this long
    # test process malloc may hand back pages that are already resident, which the resident set cannot see
    code = ("import torch; from dcsnas.bench.memory import peak_memory\n"
            "with peak_memory('cpu') as peak:\n    block = torch.ones(2**24)\nprint(peak.mb)")
    out = subprocess.run([sys.executable, "-c", code], env=memory_env(), capture_output=True, text=True, check=True)
    assert 60 <= float(out.stdout) <= 96  # 64 MiB; page accounting is batched per CPU: a margin


def test_inference_params_of_a_reid_model_leave_out_the_identity_classifier():
    model = create_model(ModelConfig(backbone="mobilenetv2", width_mult=0.25), num_classes=12)
    classifier = model.head.classifier.weight.numel()
    assert count_inference_params(model, (1, 3, 64, 32)) == count_params(model) - classifier


@pytest.mark.skipif(not cpu_peak_supported(), reason="needs a writable /proc/self/clear_refs (Linux)")
def test_profile_models_on_cpu():
    # plain torch modules: the memory worker unpickles them without importing torchvision
    small = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 5))
    conv = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1))
    shapes = [(2, 3, 32, 16), (4, 3, 64, 64)]
    # multiply-adds × 2 over the batch (bias, ReLU and pooling uncounted): a 3×3 conv of 3 channels to 8 at
    # stride 2 (32×16 → 15×7) and an 8→5 linear layer on 2 images; a 3×3 conv of 3 channels to 64 on 4 64×64 images
    flops = [2 * (2 * 8 * 15 * 7 * 3 * 9 + 2 * 8 * 5), 2 * 4 * 64 * 64 * 64 * 3 * 9]
    results = profile_models([small, conv], shapes, "cpu", repeats=2, warmup=1)
    for model, shape, result, hand in zip([small, conv], shapes, results, flops):
        assert set(result) == KEYS
        assert result["flops"] == hand
        assert result["params"] == result["params_total"] == count_params(model)
        assert result["input_shape"] == list(shape) and result["device"] == "cpu" and result["repeats"] == 2
        assert 0 < result["latency_min_ms"] <= result["latency_ms"]
        assert result["peak_memory_mb"] >= 0
        assert model.training  # mode restored
    # the conv's output alone is 4 x 64 x 64 x 64 fp32 = 4 MiB
    assert 4 <= results[1]["peak_memory_mb"] < 16
    assert results[1]["weights_mb"] == pytest.approx((64 * 3 * 9 + 64) * 4 / 2**20)


def test_profile_model_rejects_bad_settings():
    with pytest.raises(ValueError, match="repeats"):
        profile_model(nn.Identity(), (1, 3, 4, 4), repeats=0)
