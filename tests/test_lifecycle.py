"""The life of a run directory on the command line (tiny preset): ``--resume`` alone continues from the run's own
config.yaml, ``--set`` on a resume changes only what a resume may change and the run's config.yaml follows it,
and a start that fails its checks leaves ``--out`` as it found it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from dcsnas.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "cpu" / "tiny_test.yaml"
SEARCH = ROOT / "experiments" / "cpu" / "search_tiny.yaml"
TINY_SPACE = ROOT / "search_spaces" / "tiny.yaml"


def train_args(data: Path, out: Path, *sets: str) -> list[str]:
    args = ["train", "--config", str(TINY), "--set", f"data.root={data}", "--set", "optim.epochs=1",
            "--set", "eval.every=0", "--out", str(out), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    return args


def tree(path: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``path``: what a refused start must leave unchanged."""
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def one_epoch(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one-epoch") / "run"
    assert main(train_args(tiny_data, out)) == 0
    return out


@pytest.fixture
def run_copy(one_epoch, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(one_epoch, out)
    (out / ".lock").unlink(missing_ok=True)  # this process's: it holds the lock of the run it copies
    return out


def saved(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def test_resume_without_config_continues_from_the_runs_own_config(run_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing here: the defaults' data.root would not exist
    before = saved(run_copy)
    assert main(["train", "--resume", "--out", str(run_copy), "--set", "optim.epochs=2", "--set", "device=cpu",
                 "--no-progress"]) == 0
    assert json.loads((run_copy / "metrics.json").read_text())["epochs"] == 2
    # the run's config.yaml says what the directory holds: two epochs, on the device it continued on
    assert saved(run_copy) == {**before, "optim": {**before["optim"], "epochs": 2}, "device": "cpu"}
    assert not list(run_copy.glob(".*.tmp"))


def test_resume_without_config_refuses_a_key_a_resume_cannot_change(run_copy, capsys):
    before = tree(run_copy)
    assert main(["train", "--resume", "--out", str(run_copy), "--set", "optim.lr=0.1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "differs from the run's saved config in optim.lr" in err and "Traceback" not in err
    assert tree(run_copy) == before


@pytest.mark.parametrize("out_state", ["missing", "missing-parent", "empty"])
def test_a_start_that_fails_its_checks_leaves_out_as_it_found_it(tiny_data, tmp_path, capsys, out_state):
    out = tmp_path / "parent" / "run" if out_state == "missing-parent" else tmp_path / "run"
    if out_state == "empty":
        out.mkdir()
    before = tree(tmp_path)
    # P×K larger than the training split: refused once the data is loaded, after the run directory was made
    assert main(train_args(tiny_data, out, "data.p=100")) == 2
    assert "yields no batch" in capsys.readouterr().err
    assert tree(tmp_path) == before
    if out_state == "empty":
        assert main(train_args(tiny_data, out)) == 0  # the corrected start needs no --force
        assert (out / "metrics.json").is_file()


def test_a_forced_start_that_fails_its_checks_puts_the_old_run_back(run_copy, tiny_data, tmp_path, capsys):
    before = tree(tmp_path)
    assert main(train_args(tiny_data, run_copy, "data.p=100") + ["--force"]) == 2
    assert "yields no batch" in capsys.readouterr().err
    assert tree(tmp_path) == before  # nothing moved aside is left behind: no run.replaced-* folder


def test_a_search_that_fails_its_checks_leaves_no_run_directory(tiny_data, tmp_path, capsys):
    out = tmp_path / "search"
    args = ["search", "--config", str(SEARCH), "--set", f"data.root={tiny_data}", "--set",
            f"search.space={TINY_SPACE}", "--set", "data.p=13", "--out", str(out), "--no-progress"]
    assert main(args) == 2
    assert "yields no batch on the weight split" in capsys.readouterr().err
    assert not out.exists()


def test_retrain_resumes_without_config(tiny_data, tmp_path, capsys):
    from conftest import tiny_arch

    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(tiny_arch()))
    out = tmp_path / "retrain"
    assert main(["retrain", "--arch", str(arch), "--config", str(TINY), "--set", f"data.root={tiny_data}", "--set",
                 "model.attention=[]", "--set", "optim.epochs=1", "--set", "eval.every=0", "--out", str(out),
                 "--no-progress"]) == 0
    assert main(["retrain", "--arch", str(arch), "--resume", "--out", str(out), "--set", "optim.epochs=2",
                 "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2 and saved(out)["optim"]["epochs"] == 2
    assert json.loads((out / "arch.json").read_text()) == tiny_arch()
    assert main(["retrain", "--arch", str(arch), "--out", str(tmp_path / "other")]) == 2
    assert "retrain needs --config FILE" in capsys.readouterr().err
