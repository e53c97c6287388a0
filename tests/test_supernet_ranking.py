"""The supernet-ranking benchmark (experiments/bench/supernet_ranking.py): its FLOPs-stratified draw, the noise
ceiling of Kendall's τ, the ground-truth table's checks, resumption from the table, and the --quick pipeline."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
from conftest import DigitSpace, digit_costs, load_bench

from dcsnas.errors import ConfigError
from dcsnas.nas.cost import CostModel, measure_costs
from dcsnas.nas.sampling import random_indices
from dcsnas.nas.space import Choice, load_space

REPOSITORY = Path(__file__).resolve().parents[1]


def _bench_module():
    return load_bench("supernet_ranking")


def test_stratified_draw_is_distinct_and_takes_one_architecture_per_flops_stratum():
    bench = _bench_module()
    drawn = bench.stratified_draw(DigitSpace(), digit_costs(), 10, random.Random(0), draws=5000)
    assert len({(a["a"], a["b"], a["c"]) for a in drawn}) == 10
    flops = sorted(100 * a["a"] + 10 * a["b"] + a["c"] for a in drawn)
    # 10 equal-count strata of the ~1000 architectures costing 0 … 999: one in each hundred
    assert [f // 100 for f in flops] == list(range(10)), flops
    assert [100 * a["a"] + 10 * a["b"] + a["c"] for a in drawn] != flops  # shuffled, not in FLOPs order
    again = bench.stratified_draw(DigitSpace(), digit_costs(), 10, random.Random(0), draws=5000)
    assert again == drawn  # seeded
    with pytest.raises(ConfigError, match="only 1 distinct architectures"):
        bench.stratified_draw(type("One", (), {"name": "one", "choices": lambda self: [Choice("x", (0,))]})(),
                              CostModel([], [Choice("x", (0,))], (64, 32)), 2, random.Random(0), draws=50)


def test_stratified_draw_of_a_real_space_spans_its_flops_range():
    bench = _bench_module()
    space = load_space(REPOSITORY / "search_spaces/tiny.yaml")
    costs = measure_costs(space, (64, 32))
    drawn = bench.stratified_draw(space, costs, 8, random.Random(1))
    assert len({tuple(sorted(a.items())) for a in drawn}) == 8
    rng = random.Random(2)
    uniform = sorted(costs.exact(random_indices(space, rng), "flops") for _ in range(2000))
    flops = [costs.exact(a, "flops") for a in drawn]
    assert min(flops) <= uniform[len(uniform) // 8] and max(flops) >= uniform[-len(uniform) // 8]


def test_noise_ceiling_and_seed_spread_by_hand():
    bench = _bench_module()
    assert bench.noise_ceiling(1.0, 1.0, 1) == pytest.approx(2 / math.pi * math.asin(1 / math.sqrt(2)))
    assert bench.noise_ceiling(1.0, 1.0, 1) == pytest.approx(0.5)
    assert bench.noise_ceiling(1.0, 1.0, 3) == pytest.approx(2 / 3)  # asin(√3/2) = π/3
    assert bench.noise_ceiling(2.0, 0.0, 2) == pytest.approx(1.0)
    assert bench.noise_ceiling(0.0, 0.0, 2) is None
    # means 2 and 6; within: four deviations of 1 over 2·(2 − 1) degrees of freedom: σ² = 2;
    # variance of the means 8, minus σ²/k = 1: s² = 7
    spread = bench.seed_spread([[1.0, 3.0], [5.0, 7.0]])
    assert spread["sigma"] == pytest.approx(math.sqrt(2)) and spread["s"] == pytest.approx(math.sqrt(7))
    assert spread["ceiling"] == pytest.approx(2 / math.pi * math.asin(math.sqrt(7 / 8)))
    floored = bench.seed_spread([[0.0, 10.0], [4.0, 6.0]])  # means equal: no true spread, s floored at 0
    assert floored["s"] == 0.0 and floored["ceiling"] == 0.0
    assert bench.seed_spread([[1.0], [2.0]])["sigma"] is None  # one seed: no noise estimate
    with pytest.raises(ValueError, match="different numbers of seeds"):
        bench.seed_spread([[1.0, 2.0], [3.0]])


def test_rank_group_of_a_hand_example():
    bench = _bench_module()
    g = bench.rank_group([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1], 0.5)
    assert g["tau"] == pytest.approx(-1) and g["rho"] == pytest.approx(-1) and g["top5"] == 4 and g["n"] == 6
    assert g["tau_over_ceiling"] == pytest.approx(-2)
    assert g["tau_null_sd"] == pytest.approx(math.sqrt(2 * 17 / (9 * 6 * 5)))
    assert bench.rank_group([1.0], [2.0], None)["tau"] is None


def _table(bench, space: str = "tiny") -> dict:
    return {"format": bench.TABLE_FORMAT, "version": bench.VERSION, "space": {"name": space, "hash": "h"},
            "archs": []}


def test_the_table_reader_refuses_another_space_and_malformed_json(tmp_path):
    bench = _bench_module()
    path = tmp_path / "table.json"
    assert bench.read_table(path, {"space": {"name": "tiny", "hash": "h"}}) is None
    path.write_text(json.dumps(_table(bench, "other")))
    with pytest.raises(ConfigError) as info:
        bench.read_table(path, {"space": {"name": "tiny", "hash": "h"}})
    assert str(path) in str(info.value) and "space" in str(info.value) and "\n" not in str(info.value)
    assert bench.read_table(path, {"space": {"name": "other", "hash": "h"}})["archs"] == []
    path.write_text('{"format": ')
    with pytest.raises(ConfigError, match=f"'{path}' is not valid JSON"):
        bench.read_table(path, {})
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="is not a JSON object"):
        bench.read_table(path, {})
    path.write_text(json.dumps({**_table(bench), "version": 99}))
    with pytest.raises(ConfigError, match="version 1"):
        bench.read_table(path, {})


def _quick_bench(bench, tmp_path: Path, **kwargs):
    q = bench.QUICK
    return bench.RankingBench(tmp_path / "out", tmp_path / "data", {"search": q["search"], "retrain": q["retrain"]},
                              [], 0, 0.0, 1, 1, space_path=q["space"], preset="tiny",
                              table_path=tmp_path / "table.json", archs=3, seeds_per_arch=2,
                              modes=["gumbel:separate"], **kwargs)


def test_the_planner_schedules_only_what_the_table_lacks(tmp_path):
    bench = _bench_module()
    first = _quick_bench(bench, tmp_path)
    assert json.loads((tmp_path / "table.json").read_text())["archs"] == first.table["archs"]  # the draw is saved
    names = [j.name for j in first.plan()]
    runs = [f"arch{a:02d}-s{s}" for a in range(3) for s in range(2)]
    assert names == [*runs, "search-gumbel-separate", "scores-gumbel-separate.json"]
    first.table["archs"][0]["seeds"]["0"] = {"mAP": 0.5, "rank-1": 0.6, "mINP": 0.2, "health": {},
                                             "train_time_s": 1.0}
    first.save_table()
    scores = {"format": bench.SCORES_FORMAT, "version": bench.VERSION, "space": first.header["space"],
              "modes": {"gumbel:separate": {**first.scores["modes"]["gumbel:separate"],
                                            "scores": {str(i): {"mAP": 0.1} for i in range(3)}}}}
    (tmp_path / "table.supernets.json").write_text(json.dumps(scores))
    resumed = _quick_bench(bench, tmp_path)  # no run directory: the table says what is done
    assert resumed.table["archs"] == first.table["archs"]
    assert [j.name for j in resumed.plan()] == runs[1:]
    more_seeds = _quick_bench(bench, tmp_path)
    more_seeds.seeds_per_arch = 3
    assert [j.name for j in more_seeds.plan()] == [f"arch{a:02d}-s{s}" for a in range(3) for s in range(3)][1:]
    with pytest.raises(ConfigError, match=r"table\.json' was written for draw"):
        bench.RankingBench(tmp_path / "out", tmp_path / "data", resumed.configs, [], 0, 0.0, 1, 1,
                           space_path=resumed.space_path, preset="tiny", table_path=tmp_path / "table.json",
                           archs=4, seeds_per_arch=2, modes=["gumbel:separate"])


@pytest.mark.slow
def test_quick_benchmark_runs_end_to_end_and_resumes_from_the_table(tmp_path, tiny_data, capsys):
    bench = _bench_module()
    md = tmp_path / "table.md"
    argv = ["--quick", "--out", str(tmp_path / "bench"), "--data", str(tiny_data), "--markdown", str(md), "--jobs", "1"]
    nothing = bench.main([*argv, "--report"])  # trains nothing: no architecture is complete yet
    assert nothing["jobs"] == [] and nothing["complete_archs"] == 0 and nothing["retrained_runs"] == 0
    assert not list((tmp_path / "bench").glob("arch*-s*"))
    capsys.readouterr()
    result = bench.main(argv)
    assert [j["status"] for j in result["jobs"]] == ["done"] * 10
    assert result["complete_archs"] == 4 and result["retrained_runs"] == 8
    assert [g["group"] for g in result["groups"]] == ["FLOPs", "params", "NASWOT", "synflow",
                                                      "supernet sandwich:nested"]
    assert all(g["n"] == 4 and g["tau"] is not None for g in result["groups"])
    table = json.loads((tmp_path / "bench/tiny.json").read_text())
    for arch in table["archs"]:
        assert sorted(arch["seeds"]) == ["0", "1"]
        assert {"mAP", "rank-1", "mINP", "health", "train_time_s"} <= set(arch["seeds"]["0"])
    assert md.read_text().count("\n| ") == 6
    json.loads(capsys.readouterr().out)
    for run in (tmp_path / "bench").glob("arch*"):  # the table is the source of truth, not the run directories
        if run.is_dir():
            shutil.rmtree(run)
    again = bench.main(argv)
    assert again["jobs"] == [] and again["groups"] == result["groups"]
    assert bench.main([*argv, "--report"])["groups"] == result["groups"]
