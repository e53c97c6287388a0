"""Shared fixtures: tiny image trees in the real layouts of the supported data sets."""

from __future__ import annotations

import os
from pathlib import Path

# Before torch loads OpenMP: busy-waiting threads make small kernels many times slower when the two cores
# are shared (DDP workers, other processes).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
from PIL import Image


def write_image(path: Path, color: tuple[int, int, int] = (128, 64, 32), size: tuple[int, int] = (16, 32)) -> None:
    """A small solid RGB image (``size`` is width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def write_tree(root: Path, files: dict[str, list[str]]) -> Path:
    """``files`` maps a split folder (relative to ``root``) to file names."""
    for folder, names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            write_image(root / folder / name)
    return root


def load_bench(name: str):
    """The benchmark script experiments/bench/<name>.py as a module (experiments/bench is not a package),
    registered in ``sys.modules`` (its dataclasses look their module up there)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1]
                                                  / "experiments" / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class DigitSpace:
    """Three choices a, b, c of ten options each; architecture (a, b, c) costs 100·a + 10·b + c FLOPs
    (:func:`digit_costs`)."""

    name = "digits"

    def choices(self):
        from dcsnas.nas.space import Choice

        return [Choice(k, tuple(range(10))) for k in "abc"]


def digit_costs():
    """The cost model of :class:`DigitSpace`."""
    import torch

    from dcsnas.nas.cost import CostModel, CostTerm

    weight = {"a": 100.0, "b": 10.0, "c": 1.0}
    terms = [CostTerm(k, (k,), weight[k] * torch.arange(10, dtype=torch.float64), torch.zeros(10)) for k in "abc"]
    return CostModel(terms, DigitSpace().choices(), (64, 32))


def tiny_arch(s3_attention: dict | None = None) -> dict:
    """An arch.json of the `tiny` space at 64x32 (DCS-CSALR after s2, ``s3_attention`` after s3), as a dict."""
    return {
        "format": "dcsnas-arch", "version": 1, "space": "tiny", "input_size": [64, 32], "flops": 1812000,
        "params": 20000, "search": {}, "skeleton": "mobilenetv2", "stem_channels": 8, "stem_stride": 2,
        "head_channels": 64, "stages": [
            {"name": "s1", "stride": 2, "width": 12, "ops": ["ir_k3_e3", "skip"], "attention": None},
            {"name": "s2", "stride": 2, "width": 16, "ops": ["ir_k5_e3", "ir_k3_e6", "skip"],
             "attention": {"name": "dcs", "options": {"backend": "csalr", "groups": 2, "landmarks": 8,
                                                      "qk_ratio": 2}}},
            {"name": "s3", "stride": 1, "width": 24, "ops": ["ir_k3_e6", "ir_k5_e3"], "attention": s3_attention},
        ],
    }


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """The tests' tensors are tiny: one thread is faster, and immune to a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The synthetic ``tiny`` preset (seed 0), generated once per test session."""
    from dcsnas.data.synthetic import generate

    root = tmp_path_factory.mktemp("data") / "synthetic-tiny"
    generate("tiny", 0, root, show_progress=False)
    return root


@pytest.fixture
def market_tree(tmp_path: Path) -> Path:
    """Market-1501 layout: train pids 2, 7 (relabelled 0, 1); test pids 3, 5; junk (-1) and distractors (0)."""
    return write_tree(tmp_path / "Market-1501-v15.09.15", {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s2_010101_02.jpg",
                               "0007_c1s1_000001_01.jpg", "0007_c6s4_123456_01.jpg"],
        "query": ["0003_c1s1_000100_00.jpg", "0005_c2s1_000200_00.jpg", "0005_c4s1_000300_00.jpg"],
        "bounding_box_test": ["0003_c2s1_000101_01.jpg", "0003_c1s1_000102_01.jpg", "0005_c1s1_000201_01.jpg",
                              "0000_c3s1_000301_01.jpg", "0000_c5s1_000302_02.jpg", "-1_c1s1_000401_01.jpg",
                              "-1_c2s1_000402_01.jpg"],
    }).parent
