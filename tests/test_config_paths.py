"""Relative paths in configs (``search.space``, ``model.arch``, ``data.root``): the working directory first, then
the config file's folder, then the repository; an error that lists the places tried."""

from pathlib import Path

import pytest

from dcsnas.cli import main
from dcsnas.config import load_config
from dcsnas.engine.config import TrainConfig
from dcsnas.errors import ConfigError
from dcsnas.nas.config import SearchConfig

ROOT = Path(__file__).resolve().parents[1]


def test_repository_config_loads_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(SearchConfig, ROOT / "experiments/cpu/search_tiny.yaml")
    assert Path(cfg.search.space) == ROOT / "search_spaces/tiny.yaml"
    assert Path(cfg.search.space).is_file()


def test_working_directory_comes_first_then_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "cwd" / "search_spaces").mkdir(parents=True)
    (tmp_path / "cwd" / "search_spaces" / "tiny.yaml").write_text("{}")
    monkeypatch.chdir(tmp_path / "cwd")
    cfg = load_config(SearchConfig, ROOT / "experiments/cpu/search_tiny.yaml")
    assert cfg.search.space == "search_spaces/tiny.yaml"  # found where the command runs: kept as written

    folder = tmp_path / "project"
    (folder / "arch.json").parent.mkdir()
    (folder / "arch.json").write_text("{}")
    (folder / "images").mkdir()
    (folder / "train.yaml").write_text("model: {backbone: searched, arch: arch.json}\ndata: {root: images}\n")
    cfg = load_config(TrainConfig, folder / "train.yaml")
    assert (cfg.model.arch, cfg.data.root) == (str(folder / "arch.json"), str(folder / "images"))


def test_missing_relative_path_names_the_places_tried(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "train.yaml").write_text("data: {root: nowhere}\n")
    assert load_config(TrainConfig, tmp_path / "sub" / "train.yaml").data.root == "nowhere"  # may be created later
    with pytest.raises(ConfigError) as exc:
        load_config(TrainConfig, tmp_path / "sub" / "train.yaml", required_paths=("data.root",))
    message = str(exc.value)
    assert message.startswith("config key 'data.root' = 'nowhere': no such file or folder; tried ")
    assert f"'{tmp_path / 'nowhere'}'" in message and f"'{tmp_path / 'sub' / 'nowhere'}'" in message
    assert f"'{ROOT / 'nowhere'}'" in message  # the dcsnas checkout these tests run from


def test_train_command_refuses_a_relative_path_found_nowhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.yaml").write_text("data: {root: no-data-here}\n")
    assert main(["train", "--config", "train.yaml", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "config key 'data.root' = 'no-data-here': no such file or folder; tried" in err
    assert "Traceback" not in err
