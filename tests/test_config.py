from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from dcsnas.config import config_hash, from_dict, load_config, parse_override, save_config, to_dict
from dcsnas.errors import ConfigError


@dataclass
class Optim:
    name: Literal["adam", "sgd"] = "adam"
    lr: float = 3.5e-4
    milestones: list[int] = field(default_factory=lambda: [40, 70])


@dataclass
class Schema:
    seed: int = 0
    amp: bool = True
    note: Optional[str] = None
    optim: Optim = field(default_factory=Optim)


def test_defaults_and_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\noptim:\n  lr: 0.01\n")
    cfg = load_config(Schema, path, ["optim.name=sgd", "optim.milestones=[1, 2]", "note=hello", "amp=false"])
    assert cfg == Schema(seed=3, amp=False, note="hello", optim=Optim("sgd", 0.01, [1, 2]))


def test_exponent_without_dot_is_a_float():
    assert load_config(Schema, None, ["optim.lr=1e-3"]).optim.lr == 1e-3


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert from_dict(Schema, {"optim": {"lr": 1}}).optim.lr == 1.0
    assert isinstance(from_dict(Schema, {"optim": {"lr": 1}}).optim.lr, float)
    with pytest.raises(ConfigError, match=r"config key 'seed': expected int, got 1.5"):
        from_dict(Schema, {"seed": 1.5})


@pytest.mark.parametrize("data, message", [
    ({"optim": {"lrr": 1}}, r"unknown config key 'optim.lrr'; allowed keys under optim: lr, milestones, name"),
    ({"sead": 1}, r"unknown config key 'sead'"),
    ({"amp": "yes"}, r"config key 'amp': expected bool, got 'yes'"),
    ({"optim": {"name": "rmsprop"}}, r"config key 'optim.name': expected one of 'adam', 'sgd'"),
    ({"optim": {"milestones": [1, "x"]}}, r"config key 'optim.milestones\[1\]': expected int"),
    ({"optim": 3}, r"config key 'optim': expected a mapping \(Optim\)"),
])
def test_errors_name_the_key_and_expected_type(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Schema, data)


def test_override_syntax_errors_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("seed")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Schema, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(Schema, bad)


def test_saved_config_round_trips_and_hash_is_stable(tmp_path):
    cfg = Schema(seed=5, optim=Optim(lr=0.1))
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(Schema, tmp_path / "config.yaml")
    assert again == cfg and to_dict(again) == to_dict(cfg)
    assert config_hash(again) == config_hash(cfg) != config_hash(Schema())


def test_base_includes_merge_sections(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 1\noptim:\n  lr: 0.5\n  name: sgd\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim:\n  lr: 0.1\n")
    assert load_config(Schema, tmp_path / "child.yaml") == Schema(seed=1, optim=Optim("sgd", 0.1))
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="form a cycle"):
        load_config(Schema, tmp_path / "loop.yaml")
