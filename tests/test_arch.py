"""arch.json (:mod:`dcsnas.models.arch`): the file format as it is shipped, validation errors naming file and
key, and a derived network rebuilt through ``dcsnas.models`` alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dcsnas.errors import ConfigError
from dcsnas.models.arch import ARCH_VERSION, load_arch, write_arch

ROOT = Path(__file__).resolve().parents[1]

# The tiny space's first option of every choice (search_spaces/tiny.yaml), as `dcsnas derive` writes it.
FIRST = {
    "format": "dcsnas-arch", "version": 1, "skeleton": "mobilenetv2", "space": "tiny", "input_size": [64, 32],
    "flops": 1186048, "params": 10036, "search": {}, "stem_channels": 8, "stem_stride": 2, "head_channels": 64,
    "stages": [
        {"name": "s1", "stride": 2, "width": 8, "ops": ["ir_k3_e3", "ir_k3_e3"], "attention": None},
        {"name": "s2", "stride": 2, "width": 12, "ops": ["ir_k3_e3", "ir_k3_e3", "ir_k3_e3"], "attention": None},
        {"name": "s3", "stride": 1, "width": 16, "ops": ["ir_k3_e3", "ir_k3_e3"], "attention": None},
    ],
}
# The tiny space's second option of every choice: CSALR (2 groups) after stage s2.
SECOND = {
    "format": "dcsnas-arch", "version": 1, "skeleton": "mobilenetv2", "space": "tiny", "input_size": [64, 32],
    "flops": 2347434, "params": 22545, "search": {"space": "tiny"}, "stem_channels": 8, "stem_stride": 2,
    "head_channels": 64,
    "stages": [
        {"name": "s1", "stride": 2, "width": 12, "ops": ["ir_k5_e3", "ir_k5_e3"], "attention": None},
        {"name": "s2", "stride": 2, "width": 16, "ops": ["ir_k5_e3", "ir_k5_e3", "ir_k5_e3"],
         "attention": {"name": "csalr", "options": {"landmarks": 8, "qk_ratio": 2, "groups": 2}}},
        {"name": "s3", "stride": 1, "width": 24, "ops": ["ir_k5_e3", "ir_k5_e3"], "attention": None},
    ],
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n")  # the shipped layout: 2-space indent, final newline
    return path


@pytest.fixture
def arch_file(tmp_path):
    return _write(tmp_path / "arch.json", FIRST)


def test_reading_and_writing_back_keeps_the_file_byte_for_byte(tmp_path):
    for i, data in enumerate((FIRST, SECOND)):
        original = _write(tmp_path / f"arch{i}.json", data)
        copy = tmp_path / f"copy{i}.json"
        write_arch(copy, load_arch(original))
        assert copy.read_bytes() == original.read_bytes()


def _edit(path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(version=ARCH_VERSION + 1), "version = 2, expected 1"),
    (lambda d: d.pop("format"), "is not an arch.json"),
    (lambda d: d["stages"][0]["ops"].__setitem__(0, "skip"), "stages[0].ops[0] = 'skip' does not fit the skeleton"),
    (lambda d: d["stages"][1].update(attention={"name": "csalr", "options": {"groups": 3}}),
     "stages[1].attention (s2, 12 channels)"),
    (lambda d: d.update(skeleton="resnet50"), "unknown config key"),
    (lambda d: d["stages"][0].pop("width"), "stages[0]"),
])
def test_bad_arch_json_names_file_and_key(arch_file, edit, message):
    load_arch(arch_file)
    with pytest.raises(ConfigError) as info:
        load_arch(_edit(arch_file, edit))
    assert message in str(info.value) and str(arch_file) in str(info.value)


def test_a_derived_network_rebuilds_without_the_search_code(tmp_path):
    """DESIGN §2: an exported architecture rebuilds through models/ with no supernet code (no dcsnas.nas
    module is imported, in a fresh interpreter)."""
    arch = _write(tmp_path / "arch.json", SECOND)
    script = (
        "import sys, torch\n"
        "from dcsnas.models.builder import ModelConfig, create_model\n"
        f"model = create_model(ModelConfig(backbone='searched', arch={str(arch)!r}), 5).eval()\n"
        "print(tuple(model(torch.randn(2, 3, 64, 32)).shape), type(model.attentions['s2']).__name__)\n"
        "print(sorted(m for m in sys.modules if m == 'dcsnas.nas' or m.startswith('dcsnas.nas.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    shape, nas_modules = done.stdout.strip().splitlines()
    assert shape == "(2, 64) CSALRAttention" and nas_modules == "[]"
