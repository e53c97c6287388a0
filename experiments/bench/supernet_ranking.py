"""Benchmark: does a supernet rank the architectures of a space? Kendall τ against a retrained ground truth.

The ground truth is a small tabular NAS benchmark of the space (``--space``, default the demo's op space
experiments/demo/space_mbv2_64x32.yaml): ``--archs`` architectures (default 40) drawn uniformly from the space
and stratified by FLOPs (many uniform draws split into ``--archs`` equal-count FLOPs strata, one architecture
drawn from each, seeded with ``--seed``), each retrained for ``--seeds-per-arch`` seeds (default 2) with the
search-vs-random benchmark's recipe (experiments/bench/search_vs_random/retrain.yaml, synthetic ``small``).
Its results are written once as data, to ``--table`` (default experiments/bench/ranking/<space name>.json),
after every finished retraining: test mAP, rank-1, mINP, the run's health warnings (embedding collapse, CE
at uniform) and training seconds per architecture and seed, with the space's hash, the recipe's config hash
and the commit. A later run reads the table and trains only what is missing (the run directories under
``--out`` may be gone: the table is the source of truth); a table of another space, recipe, preset or draw is
refused.

Each score is ranked against the mean retrained mAP of the architectures whose seeds are all done:
Kendall τ-b (with its p-value and its null standard deviation √(2(2n+5) / (9n(n−1)))), Spearman ρ, the overlap
of the top 5 by score and by truth, and τ as a fraction of the noise ceiling, the τ of a perfect ranker given the
measured seed noise: E[τ] = (2/π)·asin(r), r = s / √(s² + σ²/k), with σ the pooled within-architecture standard
deviation of mAP, s² the variance of the architectures' mean mAP minus σ²/k (floored at 0) and k the seeds per
architecture. The scores:

- training-free: FLOPs and parameters (the space's cost table), NASWOT and synflow (:mod:`dcsnas.nas.proxies`,
  on the network at initialisation (torch seed ``--seed``) and a fixed batch of 64 synthetic training images);
- supernets, one per ``--modes`` entry ``sampling:op_weights`` (default ``gumbel:separate sandwich:nested``):
  a search of the space with the search recipe (experiments/bench/search_vs_random/search.yaml) that trains
  the weights only (``search.warmup_epochs`` = epochs − 1: one architecture step epoch at the end, the fewest
  the project allows), then each architecture's test mAP under the supernet's shared weights after BatchNorm
  recalibration (:func:`search_vs_random.score_with_supernet`). The scores are cached in the table's sibling
  ``<table>.supernets.json`` (per mode, with the search recipe's hash) and never computed twice.

Runs are ``dcsnas retrain`` / ``search`` processes scheduled by search_vs_random.py's scheduler (``--jobs`` at a
time, ``--threads`` torch threads each; a finished run is skipped after checking its config, a stopped one
resumes, a failed one is logged under ``--out``/logs and the benchmark goes on). Prints JSON; ``--markdown FILE``
writes the table of groups.

    dcsnas data synth --preset small --out data/synthetic-small
    python experiments/bench/supernet_ranking.py --out runs/supernet-ranking --markdown runs/supernet-ranking/table.md
    python experiments/bench/supernet_ranking.py --quick    # the same pipeline on `tiny`: about a minute
    python experiments/bench/supernet_ranking.py --report   # the figures of what is done so far; trains nothing

Time: a retraining of the small recipe takes about 4 minutes on one CPU thread, so the ground truth of
40 architectures × 2 seeds is 5–6 hours of one thread (about half of that with ``--jobs 2`` on two free cores);
each supernet adds its 16-epoch search (about 10 minutes for ``gumbel``, more for ``sandwich``, which trains four
paths per step; docs/training_recipe.md) and one BatchNorm recalibration and test evaluation per architecture.
Stop it at any time: it resumes from the table. ``--quick`` (the ``tiny`` preset, search_spaces/tiny.yaml, the
demo's quick recipes experiments/demo/quick_*.yaml, 4 architectures × 2 seeds, ``sandwich:nested`` only, the
table under ``--out``; its one search epoch has architecture steps too) takes about a minute.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

REPOSITORY = Path(__file__).resolve().parents[2]


def _sibling(name: str):
    """The benchmark module ``name`` beside this file (experiments/bench is not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


svr = _sibling("search_vs_random")

TABLE_FORMAT = "dcsnas-supernet-ranking"
SCORES_FORMAT = "dcsnas-supernet-ranking-scores"
VERSION = 1
METRICS = ("mAP", "rank-1", "mINP")
FULL = {"preset": "small", "space": REPOSITORY / "experiments/demo/space_mbv2_64x32.yaml",
        "retrain": svr.RECIPES / "retrain.yaml", "search": svr.RECIPES / "search.yaml", "archs": 40, "seeds": 2,
        "modes": ["gumbel:separate", "sandwich:nested"]}
QUICK = {"preset": "tiny", "space": REPOSITORY / "search_spaces/tiny.yaml", "retrain": svr.QUICK["retrain"],
         "search": svr.QUICK["search"], "archs": 4, "seeds": 2, "modes": ["sandwich:nested"]}


# ---------------------------------------------------------------------------------------------- architectures
def _key(indices: dict[str, int]) -> tuple:
    return tuple(sorted(indices.items()))


def stratified_draw(space, costs, count: int, rng: random.Random, draws: Optional[int] = None) -> list[dict[str, int]]:
    """``count`` distinct architectures (choice indices) of ``space``, one from each of ``count`` equal-count
    FLOPs strata of ``draws`` uniform draws (default 200 per architecture): the distinct draws sorted by FLOPs
    are cut into ``count`` consecutive groups of (nearly) equal size and one architecture is drawn uniformly
    from each, so the set spans the space's FLOPs range as the uniform distribution does. Returned in a
    shuffled order (trained in that order, a benchmark stopped early still spans the range)."""
    from dcsnas.errors import ConfigError
    from dcsnas.nas.sampling import random_indices

    draws = draws if draws is not None else max(1000, 200 * count)
    unique: dict[tuple, tuple[int, dict[str, int]]] = {}
    for _ in range(draws):
        indices = random_indices(space, rng)
        unique.setdefault(_key(indices), (costs.exact(indices, "flops"), indices))
    if len(unique) < count:
        raise ConfigError(f"space '{space.name}': only {len(unique)} distinct architectures in {draws} draws, "
                          f"fewer than --archs {count}")
    ordered = sorted(unique.values(), key=lambda fi: (fi[0], _key(fi[1])))
    bounds = [round(i * len(ordered) / count) for i in range(count + 1)]
    chosen = [ordered[rng.randrange(lo, hi)][1] for lo, hi in zip(bounds, bounds[1:])]
    rng.shuffle(chosen)
    return chosen


# ---------------------------------------------------------------------------------------------- statistics
def noise_ceiling(s: float, sigma: float, k: int) -> Optional[float]:
    """E[τ] of a perfect ranker: (2/π)·asin(r), r = s / √(s² + σ²/k); None when s = σ = 0."""
    denominator = math.sqrt(s * s + sigma * sigma / k)
    return None if denominator == 0 else 2 / math.pi * math.asin(s / denominator)


def seed_spread(values: Sequence[Sequence[float]]) -> dict[str, Any]:
    """The noise of a table of ``values`` (per architecture, its k seeds' metric): σ, the pooled within-architecture
    standard deviation; s, the true spread between architectures (√(variance of the means − σ²/k), floored at 0);
    the noise ceiling. None where too few values say it (σ needs k ≥ 2, s two architectures)."""
    ks = {len(v) for v in values}
    if len(ks) > 1:
        raise ValueError(f"seed_spread: architectures with different numbers of seeds {sorted(ks)}")
    k = ks.pop() if ks else 0
    out: dict[str, Any] = {"archs": len(values), "k": k, "sigma": None, "s": None, "ceiling": None}
    if k < 2 or len(values) < 2:
        return out
    means = [sum(v) / k for v in values]
    sigma = math.sqrt(sum((x - m) ** 2 for v, m in zip(values, means) for x in v) / (len(values) * (k - 1)))
    grand = sum(means) / len(means)
    between = sum((m - grand) ** 2 for m in means) / (len(means) - 1)
    s = math.sqrt(max(0.0, between - sigma * sigma / k))
    return {**out, "sigma": sigma, "s": s, "ceiling": noise_ceiling(s, sigma, k)}


def tau_null_sd(n: int) -> Optional[float]:
    """Standard deviation of Kendall's τ over n independent rankings: √(2(2n+5) / (9n(n−1)))."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n >= 2 else None


def rank_group(scores: Sequence[float], truth: Sequence[float], ceiling: Optional[float]) -> dict[str, Any]:
    """Kendall τ-b with p-value, Spearman ρ, top-5 overlap and τ / ``ceiling`` of ``scores`` against ``truth``."""
    from scipy import stats

    from dcsnas.nas.sampling import kendall_tau

    n = len(scores)
    tau = kendall_tau(list(scores), list(truth))
    rho = None
    if tau["tau"] is not None:
        rho = float(stats.spearmanr(scores, truth).statistic)
    top = min(5, n)
    by_score = set(sorted(range(n), key=lambda i: -scores[i])[:top])
    by_truth = set(sorted(range(n), key=lambda i: -truth[i])[:top])
    return {"n": n, "tau": tau["tau"], "p": tau["p"], "rho": rho, "top5": len(by_score & by_truth) if n else None,
            "top5_of": top,
            "tau_null_sd": tau_null_sd(n), "ceiling": ceiling,
            "tau_over_ceiling": (tau["tau"] / ceiling if tau["tau"] is not None and ceiling else None)}


# ---------------------------------------------------------------------------------------------- files
def recipe_hash(cls, path: Path, extra: Sequence[str] = ()) -> str:
    """Config hash of a recipe as the benchmark runs it, without what it sets per run or machine (seed, threads,
    data root, the space's path: the space has its own hash)."""
    from dcsnas.config import config_hash, load_config

    cfg = load_config(cls, path, list(extra))
    cfg.seed, cfg.threads, cfg.data.root = 0, 1, ""
    if hasattr(cfg, "search"):
        cfg.search.space = ""
    return config_hash(cfg)


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _read_json(path: Path, what: str) -> Optional[dict]:
    from dcsnas.errors import ConfigError

    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} '{path}' is not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} '{path}' is not a JSON object")
    return data


def read_table(path: Path, header: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The ground-truth table in ``path`` (None when there is none); a :class:`ConfigError` (one line, naming the
    file) when it is not valid JSON, not a table, or written for another space, recipe, preset or draw than
    ``header`` says."""
    from dcsnas.errors import ConfigError

    table = _read_json(path, "ranking table")
    if table is None:
        return None
    if table.get("format") != TABLE_FORMAT or table.get("version") != VERSION or not isinstance(table.get("archs"),
                                                                                                list):
        raise ConfigError(f"ranking table '{path}' is not a {TABLE_FORMAT} table of version {VERSION}")
    for key, value in header.items():
        if table.get(key) != value:
            raise ConfigError(f"ranking table '{path}' was written for {key} {json.dumps(table.get(key))}, not "
                              f"{json.dumps(value)}: use another --table")
    return table


def read_scores(path: Path, space: dict[str, Any]) -> dict[str, Any]:
    """The supernet score cache beside a table (empty when there is none); refused like :func:`read_table`."""
    from dcsnas.errors import ConfigError

    cache = _read_json(path, "supernet score cache")
    if cache is None:
        return {"format": SCORES_FORMAT, "version": VERSION, "space": space, "modes": {}}
    if cache.get("format") != SCORES_FORMAT or cache.get("version") != VERSION or not isinstance(cache.get("modes"),
                                                                                                 dict):
        raise ConfigError(f"supernet score cache '{path}' is not a {SCORES_FORMAT} file of version {VERSION}")
    if cache.get("space") != space:
        raise ConfigError(f"supernet score cache '{path}' was written for space {json.dumps(cache.get('space'))}, "
                          f"not {json.dumps(space)}")
    return cache


def parse_mode(mode: str) -> tuple[str, str]:
    from dcsnas.errors import ConfigError

    sampling, _, weights = mode.partition(":")
    if sampling not in ("gumbel", "uniform", "fair", "sandwich") or weights not in ("separate", "nested"):
        raise ConfigError(f"--modes {mode}: expected sampling:op_weights, sampling one of gumbel, uniform, fair, "
                          "sandwich and op_weights separate or nested (gumbel:separate)")
    return sampling, weights


# ---------------------------------------------------------------------------------------------- benchmark
@dataclass
class RankingBench(svr.Bench):
    """search_vs_random's scheduler with this benchmark's jobs: the missing retrainings of the table, then per
    mode a weights-only search and the scores of its supernet. Finished jobs go into the table and the score
    cache at once (under a lock: jobs finish in the scheduler's threads)."""

    space_path: Path = Path()
    preset: str = "small"
    table_path: Path = Path()
    archs: int = 40
    seeds_per_arch: int = 2
    seed: int = 0
    modes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        from dcsnas.config import config_hash
        from dcsnas.engine.config import TrainConfig
        from dcsnas.errors import ConfigError
        from dcsnas.nas.config import SearchConfig
        from dcsnas.nas.cost import measure_costs
        from dcsnas.nas.space import load_space

        self.space = load_space(self.space_path)
        self.modes = [":".join(parse_mode(m)) for m in self.modes]
        retrain = _load_recipe(TrainConfig, self.configs["retrain"])
        self.input_size = (retrain.data.transforms.height, retrain.data.transforms.width)
        self.cost_model = measure_costs(self.space, self.input_size)
        self.header = {
            "space": {"name": self.space.name, "hash": config_hash(self.space)}, "preset": self.preset,
            "input_size": list(self.input_size),
            "recipe": {"retrain": recipe_hash(TrainConfig, self.configs["retrain"])},
            "draw": {"archs": self.archs, "seed": self.seed}}
        self.search_epochs = _load_recipe(SearchConfig, self.configs["search"]).optim.epochs
        self.scores_path = self.table_path.with_name(self.table_path.stem + ".supernets.json")
        self.table = read_table(self.table_path, self.header)
        self.scores = read_scores(self.scores_path, self.header["space"])
        for mode in self.modes:
            stored = self.scores["modes"].get(mode)
            expected = recipe_hash(SearchConfig, self.configs["search"], self.search_overrides(mode))
            if stored is not None and stored.get("search") != expected:
                raise ConfigError(f"supernet score cache '{self.scores_path}' holds mode {mode} of another search "
                                  f"recipe (hash {stored.get('search')}, not {expected}): use another --table")
            self.scores["modes"].setdefault(mode, {"search": expected, "seed": self.seed, "scores": {}})
        if self.table is None:
            self.table = self.new_table()
            self.save_table()

    # ------------------------------------------------------------------------------------------ table
    def new_table(self) -> dict[str, Any]:
        drawn = stratified_draw(self.space, self.cost_model, self.archs, random.Random(self.seed))
        choices = {c.key: c for c in self.space.choices()}
        return {"format": TABLE_FORMAT, "version": VERSION, **self.header,
                "recipe_file": _relative(self.configs["retrain"]), "space_file": _relative(self.space_path),
                "metrics": "test metrics of dcsnas retrain's metrics.json (fractions); health: its warnings",
                "commit": git_commit(),
                "archs": [{"id": i, "indices": d, "labels": {k: choices[k].labels[v] for k, v in d.items()},
                           "flops": self.cost_model.exact(d, "flops"), "params": self.cost_model.exact(d, "params"),
                           "seeds": {}} for i, d in enumerate(drawn)]}

    def save_table(self) -> None:
        from dcsnas.utils.io import atomic_write_json

        self.table_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.table_path, self.table)

    def record_retrain(self, arch_id: int, seed: int) -> None:
        """The finished retraining's metrics into the table, written at once."""
        metrics = json.loads((self.run_path(_run_name(arch_id, seed)) / "metrics.json").read_text())
        entry = {**{m: metrics["test"][m] for m in METRICS}, "health": metrics.get("health", {}),
                 "train_time_s": round(metrics["train_time_s"], 1), "commit": git_commit()}
        with self._lock:
            self.table["archs"][arch_id]["seeds"][str(seed)] = entry
            self.table["commit"] = entry["commit"]
            self.save_table()

    def record_scores(self, mode: str) -> None:
        from dcsnas.utils.io import atomic_write_json

        result = json.loads(self.run_path(_scores_name(mode)).read_text())
        with self._lock:
            stored = self.scores["modes"][mode]
            stored["scores"].update({str(i): s for i, s in zip(result["ids"], result["scores"])})
            stored.update(bn_recalibration_batches=result["bn_recalibration_batches"], commit=git_commit())
            self.scores_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.scores_path, self.scores)

    def arch_file(self, arch_id: int) -> Path:
        """arch.json of architecture ``arch_id`` (the project's writer, written once)."""
        from dcsnas.models.arch import write_arch
        from dcsnas.nas.arch import derive_arch

        path = self.out / "archs" / f"arch{arch_id:02d}.json"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_arch(path, derive_arch(self.space, self.table["archs"][arch_id]["indices"], self.cost_model,
                                         {"ranking": {"id": arch_id, "draw_seed": self.seed}}))
        return path

    # ------------------------------------------------------------------------------------------ plan
    def search_overrides(self, mode: str) -> list[str]:
        sampling, weights = parse_mode(mode)
        return [f"search.space={self.space_path.resolve()}", f"search.sampling={sampling}",
                f"search.op_weights={weights}", f"search.warmup_epochs={self.search_epochs - 1}"]

    def plan(self) -> list[svr.Job]:
        """The retrainings the table lacks, architecture by architecture (in the table's shuffled order, so a
        stopped benchmark has whole architectures spanning the FLOPs range); then, per mode whose cache lacks an
        architecture, its search and its scores."""
        jobs = [svr.Job(_run_name(a["id"], s), "retrain", lambda a=a["id"], s=s: self.retrain_command(a, s))
                for a in self.table["archs"] for s in range(self.seeds_per_arch) if str(s) not in a["seeds"]]
        for mode in self.modes:
            missing = self.unscored(mode)
            if missing:
                search = _search_name(mode)
                jobs.append(svr.Job(search, "search", lambda m=mode: self.command(
                    "search", _search_name(m), self.seed, extra=self.search_overrides(m))))
                jobs.append(svr.Job(_scores_name(mode), "score", lambda m=mode: self.scores_command(m), (search,)))
        return jobs

    def unscored(self, mode: str) -> list[int]:
        stored = self.scores["modes"][mode]["scores"]
        return [a["id"] for a in self.table["archs"] if str(a["id"]) not in stored]

    def retrain_command(self, arch_id: int, seed: int) -> Optional[list[str]]:
        cmd = self.command("retrain", _run_name(arch_id, seed), seed, self.arch_file(arch_id))
        if cmd is None:  # finished in an earlier session that stopped before writing the table
            self.record_retrain(arch_id, seed)
        return cmd

    def scores_command(self, mode: str) -> Optional[list[str]]:
        from dcsnas.utils.io import atomic_write_json

        result = self.run_path(_scores_name(mode))
        ids = self.unscored(mode)
        if result.is_file() and set(ids) <= set(json.loads(result.read_text())["ids"]):
            self.record_scores(mode)
            return None
        request = result.with_suffix(".request.json")
        atomic_write_json(request, {"ids": ids, "indices": [self.table["archs"][i]["indices"] for i in ids]})
        return [str(Path(__file__).resolve()), "--score-worker", str(self.run_path(_search_name(mode))), str(request),
                str(result)]

    def run_job(self, job: svr.Job, cmd: list[str]) -> None:
        super().run_job(job, cmd)
        if job.kind == "retrain":
            arch, seed = job.name.removeprefix("arch").split("-s")
            self.record_retrain(int(arch), int(seed))
        elif job.kind == "score":
            self.record_scores(next(m for m in self.modes if _scores_name(m) == job.name))

    # ------------------------------------------------------------------------------------------ scores
    def proxy_scores(self) -> dict[str, dict[int, float]]:
        """FLOPs, parameters, NASWOT and synflow of every architecture of the table (the networks at
        initialisation with torch seed ``seed``; NASWOT on a fixed batch of training images)."""
        import torch

        from dcsnas.models.builder import create_model
        from dcsnas.nas.proxies import naswot_score, synflow_score

        cfg, _ = self.load_config("retrain", self.seed, self.arch_file(0))
        batch, classes = svr.proxy_batch(cfg, self.seed)
        out: dict[str, dict[int, float]] = {"FLOPs": {}, "params": {}, "NASWOT": {}, "synflow": {}}
        for a in self.table["archs"]:
            out["FLOPs"][a["id"]], out["params"][a["id"]] = float(a["flops"]), float(a["params"])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = create_model("searched", classes, arch=str(self.arch_file(a["id"])))
            out["NASWOT"][a["id"]] = naswot_score(model, batch)
            out["synflow"][a["id"]] = synflow_score(model, (1, 3, *self.input_size))
        return out

    def results(self, jobs: list[svr.Job]) -> dict[str, Any]:
        complete = [a for a in self.table["archs"]
                    if all(str(s) in a["seeds"] for s in range(self.seeds_per_arch))]
        truth = {a["id"]: [100 * a["seeds"][str(s)]["mAP"] for s in range(self.seeds_per_arch)] for a in complete}
        spread = seed_spread(list(truth.values()))
        mean = {i: sum(v) / len(v) for i, v in truth.items()}
        groups: dict[str, dict[int, float]] = self.proxy_scores()
        for mode in self.modes:
            stored = self.scores["modes"][mode]["scores"]
            groups[f"supernet {mode}"] = {int(i): 100 * s["mAP"] for i, s in stored.items()}
        rows = []
        for name, values in groups.items():
            ids = [i for i in mean if i in values and math.isfinite(values[i])]
            rows.append({"group": name, **rank_group([values[i] for i in ids], [mean[i] for i in ids],
                                                     spread["ceiling"])})
        trained = sum(len(a["seeds"]) for a in self.table["archs"])
        return {"table": str(self.table_path), "scores": str(self.scores_path), "archs": len(self.table["archs"]),
                "complete_archs": len(complete), "seeds_per_arch": self.seeds_per_arch, "retrained_runs": trained,
                "seed_spread_mAP": spread, "groups": rows,
                "jobs": [{"name": j.name, "status": j.status, "seconds": round(j.seconds, 1), "error": j.error}
                         for j in jobs]}


def _load_recipe(cls, path: Path):
    from dcsnas.config import load_config

    return load_config(cls, path, [])


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPOSITORY)) if path.is_relative_to(REPOSITORY) else str(path)


def _run_name(arch_id: int, seed: int) -> str:
    return f"arch{arch_id:02d}-s{seed}"


def _search_name(mode: str) -> str:
    return "search-" + mode.replace(":", "-")


def _scores_name(mode: str) -> str:
    return f"scores-{mode.replace(':', '-')}.json"


# ---------------------------------------------------------------------------------------------- output
def _number(value: Optional[float], fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown(result: dict[str, Any]) -> str:
    spread = result["seed_spread_mAP"]
    lines = [f"Supernet ranking on space `{result['space']}` (preset `{result['preset']}`): "
             f"{result['complete_archs']} of {result['archs']} architectures with all {result['seeds_per_arch']} "
             f"seeds retrained ({result['retrained_runs']} runs). Truth: mean retrained test mAP; seed noise σ = "
             f"{_number(spread['sigma'], '.2f')}, spread between architectures s = {_number(spread['s'], '.2f')} "
             "mAP points; ceiling: the τ of a perfect ranker, (2/π)·asin(s / √(s² + σ²/k)).", "",
             "| group | τ | p | null sd of τ | ρ | top-5 overlap | ceiling | τ / ceiling | archs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in result["groups"]:
        lines.append(f"| {g['group']} | {_number(g['tau'], '.2f')} | {_number(g['p'], '.3f')} | "
                     f"{_number(g['tau_null_sd'], '.2f')} | {_number(g['rho'], '.2f')} | "
                     f"{_number(g['top5'], 'd')} of {g['top5_of']} | {_number(g['ceiling'], '.2f')} | "
                     f"{_number(g['tau_over_ceiling'], '.2f')} | {g['n']} |")
    return "\n".join(lines) + "\n"


def score_worker(search_run: Path, request: Path, out: Path) -> dict[str, Any]:
    import torch

    from dcsnas.utils.io import atomic_write_json

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    asked = json.loads(request.read_text())
    result = svr.score_with_supernet(search_run, asked["indices"], out.with_suffix(".scratch"))
    result = {"ids": asked["ids"], **result}
    atomic_write_json(out, result)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the `tiny` preset and space, the demo's quick recipes")
    parser.add_argument("--space", type=Path, help="search-space YAML (default the demo's op space)")
    parser.add_argument("--table", type=Path, help="ground-truth table (default experiments/bench/ranking/"
                                                   "<space>.json; --quick: under --out)")
    parser.add_argument("--out", help="run folder (default runs/supernet-ranking[-quick])")
    parser.add_argument("--data", help="synthetic data folder (default data/synthetic-<preset>)")
    parser.add_argument("--archs", type=int, help="architectures of the ground truth (default 40; --quick 4)")
    parser.add_argument("--seeds-per-arch", type=int, help="retrainings per architecture (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw, the proxies and the searches")
    parser.add_argument("--modes", nargs="+", help="supernets, sampling:op_weights (default gumbel:separate "
                                                   "sandwich:nested; --quick sandwich:nested)")
    parser.add_argument("--search-config", type=Path)
    parser.add_argument("--retrain-config", type=Path)
    parser.add_argument("--markdown", type=Path, help="write the table of groups here")
    parser.add_argument("--report", action="store_true", help="train nothing: the table of what is done so far "
                        "(the architectures whose seeds are all retrained, the supernets already scored)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--score-worker", nargs=3, metavar=("SEARCH_RUN", "REQUEST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.score_worker:
        return score_worker(*map(Path, args.score_worker))

    from dcsnas.errors import ConfigError

    defaults = QUICK if args.quick else FULL
    preset = defaults["preset"]
    out = Path(args.out or f"runs/supernet-ranking{'-quick' * args.quick}").resolve()
    data = Path(args.data or f"data/synthetic-{preset}").resolve()
    space = (args.space or defaults["space"]).resolve()
    configs = {k: (getattr(args, f"{k}_config") or defaults[k]).resolve() for k in ("search", "retrain")}
    try:
        from dcsnas.nas.space import load_space

        name = load_space(space).name
        table = (args.table or (out if args.quick else REPOSITORY / "experiments/bench/ranking") / f"{name}.json")
        bench = RankingBench(out, data, configs, [], 0, 0.0, args.jobs, args.threads, space_path=space,
                             preset=preset, table_path=table.resolve(), archs=args.archs or defaults["archs"],
                             seeds_per_arch=args.seeds_per_arch or defaults["seeds"], seed=args.seed,
                             modes=args.modes or defaults["modes"])
    except ConfigError as exc:
        print(f"supernet_ranking: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    tic = time.perf_counter()
    svr.ensure_data(data, preset, bench.log)
    jobs = [] if args.report else bench.run()
    result = {"space": bench.space.name, "preset": preset, "data": str(data), "out": str(out),
              "configs": {k: _relative(v) for k, v in configs.items()}, "modes": bench.modes,
              **bench.results(jobs), "seconds": round(time.perf_counter() - tic, 1)}
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(result))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
