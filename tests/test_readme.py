"""The README's Python API snippet runs as printed, on the files ``dcsnas demo --quick`` leaves (a one-epoch
tiny run and an arch.json stand in for them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import tiny_arch

from dcsnas.cli import main

ROOT = Path(__file__).resolve().parents[1]


def python_api_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_api_snippet_runs(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "synthetic-tiny").symlink_to(tiny_data)
    search = tmp_path / "runs" / "demo-quick" / "dcs-dnas-search"
    search.mkdir(parents=True)
    (search / "arch.json").write_text(json.dumps(tiny_arch()))
    assert main(["train", "--config", str(ROOT / "experiments" / "demo" / "quick_dcsfb.yaml"), "--set",
                 "data.root=data/synthetic-tiny", "--set", "eval.before_training=false", "--out",
                 "runs/demo-quick/dcs-fb", "--no-progress"]) == 0
    capsys.readouterr()
    namespace: dict = {}
    exec(compile(python_api_snippet(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    stated = re.search(r"print\(dcsnas.list_models\(\)\).*?(\[.*\])", python_api_snippet()).group(1)
    assert printed[0] == stated  # the list the README's comment states
    assert printed[1] == "torch.Size([4, 1280]) torch.Size([8, 1280])"  # 4 random images, 8 query files
    assert namespace["searched"].backbone is not None
