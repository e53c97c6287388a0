"""The latency cost (times in ms): the expected latency and its gradient in α against hand-computed sums over a
hand-written table, the table file's checks (another space, malformed JSON), the search measuring or copying a
table, ``dcsnas bench latency-table``, and config hashes that keys added at their default leave alone."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dcsnas.cli import main
from dcsnas.config import added_key, config_hash, from_dict, load_config
from dcsnas.engine.rundir import create_run_dir, open_run_dir
from dcsnas.errors import ConfigError
from dcsnas.models.arch import load_arch
from dcsnas.models.skeleton import SKELETONS
from dcsnas.nas import latency as latency_module
from dcsnas.nas.config import SearchConfig
from dcsnas.nas.cost import CostConfig, CostLoss, measure_costs
from dcsnas.nas.distribution import ArchDistribution
from dcsnas.nas.latency import check_document, match_space, read_table, space_entries
from dcsnas.nas.search import Searcher
from dcsnas.nas.space import load_space, parse_space

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ROOT / "experiments" / "cpu" / "search_tiny.yaml"
TINY_SPACE = ROOT / "search_spaces" / "tiny.yaml"

# one stage of one block: two ops × two output widths; the attention slot holds only 'none'
HAND_SPACE = {"version": 1, "name": "hand", "skeleton": "mobilenetv2", "stem_channels": 8, "stem_stride": 2,
              "head_channels": 16,
              "stages": [{"name": "s1", "widths": [8, 12], "blocks": 1, "stride": 1, "ops": ["ir_k3_e3", "ir_k5_e3"]}]}
STEM_MS = 0.5
BLOCK_MS = {("ir_k3_e3", 8): 1.0, ("ir_k3_e3", 12): 1.5, ("ir_k5_e3", 8): 2.0, ("ir_k5_e3", 12): 3.0}
HEAD_MS = {8: 0.25, 12: 0.4}


def hand_table() -> dict:
    """The hand-written table of HAND_SPACE at 32×16 (stem stride 2: the block runs on a 16×8 map), batch 1."""
    entries = [{"part": "stem", "options": {}, "module": "stem 3→8 stride 2 on [1, 3, 32, 16]", "ms": STEM_MS}]
    for (op, width), ms in BLOCK_MS.items():
        entries.append({"part": "s1/0", "options": {"s1/0/op": op, "stem/width": "8", "s1/width": str(width)},
                        "module": f"{op} 8→{width} stride 1 on [1, 8, 16, 8]", "ms": ms})
    for width in (8, 12):
        entries.append({"part": "s1/attention", "options": {"s1/attention": "none", "s1/width": str(width)},
                        "module": "nothing", "ms": 0})
    for width, ms in HEAD_MS.items():
        entries.append({"part": "conv_head", "options": {"s1/width": str(width)},
                        "module": f"conv_head {width}→16 on [1, {width}, 16, 8]", "ms": ms})
    return {"format": "dcsnas-latency-table", "version": 1, "space": "hand", "device": "cpu", "device_name": "test",
            "torch": "2", "batch": 1, "input_size": [32, 16], "threads": 1, "unit": "ms", "entries": entries}


@pytest.fixture
def hand_space():
    return parse_space(copy.deepcopy(HAND_SPACE), "hand")


def write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def softmax(xs: list[float]) -> list[float]:
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


def test_expected_latency_and_its_gradient_are_the_hand_computed_softmax_weighted_sums(hand_space, tmp_path):
    _, tables = read_table(write(tmp_path / "t.json", hand_table()), hand_space, (32, 16), 1)
    costs = measure_costs(hand_space, (32, 16)).with_latency(tables)
    dist = ArchDistribution(hand_space.choices())
    ops, widths = [0.3, -0.2], [0.5, 0.1]
    with torch.no_grad():
        dist.alphas["s1/0/op"].copy_(torch.tensor(ops))
        dist.alphas["s1/width"].copy_(torch.tensor(widths))
    p, q = softmax(ops), softmax(widths)
    block = [[BLOCK_MS[(op, w)] for w in (8, 12)] for op in ("ir_k3_e3", "ir_k5_e3")]
    head = [HEAD_MS[8], HEAD_MS[12]]
    expected = STEM_MS + sum(p[i] * q[w] * block[i][w] for i in range(2) for w in range(2)) + sum(
        q[w] * head[w] for w in range(2))
    loss = CostLoss(from_dict(CostConfig, {"metric": "latency", "kind": "none", "estimate": "expected"}), costs)
    task = torch.tensor(2.0)
    out, latency = loss(task, dist, {})
    assert out is task and float(latency.detach()) == pytest.approx(expected, rel=1e-6)
    # the gradient of a softmax-weighted sum: dE/dα_i = p_i (E_i − Σ_j p_j E_j), E_i the cost given option i
    by_op = [sum(q[w] * block[i][w] for w in range(2)) for i in range(2)]
    by_width = [sum(p[i] * block[i][w] for i in range(2)) + head[w] for w in range(2)]
    d_ops = [p[i] * (by_op[i] - sum(p[j] * by_op[j] for j in range(2))) for i in range(2)]
    d_widths = [q[w] * (by_width[w] - sum(q[v] * by_width[v] for v in range(2))) for w in range(2)]
    grads = torch.autograd.grad(latency, [dist.alphas["s1/0/op"], dist.alphas["s1/width"]])
    assert grads[0].tolist() == pytest.approx(d_ops, rel=1e-5)
    assert grads[1].tolist() == pytest.approx(d_widths, rel=1e-5)
    assert min(abs(g) for g in d_ops + d_widths) > 0.01
    # FBNet's form in µs (unit_ms = 10⁻³): L = L_task · (0.2 · log(E / 10⁻³))^0.6
    fbnet = CostLoss(from_dict(CostConfig, {"metric": "latency", "kind": "fbnet", "estimate": "expected"}), costs)
    fbnet_loss = 2.0 * (0.2 * math.log(expected / 1e-3)) ** 0.6
    assert float(fbnet(task, dist, {})[0].detach()) == pytest.approx(fbnet_loss, rel=1e-6)
    # the argmax architecture (ir_k3_e3, width 8) costs its entries' sum
    assert costs.value(dist.argmax(), "latency") == pytest.approx(STEM_MS + 1.0 + 0.25)
    assert costs.span("latency") == pytest.approx((STEM_MS + 1.0 + 0.25, STEM_MS + 3.0 + 0.4))


def test_a_hinge_on_latency_takes_its_target_in_ms_and_checks_it_against_the_table(hand_space, tmp_path):
    _, tables = read_table(write(tmp_path / "t.json", hand_table()), hand_space, (32, 16), 1)
    costs = measure_costs(hand_space, (32, 16)).with_latency(tables)
    with pytest.raises(ConfigError, match=r"search.cost.target_ms = 9 is outside the latency of the search space "
                                          r"at 32×16: expected a value in \[1.750, 3.900\] ms"):
        CostLoss(from_dict(CostConfig, {"metric": "latency", "kind": "hinge", "target_ms": 9}), costs)
    with pytest.raises(ConfigError, match=r"search.cost.unit_ms = 2: the smallest architecture has 1.75 ms, so "
                                          r"log\(F / unit_ms\) would not be positive; use a unit_ms below 1.75"):
        CostLoss(from_dict(CostConfig, {"metric": "latency", "kind": "fbnet", "unit_ms": 2.0}), costs)
    hinge = CostLoss(from_dict(CostConfig, {"metric": "latency", "kind": "hinge", "target_ms": 2.0, "weight": 10,
                                            "tolerance": 0}), costs)
    dist = ArchDistribution(hand_space.choices())
    with torch.no_grad():  # argmax: ir_k5_e3 at width 12, 3.9 ms: 10 · (3.9 / 2 − 1) over the task loss
        dist.alphas["s1/0/op"].copy_(torch.tensor([0.0, 1.0]))
        dist.alphas["s1/width"].copy_(torch.tensor([0.0, 1.0]))
    assert float(hinge(torch.tensor(1.0), dist, {})[0].detach()) == pytest.approx(1 + 10 * (3.9 / 2 - 1), rel=1e-6)


@pytest.mark.parametrize("values, message", [
    ({"metric": "latency", "kind": "hinge"}, "kind = 'hinge' needs target_ms > 0"),
    ({"metric": "latency", "kind": "hinge", "target_mflops": 2}, "target_mflops is a target of metric = 'flops'"),
    ({"kind": "hinge", "target_ms": 2}, "target_ms is a target of metric = 'latency'"),
    ({"table": "lut.json"}, "table is the latency table of metric = 'latency'"),
    ({"metric": "latency", "unit_ms": -1.0}, "config key 'search.cost.unit_ms' = -1.0: expected a number > 0"),
    ({"metric": "time"}, "config key 'search.cost.metric': expected one of 'flops', 'latency'"),
])
def test_bad_latency_cost_keys_name_the_key(values, message):
    with pytest.raises(ConfigError, match="^[^\n]*$") as info:
        from_dict(SearchConfig, {"search": {"cost": values}})
    assert message in str(info.value)


def test_keys_added_at_their_default_leave_the_config_hash_alone():
    @dataclass
    class Before:
        a: int = 1

    @dataclass
    class After:
        a: int = 1
        b: str = added_key("x")

    assert config_hash(After()) == config_hash(Before()) != config_hash(After(b="y"))
    assert config_hash(After(a=2)) == config_hash(Before(a=2))
    plain = config_hash(SearchConfig())
    assert config_hash(from_dict(SearchConfig, {"search": {"cost": {"metric": "flops", "batch": 1}}})) == plain
    assert config_hash(from_dict(SearchConfig, {"search": {"cost": {"metric": "latency"}}})) != plain


def test_a_table_of_another_space_is_refused_naming_the_entry(hand_space, tmp_path):
    path = tmp_path / "t.json"
    doc = hand_table()
    doc["entries"] = doc["entries"][:3] + doc["entries"][4:]  # drops (ir_k5_e3, 8)
    with pytest.raises(ConfigError, match="^[^\n]*$") as info:
        read_table(write(path, doc), hand_space)
    assert str(info.value) == (f"latency table '{path}' is not a table of the space 'hand' at 32×16, batch 1: it has "
                               "no entry 's1/0[s1/0/op=ir_k5_e3, s1/width=8, stem/width=8]'")
    doc = hand_table()
    doc["entries"].append({"part": "s1/1", "options": {"s1/1/op": "skip", "s1/width": "8"}, "module": "nothing",
                           "ms": 0})
    with pytest.raises(ConfigError, match=r"it has the extra entry 's1/1\[s1/1/op=skip, s1/width=8\]'"):
        read_table(write(path, doc), hand_space)
    doc = hand_table()
    doc["entries"][1]["module"] = "ir_k3_e3 8→8 stride 2 on [1, 8, 16, 8]"
    with pytest.raises(ConfigError, match=r"entry 's1/0\[s1/0/op=ir_k3_e3, s1/width=8, stem/width=8\]' measured "
                                          r"'ir_k3_e3 8→8 stride 2 on \[1, 8, 16, 8\]', the space's module is "
                                          r"'ir_k3_e3 8→8 stride 1 on \[1, 8, 16, 8\]'"):
        read_table(write(path, doc), hand_space)
    doc = hand_table()
    doc["entries"].append(doc["entries"][1])
    with pytest.raises(ConfigError, match=r"entry 's1/0\[s1/0/op=ir_k3_e3, s1/width=8, stem/width=8\]' appears twice"):
        read_table(write(path, doc), hand_space)
    # a table that claims another input size, or is read for another batch or input size
    with pytest.raises(ConfigError, match=r"at 64×32, batch 1: entry 'stem' measured 'stem 3→8 stride 2 on "
                                          r"\[1, 3, 32, 16\]', the space's module is 'stem 3→8 stride 2 on "
                                          r"\[1, 3, 64, 32\]'"):
        read_table(write(path, {**hand_table(), "input_size": [64, 32]}), hand_space)
    with pytest.raises(ConfigError, match="was measured at batch 1, search.cost.batch is 32"):
        read_table(write(path, hand_table()), hand_space, (32, 16), 32)
    with pytest.raises(ConfigError, match="was measured at 32×16 pixels, the search runs at 64×32"):
        read_table(write(path, hand_table()), hand_space, (64, 32), 1)
    other = parse_space({**copy.deepcopy(HAND_SPACE), "stages": [{**HAND_SPACE["stages"][0],
                                                                 "ops": ["ir_k3_e3", "ir_k5_e3", "ir_k3_e6"]}]}, "b")
    with pytest.raises(ConfigError, match=r"is not a table of the space 'hand' at 32×16, batch 1: it has no entry "
                                          r"'s1/0\[s1/0/op=ir_k3_e6, s1/width=8, stem/width=8\]'"):
        read_table(write(path, hand_table()), other)


def _malformed(doc: dict, where: str, value) -> dict:
    doc = copy.deepcopy(doc)
    if where.startswith("entries."):
        doc["entries"][1][where.split(".", 1)[1]] = value
    else:
        doc[where] = value
    return doc


@pytest.mark.parametrize("where, value, message", [
    ("entries.ms", -0.5, "entries[1] (s1/0): ms = -0.5; expected a finite number of milliseconds"),
    ("entries.ms", "1.0", "entries[1] (s1/0): ms = 1.0; expected a finite number"),
    ("entries.ms", True, "entries[1] (s1/0): ms = True; expected a finite number"),
    ("entries.ms", 1e9, "entries[1] (s1/0): ms = 1000000000.0; expected a finite number of milliseconds in [0, 1e+07]"),
    ("entries.options", ["s1/0/op"], "entries[1]: part and module must be strings and options an object of strings"),
    ("entries.part", 3, "entries[1]: part and module must be strings"),
    ("batch", 0, "'batch' must be a positive int, got 0"),
    ("batch", 1.0, "'batch' must be a positive int, got 1.0"),
    ("input_size", [32], "'input_size' must be [height, width] in pixels, got [32]"),
    ("threads", None, "'threads' must be a positive int, got None"),
    ("entries", {}, "'entries' must be a non-empty list"),
    ("format", "dcsnas-arch", "format = 'dcsnas-arch', version = 1; expected 'dcsnas-latency-table', version 1"),
    ("unit", "us", "unit = 'us'; expected 'ms'"),
    ("device_name", "x" * 5000, "'device_name' must be a string (at most 1000 characters)"),
])
def test_a_malformed_table_is_refused_with_one_line(hand_space, tmp_path, where, value, message):
    path = write(tmp_path / "t.json", _malformed(hand_table(), where, value))
    with pytest.raises(ConfigError, match="^[^\n]*$") as info:
        read_table(path, hand_space)
    assert str(info.value).startswith(f"latency table '{path}': ") and message in str(info.value)


@pytest.mark.parametrize("text, message", [
    ('"ms": NaN', "is not valid JSON: NaN is not a number"),
    ('"ms": Infinity', "is not valid JSON: Infinity is not a number"),
    ('"ms": -Infinity', "is not valid JSON: -Infinity is not a number"),
    ('"ms": 1e999', "ms = inf; expected a finite number"),
    ('"ms": 1.0,', "is not valid JSON: Expecting property name enclosed in double quotes"),
])
def test_non_finite_times_and_broken_json_are_refused(hand_space, tmp_path, text, message):
    raw = json.dumps(hand_table()).replace('"ms": 1.0', text, 1)
    path = tmp_path / "t.json"
    path.write_text(raw)
    with pytest.raises(ConfigError, match="^[^\n]*$") as info:
        read_table(path, hand_space)
    assert message in str(info.value)


def test_a_huge_deep_or_missing_table_file_is_refused_before_it_is_parsed(hand_space, tmp_path, monkeypatch):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="is not valid JSON: nested too deeply"):
        read_table(tmp_path / "deep.json", hand_space)
    with pytest.raises(ConfigError, match="does not exist"):
        read_table(tmp_path / "none.json", hand_space)
    path = write(tmp_path / "t.json", hand_table())
    monkeypatch.setattr(latency_module, "MAX_TABLE_BYTES", 100)
    with pytest.raises(ConfigError, match=rf"latency table '{path}' is \d+ bytes, more than the 100 allowed"):
        read_table(path, hand_space)


def _nested(inner):
    return st.lists(inner, min_size=1, max_size=3) | st.dictionaries(st.text(max_size=8), inner, min_size=1, max_size=3)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
                           | st.text(max_size=20) | st.just([]) | st.just({}), _nested, max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(["format", "version", "space", "device", "device_name", "torch", "batch", "input_size",
                              "threads", "unit", "entries", "entries.part", "entries.options", "entries.module",
                              "entries.ms", "entries.extra"]),
       value=JSON_VALUES)
def test_fuzzed_tables_are_read_or_refused_with_a_config_error(field, value):
    space = parse_space(copy.deepcopy(HAND_SPACE), "hand")
    doc = _malformed(hand_table(), field, value)
    try:
        tables = match_space(check_document(json.loads(json.dumps(doc)), "fuzz"), space, "fuzz")
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("latency table 'fuzz'")
        return
    assert all(torch.isfinite(t).all() and (t >= 0).all() for t in tables.values())


def test_the_entries_follow_the_cost_terms(hand_space):
    costs = measure_costs(hand_space, (32, 16))
    entries = space_entries(hand_space, (32, 16))
    assert [e.id for e in entries] == [
        "stem", "s1/0[s1/0/op=ir_k3_e3, s1/width=8, stem/width=8]", "s1/0[s1/0/op=ir_k3_e3, s1/width=12, stem/width=8]",
        "s1/0[s1/0/op=ir_k5_e3, s1/width=8, stem/width=8]", "s1/0[s1/0/op=ir_k5_e3, s1/width=12, stem/width=8]",
        "s1/attention[s1/attention=none, s1/width=8]", "s1/attention[s1/attention=none, s1/width=12]",
        "conv_head[s1/width=8]", "conv_head[s1/width=12]"]
    assert sum(t.flops.numel() for t in costs.terms) == len(entries)


def test_the_table_command_writes_a_table_the_search_reads(tmp_path, capsys):
    out = tmp_path / "lut.json"
    assert main(["bench", "latency-table", "--space", str(TINY_SPACE), "--input-size", "64", "32", "--threads", "1",
                 "--warmup", "0", "--repeats", "1", "--check", "1", "--rounds", "2", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    space = load_space(TINY_SPACE)
    doc, tables = read_table(out, space, (64, 32), 1)
    assert doc["threads"] == 1 and doc["device"] == "cpu" and doc["batch"] == 1 and doc["repeats"] == 1
    assert printed["check"]["measured"]["rounds"] == 2
    assert printed["entries"] == len(doc["entries"]) == len(space_entries(space, (64, 32)))
    assert all(e["ms"] > 0 for e in doc["entries"] if e["module"] != "nothing")
    [row] = printed["check"]["architectures"]
    costs = measure_costs(space, (64, 32)).with_latency(tables)
    indices = {c.key: c.labels.index(row["choices"].get(c.key, c.labels[0])) for c in space.choices()}
    assert row["table_ms"] == pytest.approx(costs.value(indices, "latency"), abs=1e-4)
    assert row["relative_error"] == pytest.approx((row["table_ms"] - row["measured_ms"]) / row["measured_ms"],
                                                  abs=1e-3)
    assert row["parts_ms"] > 0 and row["relative_error_parts"] == pytest.approx(
        (row["parts_ms"] - row["measured_ms"]) / row["measured_ms"], abs=1e-3)
    with pytest.raises(ConfigError, match=r"is not a table of the space 'hand' at 64×32, batch 1: it has the extra "
                                          r"entry 's1/0\[s1/0/op=ir_k3_e6, s1/width=8, stem/width=8\]'"):
        read_table(out, parse_space(copy.deepcopy(HAND_SPACE), "hand"))
    assert main(["bench", "latency-table", "--space", str(TINY_SPACE), "--input-size", "64", "32",
                 "--out", str(out)]) == 2  # exists: --force
    assert f"--out '{out}' already exists; pass --force" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--input-size", "0", "32"], "--input-size must be an integer in [1, 8192], got 0"),
    (["--input-size", "64", "32", "--batch", "0"], "--batch must be an integer in [1, 4096], got 0"),
    (["--input-size", "64", "32", "--repeats", "0"], "--repeats must be an integer in [1, 100000], got 0"),
    (["--input-size", "8", "4"], "no grid H' x W' = 8 fits in the 1x1 feature map"),
])
def test_bad_table_command_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    assert main(["bench", "latency-table", "--space", str(TINY_SPACE), *args, "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.json").exists()


def test_a_latency_search_measures_its_table_or_copies_the_given_one(tiny_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "search"
    common = ["search", "--config", str(SEARCH), "--set", f"data.root={tiny_data}", "--set",
              f"search.space={TINY_SPACE}", "--set", "search.cost.metric=latency", "--set", "optim.epochs=2",
              "--no-progress"]
    monkeypatch.setattr(latency_module, "BLOCK_S", 0.0)  # one forward per timed block: fast
    assert main([*common, "--out", str(run)]) == 0
    capsys.readouterr()
    space = load_space(TINY_SPACE)
    doc, tables = read_table(run / "latency_table.json", space, (64, 32), 1)
    assert doc["device"] == "cpu" and doc["space"] == "tiny" and doc["batch"] == 1
    metrics = json.loads((run / "metrics.json").read_text())
    costs = measure_costs(space, (64, 32)).with_latency(tables)
    indices = SKELETONS["mobilenetv2"].indices(space, load_arch(run / "arch.json"), "arch.json")
    assert metrics["arch"]["latency_ms"] == pytest.approx(costs.value(indices, "latency"))
    last = metrics["history"][-1]["train"]
    assert {"arch_step/latency_ms", "arch/argmax_latency_ms", "arch/expected_latency_ms"} <= set(last)
    assert "arch_step/mflops" not in last and "ms per batch of 1 (latency table)" in (run / "log.txt").read_text()
    # given a table, the search measures nothing and keeps the table in its run directory
    monkeypatch.setattr("dcsnas.nas.search.measure_table", lambda *a, **k: pytest.fail("measured a given table"))
    again = tmp_path / "again"
    assert main([*common, "--set", f"search.cost.table={run / 'latency_table.json'}", "--out", str(again)]) == 0
    assert json.loads((again / "latency_table.json").read_text()) == doc
    assert json.loads((again / "metrics.json").read_text())["arch"]["latency_ms"] == metrics["arch"]["latency_ms"]
    # a table of another batch is refused before the run starts
    capsys.readouterr()
    assert main([*common, "--set", f"search.cost.table={run / 'latency_table.json'}", "--set", "search.cost.batch=8",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "was measured at batch 1, search.cost.batch is 8" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()



def test_a_resumed_latency_search_reads_the_table_of_its_run_directory(tiny_data, tmp_path, monkeypatch):
    cfg = load_config(SearchConfig, SEARCH, [f"data.root={tiny_data}", f"search.space={TINY_SPACE}",
                                             "search.cost.metric=latency"])
    monkeypatch.setattr(latency_module, "BLOCK_S", 0.0)
    first = Searcher(cfg, create_run_dir(tmp_path / "run", "search", cfg), show_progress=False)
    monkeypatch.setattr("dcsnas.nas.search.measure_table", lambda *a, **k: pytest.fail("measured again on resume"))
    again = Searcher(cfg, open_run_dir(tmp_path / "run"), show_progress=False)
    assert first.costs.has_latency and all(torch.equal(a.latency, b.latency)
                                           for a, b in zip(first.costs.terms, again.costs.terms))
