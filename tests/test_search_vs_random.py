"""Random architectures at a FLOPs budget, rank statistics (dcsnas.nas.sampling) and the search-vs-random
benchmark (experiments/bench/search_vs_random.py)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import DigitSpace, digit_costs, load_bench

from dcsnas.errors import ConfigError
from dcsnas.models.skeleton import SKELETONS
from dcsnas.nas.arch import derive_arch
from dcsnas.nas.cost import CostModel, CostTerm
from dcsnas.nas.sampling import kendall_tau, random_indices, rank_among, sample_in_band
from dcsnas.nas.space import Choice, load_space

REPOSITORY = Path(__file__).resolve().parents[1]


class ToySpace:
    """Two choices: x with FLOPs 10, 20, 30, 40 and y with 0 or 5, so an architecture costs x + y."""

    name = "toy"

    def choices(self) -> list[Choice]:
        return [Choice("x", (0, 1, 2, 3)), Choice("y", (0, 1)), Choice("fixed", (0,))]


def toy_costs() -> CostModel:
    terms = [CostTerm("x", ("x",), torch.tensor([10.0, 20, 30, 40], dtype=torch.float64), torch.zeros(4)),
             CostTerm("y", ("y",), torch.tensor([0.0, 5], dtype=torch.float64), torch.zeros(2))]
    return CostModel(terms, ToySpace().choices(), (64, 32))


def test_samples_lie_in_the_band_are_distinct_and_avoid_the_excluded_one():
    # target 20 ± 30 %: FLOPs in [14, 26] are 15 (x0 y1), 20 (x1 y0) and 25 (x1 y1)
    excluded = {"x": 1, "y": 0, "fixed": 0}
    found = sample_in_band(ToySpace(), toy_costs(), 20, 2, random.Random(0), band=0.3, exclude=[excluded])
    pairs = sorted((a["x"], a["y"]) for a in found)
    assert pairs == [(0, 1), (1, 1)]


def test_samples_are_within_five_percent_of_the_target():
    found = sample_in_band(DigitSpace(), digit_costs(), 500, 30, random.Random(1))  # 51 architectures cost 475 … 525
    assert len({(a["a"], a["b"], a["c"]) for a in found}) == 30
    assert all(475 <= 100 * a["a"] + 10 * a["b"] + a["c"] <= 525 for a in found)


def test_sampling_is_uniform_over_the_architectures_in_the_band():
    # a sampler that drew choices one by one inside the band, or took the first fit, would favour some of
    # the three architectures; uniform: each 1/3 of 3000 draws (binomial std ≈ 26)
    counts = Counter()
    for seed in range(3000):
        (a,) = sample_in_band(ToySpace(), toy_costs(), 20, 1, random.Random(seed), band=0.3)
        counts[a["x"], a["y"]] += 1
    assert set(counts) == {(0, 1), (1, 0), (1, 1)}
    assert all(abs(n - 1000) < 120 for n in counts.values()), counts


def test_random_indices_cover_every_option():
    seen = {c.key: set() for c in ToySpace().choices()}
    rng = random.Random(0)
    for _ in range(200):
        for key, index in random_indices(ToySpace(), rng).items():
            seen[key].add(index)
    assert seen == {"x": {0, 1, 2, 3}, "y": {0, 1}, "fixed": {0}}


def test_too_few_architectures_in_the_band_is_a_config_error():
    with pytest.raises(ConfigError, match=r"only 3 of 4 architectures .* ±30%"):
        sample_in_band(ToySpace(), toy_costs(), 20, 4, random.Random(0), band=0.3, max_draws=2000)
    with pytest.raises(ConfigError, match="band"):
        sample_in_band(ToySpace(), toy_costs(), 20, 1, random.Random(0), band=0.0)


def test_skeleton_indices_invert_derive_arch():
    space = load_space(REPOSITORY / "experiments/demo/space_mbv2_64x32.yaml")
    costs = CostModel([], space.choices(), (64, 32))  # FLOPs do not matter here
    rng = random.Random(3)
    for _ in range(5):
        indices = random_indices(space, rng)
        assert SKELETONS["mobilenetv2"].indices(space, derive_arch(space, indices, costs, {}), "arch") == indices


def test_skeleton_indices_name_a_choice_outside_the_space():
    space = load_space(REPOSITORY / "experiments/demo/space_mbv2_64x32.yaml")
    arch = derive_arch(space, {c.key: 0 for c in space.choices()}, CostModel([], space.choices(), (64, 32)), {})
    arch.stages[1].width = 20
    with pytest.raises(ConfigError, match=r"arch 'arch\.json': s2/width = 20 is not an option of the space"):
        SKELETONS["mobilenetv2"].indices(space, arch, "arch.json")


def test_kendall_tau_of_a_hand_example():
    # pairs of (1,2,3,4) against (1,3,2,4): 5 concordant, 1 discordant (2-3): τ = (5 − 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])["tau"] == pytest.approx(2 / 3)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1])["tau"] == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [5, 5, 5])["tau"] is None
    assert kendall_tau([1.0], [2.0]) == {"tau": None, "p": None, "n": 1}


def test_rank_among():
    assert rank_among(5.0, [1.0, 7.0, 5.0, 9.0]) == 3  # two above it; the tie does not count
    assert rank_among(10.0, [1.0, 2.0]) == 1


def archs_target(tmp_path) -> float:
    return json.loads((tmp_path / "bench/archs/seed0.json").read_text())["target_flops"]


def _bench_module():
    return load_bench("search_vs_random")


@pytest.mark.slow
def test_quick_benchmark_runs_end_to_end_and_resumes(tmp_path, tiny_data, capsys):
    bench = _bench_module()
    argv = ["--quick", "--out", str(tmp_path / "bench"), "--data", str(tiny_data), "--seeds", "1", "--random", "2",
            "--naswot", "4", "--nni-evolution", "4", "--band", "0.6"]  # the quick search ends among the cheapest
    result = bench.main(argv)
    assert [j["status"] for j in result["jobs"]] == ["done"] * len(result["jobs"])
    names = {j["name"] for j in result["jobs"]}
    assert names == {"search-s0", "searched-s0", "supernet-s0.json", "random-s0-0", "random-s0-1", "naswot-s0",
                     "nni-evolution-s0", "evolution-s0", "baseline-s0"}
    evolution = json.loads((tmp_path / "bench/nni-evolution-s0/metrics.json").read_text())
    assert len(evolution["trials"]) == 4 and evolution["strategy"] == "nni:evolution"
    picked = json.loads((tmp_path / "bench/archs/naswot-s0.scores.json").read_text())
    assert len(picked["scores"]) == 4 and picked["scores"][picked["pick"]] == max(picked["scores"])
    assert json.loads((tmp_path / "bench/archs/naswot-s0.json").read_text())["search"]["naswot"]["score"] == \
        max(picked["scores"])
    seed0 = result["seeds"][0]
    assert seed0["naswot"] is not None and result["groups"]["naswot"]["n"] == 1
    assert abs(seed0["evolution"]["mflops"] * 1e6 / archs_target(tmp_path) - 1) <= 0.6
    for group, other in (("naswot", seed0["naswot"]["mAP"]), ("evolution", seed0["evolution"]["mAP"]),
                         ("baseline", seed0["baseline"]["mAP"]),
                         ("random", sum(e["mAP"] for e in seed0["random"]) / 2)):
        assert result["paired"][group]["differences"] == pytest.approx([seed0["searched"]["mAP"] - other])
    seed = result["seeds"][0]
    archs = json.loads((tmp_path / "bench/archs/seed0.json").read_text())
    for flops in archs["random_flops"]:
        assert abs(flops / archs["target_flops"] - 1) <= 0.6
    for entry in seed["random"]:
        assert abs(entry["mflops"] * 1e6 / archs["target_flops"] - 1) <= 0.6
    assert 1 <= seed["rank"] <= 3 and len(seed["supernet"]["random"]) == 2
    assert (tmp_path / "bench/table.md").read_text().count("\n| ") >= 5
    json.loads(capsys.readouterr().out)  # the printed JSON
    again = bench.main(argv)  # everything is there: nothing runs again, same figures
    assert again["groups"] == result["groups"]
    assert all(j["seconds"] == 0 for j in again["jobs"])


def test_a_run_of_another_config_is_refused(tmp_path):
    bench = _bench_module()
    configs = {"search": bench.QUICK["search"], "retrain": bench.QUICK["retrain"], "baseline": bench.QUICK["baseline"]}
    b = bench.Bench(tmp_path, tmp_path / "data", configs, [0], 1, 0.05, 1, 1)
    cmd = b.command("train", "baseline-s0", 0)
    assert cmd[:3] == ["-m", "dcsnas.cli", "train"] and "--resume" not in cmd
    from dcsnas.engine.rundir import create_run_dir

    cfg, _ = b.load_config("train", 1, None)  # seed 1 in the folder of seed 0
    run = create_run_dir(tmp_path / "baseline-s0", "train", cfg)
    (run.metrics).write_text("{}")
    with pytest.raises(ConfigError, match="differs in seed"):
        b.command("train", "baseline-s0", 0)
