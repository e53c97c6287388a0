"""Property-based fuzz (Hypothesis) of every schema a user's file goes through: the train and search configs
(every key), tune configs, arch.json, search spaces and a run's metrics.json as ``dcsnas compare`` reads it.

The property: one key of a valid input set to a hostile value (wrong type, NaN, ±inf, 0, negative, huge, a
string, a list, a mapping, null) or removed is either refused with one :class:`ConfigError` line that names
the key, or accepted with every float finite and every number inside its field's declared bounds. Any
other exception fails. Through the CLI, a refused config value exits 2 with one line and no traceback.
Bounded: a few dozen examples per schema, derandomized (the same examples every run), a few seconds in all.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
import tempfile
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_arch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcsnas.cli import main
from dcsnas.compare.runs import _read_metrics
from dcsnas.config import DEFAULT_BOUNDS, from_dict, load_config
from dcsnas.engine.config import TrainConfig
from dcsnas.errors import ConfigError
from dcsnas.models.arch import parse_arch
from dcsnas.nas.config import SearchConfig
from dcsnas.nas.space import parse_space
from dcsnas.nni.config import TuneConfig, check_trial_keys

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "cpu" / "tiny_test.yaml"
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
REMOVE = object()  # a mutation that deletes the key

HOSTILE = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 0.0, -0.5, 1e30, 10**20, -(10**20), 2**63, float("nan"),
                     float("inf"), -float("inf"), "", "abc", "1e3", "nan", [], [1, 2, 3, 4], {}, {"a": 1}, REMOVE]),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.one_of(st.integers(-5, 5), st.floats(allow_nan=True)), max_size=4),
)


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """The dotted keys of the schema ``cls`` that hold a value (nested sections walked, ``Any`` not)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        out += leaf_keys(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else [prefix + f.name]
    return out


def numbers_in_bounds(obj: Any) -> None:
    """Every float of a loaded schema object is finite and every number lies in its field's bounds."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            numbers_in_bounds(value)
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for item in value:
                numbers_in_bounds(item)
            continue
        bounds = f.metadata.get("bounds", DEFAULT_BOUNDS)
        for x in items:
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                assert math.isfinite(x), (f.name, x)
                assert bounds.admits(x), (f.name, x, bounds)


def leaf_paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths (tuples of keys and list indices) of the leaves and of the list/mapping nodes of ``data``."""
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += leaf_paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += leaf_paths(v, (*prefix, i))
    return out


def mutate(data: Any, path: tuple, value: Any) -> Any:
    data = copy.deepcopy(data)
    node = data
    for part in path[:-1]:
        node = node[part]
    if value is REMOVE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


def nested(key: str, value: Any) -> dict:
    out: dict = {}
    node = out
    *sections, name = key.split(".")
    for part in sections:
        node = node.setdefault(part, {})
    if value is not REMOVE:
        node[name] = value
    return out


def refused_in_one_line(exc: ConfigError, *names: Any) -> None:
    text = str(exc)
    assert "\n" not in text and text.strip(), text
    wanted = [str(n).replace("_", "-") if str(n) == "rank_1" else str(n) for n in names if not isinstance(n, int)]
    assert any(n in text for n in wanted), (names, text)


# ------------------------------------------------------------------------------------------ run configs
def refused_or_in_bounds(schema, key: str, value) -> None:
    """``key = value`` is either refused in one line naming the key, or gives a config within its bounds."""
    try:
        cfg = from_dict(schema, nested(key, value))
    except ConfigError as exc:
        refused_in_one_line(exc, key.split(".")[-1], key)
        return
    numbers_in_bounds(cfg)


@pytest.mark.parametrize("schema", [TrainConfig, SearchConfig], ids=["train", "search"])
def test_every_config_key_is_validated(schema):
    keys = leaf_keys(schema)
    assert len(keys) > 60

    @FUZZ
    @given(key=st.sampled_from(keys), value=HOSTILE)
    def check(key, value):
        refused_or_in_bounds(schema, key, value)

    check()


FIXED_HOSTILE = [None, True, 0, -1, -0.5, 1e30, 10**20, float("nan"), float("inf"), -float("inf"), "abc", "",
                 [], [float("nan")] * 3, {"a": 1}, REMOVE]


@pytest.mark.parametrize("schema", [TrainConfig, SearchConfig], ids=["train", "search"])
def test_every_key_with_every_fixed_hostile_value(schema):
    """The same property, exhaustively over every key and :data:`FIXED_HOSTILE` (no key left unsampled)."""
    for key in leaf_keys(schema):
        for value in FIXED_HOSTILE:
            refused_or_in_bounds(schema, key, value)


def test_nan_and_inf_are_refused_for_every_float_key():
    hints = {}
    for key in leaf_keys(SearchConfig) + leaf_keys(TrainConfig):
        node: Any = SearchConfig if key in leaf_keys(SearchConfig) else TrainConfig
        for part in key.split("."):
            tp = typing.get_type_hints(node)[part]
            node = tp
        hints[key] = tp
    floats = [k for k, tp in hints.items() if float in (tp, *typing.get_args(tp))
              or any(float in typing.get_args(a) for a in typing.get_args(tp))]
    assert {"optim.lr", "loss.triplet_margin", "search.cost.a", "data.transforms.std"} <= set(floats)
    for key in floats:
        schema = SearchConfig if key.startswith("search.") else TrainConfig
        for bad in (float("nan"), float("inf"), -float("inf"), "nan"):
            value = [bad] * 3 if typing.get_origin(hints[key]) in (list, tuple) else bad
            with pytest.raises(ConfigError, match="finite"):
                from_dict(schema, nested(key, value))


def test_a_refused_value_is_one_line_and_exit_2_through_the_cli(tmp_path):
    keys = leaf_keys(TrainConfig)

    @settings(max_examples=25, deadline=None, derandomize=True, database=None)
    @given(key=st.sampled_from(keys), value=HOSTILE.filter(lambda v: v is not REMOVE))
    def check(key, value):
        override = f"{key}={yaml.safe_dump(value, default_flow_style=True).removesuffix(chr(10) + '...' + chr(10))}"
        override = override.strip()
        try:
            load_config(TrainConfig, TINY, [override, f"data.root={tmp_path}"])
            return  # accepted: it would start a training
        except ConfigError:
            pass
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["train", "--config", str(TINY), "--set", override, "--set", f"data.root={tmp_path}",
                         "--out", str(tmp_path / "never"), "--no-progress"])
        lines = err.getvalue().strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("dcsnas: error:"), (override, lines)
        assert not (tmp_path / "never").exists()

    check()


# ------------------------------------------------------------------------------------------ files
def _fuzz_file(base: dict, load, fixed: tuple = ()):
    paths = [p for p in leaf_paths(base) if p[:1] not in fixed]

    @FUZZ
    @given(path=st.sampled_from(paths), value=HOSTILE)
    def check(path, value):
        try:
            loaded = load(mutate(base, path, value))
        except ConfigError as exc:
            refused_in_one_line(exc, *path)
            return
        numbers_in_bounds(loaded)

    check()


def test_arch_json_fuzz():
    _fuzz_file(tiny_arch({"name": "sa", "options": {"qk_ratio": 2}}), lambda d: parse_arch(d, "arch.json"))


def test_search_space_fuzz():
    space = yaml.safe_load((ROOT / "search_spaces" / "tiny.yaml").read_text())
    _fuzz_file(space, lambda d: parse_space(d, "tiny.yaml"))


def test_tune_config_fuzz():
    base = {"config": "experiments/cpu/tiny_test.yaml", "max_trials": 2, "concurrency": 1, "port": 8080,
            "set": ["optim.epochs=1"], "search_space": {
                "optim.lr": {"_type": "loguniform", "_value": [1e-4, 1e-2]},
                "loss.triplet_margin": {"_type": "choice", "_value": [0.1, 0.3]},
                "data.p": {"_type": "randint", "_value": [2, 8]}}}

    def load(data):
        cfg = from_dict(TuneConfig, data)
        check_trial_keys(cfg, TrainConfig)
        return cfg

    _fuzz_file(base, load)


def test_metrics_json_as_read_by_compare_fuzz():
    base = {"dataset": "synthetic", "protocol": "market", "epochs": 2, "num_classes": 12, "train_time_s": 3.5,
            "test": {"mAP": 0.4, "mINP": 0.2, "rank-1": 0.5, "cmc": [0.5, 0.7, 0.9]}, "extra": "kept"}
    folder = Path(tempfile.mkdtemp(prefix="fuzz-metrics-"))

    def load(data):
        (folder / "metrics.json").write_text(json.dumps(data))
        return _read_metrics(folder)

    assert load(base) == base
    _fuzz_file(base, load, fixed=("extra",))
