from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from dcsnas.config import config_hash, from_dict, load_config, load_yaml, parse_override, ranged, save_config, to_dict
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


# ------------------------------------------------------------------------------------------ ranges
@dataclass
class Ranged:
    rate: float = ranged(0.5, gt=0, le=1)
    sizes: list[int] = ranged(default_factory=lambda: [1, 2, 3], ge=1, le=10, length=(3, 3))
    count: int = 4  # no bounds declared: the default ones (>= 0)
    scale: Optional[float] = None


@pytest.mark.parametrize("data, message", [
    ({"rate": 0}, "'rate' = 0.0: expected a number in (0, 1]"),
    ({"rate": 1.5}, "'rate' = 1.5: expected a number in (0, 1]"),
    ({"rate": ".nan"}, "'rate': expected float, got '.nan'"),
    ({"rate": float("nan")}, "'rate' = nan: expected a finite number"),
    ({"rate": "inf"}, "'rate' = 'inf': expected a finite number"),
    ({"rate": 10**400}, "expected a finite number"),
    ({"scale": float("-inf")}, "'scale' = -inf: expected a finite number"),
    ({"sizes": [1, 2]}, "'sizes' = [1, 2]: expected 3 values"),
    ({"sizes": [1, 0, 2]}, "'sizes[1]' = 0: expected an int in [1, 10]"),
    ({"count": -1}, "'count' = -1: expected an int in [0, 1000000000]"),
    ({"count": 10**10}, "'count' = 10000000000: expected an int in [0, 1000000000]"),
])
def test_numbers_are_checked_against_the_schemas_bounds(data, message):
    with pytest.raises(ConfigError) as info:
        from_dict(Ranged, data)
    assert message in str(info.value)
    assert from_dict(Ranged, {"rate": 1, "sizes": [10, 1, 5], "count": 0, "scale": 3.0}).scale == 3.0


def test_yaml_refuses_duplicate_keys_and_alias_bombs_but_keeps_merge_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\noptim:\n  lr: 0.1\nseed: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'seed' at lines 1 and 4"):
        load_config(Schema, path)
    path.write_text("defaults: &d {lr: 0.1, name: sgd}\n")
    assert load_yaml("a: &d {lr: 0.1, name: sgd}\nb:\n  <<: *d\n  lr: 0.2\n", "x") == {
        "a": {"lr": 0.1, "name": "sgd"}, "b": {"lr": 0.2, "name": "sgd"}}
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 8)}]\n" for i in range(8))
    with pytest.raises(ConfigError, match="more than 100000 values once its aliases are expanded"):
        load_yaml(bomb, "bomb.yaml")
    many = "a: &a 1\nb: [" + ", ".join(["*a"] * 300) + "]\n"
    with pytest.raises(ConfigError, match="more than 256 aliases"):
        load_yaml(many, "many.yaml")
    with pytest.raises(ConfigError, match="nested too deeply|nested more than"):
        load_yaml("a: " + "[" * 5000 + "]" * 5000, "deep.yaml")
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        load_yaml("a: !!python/object/apply:os.system ['true']", "tag.yaml")
    (tmp_path / "b.yaml").write_text("base: 3\n")
    with pytest.raises(ConfigError, match="'base' must be a file name or a list of them, got 3"):
        load_config(Schema, tmp_path / "b.yaml")


def test_cross_key_rules_and_stage_names():
    from dcsnas.engine.config import TrainConfig
    from dcsnas.models.arch import check_stage_name
    from dcsnas.nas.config import SearchConfig

    with pytest.raises(ConfigError, match="search.warmup_epochs = 3 is not below optim.epochs = 3"):
        load_config(SearchConfig, None, ["optim.epochs=3", "search.warmup_epochs=3"])
    assert load_config(SearchConfig, None, ["optim.epochs=3", "search.warmup_epochs=2"]).search.warmup_epochs == 2
    with pytest.raises(ConfigError, match="needs model.head: pcb"):
        load_config(TrainConfig, None, ["optim.epochs=3", "schedule.rpp_start_epoch=1"])
    # a search's head is its top-level key: RPP on a BNNeck head would train nothing (every other lr set to 0)
    with pytest.raises(ConfigError, match="schedule.rpp_start_epoch = 1 needs head: pcb .*got head = 'bnneck'"):
        load_config(SearchConfig, None, ["optim.epochs=3", "search.warmup_epochs=1", "schedule.rpp_start_epoch=1"])
    with pytest.raises(ConfigError, match="schedule.rpp_start_epoch = 3 is not before optim.epochs = 3"):
        load_config(SearchConfig, None, ["optim.epochs=3", "search.warmup_epochs=1", "head=pcb",
                                         "schedule.rpp_start_epoch=3"])
    assert load_config(SearchConfig, None, ["optim.epochs=3", "search.warmup_epochs=1", "head=pcb",
                                            "schedule.rpp_start_epoch=1"]).schedule.rpp_start_epoch == 1
    for name in ("training", "forward", "keys", "_modules", "stem", "2x", "é"):
        with pytest.raises(ValueError, match="stage name"):
            check_stage_name(name)
    check_stage_name("layer1")


@pytest.mark.parametrize("spec, message", [
    ({"_type": "choice", "_value": []}, "a non-empty list"),
    ({"_type": "uniform", "_value": "abc"}, "expected 2 finite numbers"),
    ({"_type": "uniform", "_value": [0.2, 0.1]}, "low < high"),
    ({"_type": "loguniform", "_value": [0, 0.1]}, "low > 0"),
    ({"_type": "quniform", "_value": [0, 1, 0]}, "q (the third value) must be > 0"),
    ({"_type": "normal", "_value": [0, -1]}, "sigma"),
    ({"_type": "uniform", "_value": [float("nan"), 1]}, "finite"),
])
def test_tune_search_space_values_are_checked(spec, message):
    from dcsnas.nni.config import TuneConfig

    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(TuneConfig, {"config": "c.yaml", "search_space": {"optim.lr": spec}})


def test_tune_values_must_be_valid_values_of_their_key():
    from dcsnas.engine.config import TrainConfig
    from dcsnas.nni.config import TuneConfig, check_trial_keys

    cfg = from_dict(TuneConfig, {"config": "c.yaml", "search_space": {
        "optim.lr": {"_type": "choice", "_value": [0.1, -1]}}})
    with pytest.raises(ConfigError, match=r"could draw -1: config key 'optim.lr' = -1.0"):
        check_trial_keys(cfg, TrainConfig)
    cfg = from_dict(TuneConfig, {"config": "c.yaml", "search_space": {
        "data.transforms.flip_p": {"_type": "uniform", "_value": [0.5, 2.0]}}})
    with pytest.raises(ConfigError, match="could draw 2.0"):
        check_trial_keys(cfg, TrainConfig)
