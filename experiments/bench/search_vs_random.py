"""Benchmark: DCS-DNAS against random architectures of the same space at equal FLOPs (DESIGN §6, Evidence).
Prints JSON and writes ``table.md``.

For each seed s: the DCS-DNAS search (``--search-config``) and the retraining of its derived network
(``--retrain-config``); ``--random`` architectures drawn uniformly from the searched space among those
with FLOPs within ±``--band`` of the derived one (:func:`dcsnas.nas.sampling.sample_in_band`, drawn with
seed s, the derived one excluded), retrained with the same recipe and seed; with ``--naswot N``, the NASWOT
pick: the architecture of highest NASWOT score (Mellor et al. 2021, :func:`dcsnas.nas.proxies.naswot_score`,
at initialisation with torch seed s on :func:`proxy_batch`) among N more drawn the same way, retrained with
seed s (a training-free search at the same FLOPs); with ``--nni-evolution N``, NNI's regularized evolution
(``dcsnas search --strategy nni:evolution``, population 20, tournaments of 5) over N architectures within the
same FLOPs band, each scored by the supernet of search s on its architecture split
(:mod:`dcsnas.nni.supernet`), its pick retrained with seed s; and the fixed baseline
(``--baseline-config``: the demo's DCS-FB MobileNetV2) trained with seed s. The supernet of search s then
evaluates the searched and the random architectures with its shared weights after BatchNorm
recalibration (:meth:`dcsnas.nas.search.Searcher.evaluate_architecture`); Kendall's τ between that mAP and
the retrained mAP is the standard measure of whether weight sharing ranks architectures at all. The searched
network is compared with each other group seed by seed: the paired differences, the paired t-test and the
Wilcoxon signed-rank test (:func:`dcsnas.compare.seeds.paired_tests`; against the random group, its seed's mean).

Every training is a run directory of ``dcsnas search`` / ``retrain`` / ``train`` under ``--out``, run in
its own process with ``--threads`` torch threads, ``--jobs`` at a time. A run with its metrics.json is
skipped (after checking that it holds the same config), a stopped one continues from its last checkpoint
(``--resume``), so a killed benchmark started again goes on where it stopped. Costs (FLOPs, parameters of
the inference network) are those of ``dcsnas compare``. A run that fails is reported (its log is in
``logs/``) and the benchmark goes on without it.

    dcsnas data synth --preset small --out data/synthetic-small
    python experiments/bench/search_vs_random.py --out runs/search-vs-random
    python experiments/bench/search_vs_random.py --quick    # the same pipeline on `tiny` (smoke run)
    python experiments/bench/search_vs_random.py --out runs/search-vs-random --seeds 10 --random 3 --naswot 100 \
        --nni-evolution 100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPOSITORY = Path(__file__).resolve().parents[2]
RECIPES = REPOSITORY / "experiments" / "bench" / "search_vs_random"
DEMO = REPOSITORY / "experiments" / "demo"
FULL = {"preset": "small", "search": RECIPES / "search.yaml", "retrain": RECIPES / "retrain.yaml",
        "baseline": RECIPES / "dcsfb.yaml", "seeds": 3, "random": 4}
QUICK = {"preset": "tiny", "search": DEMO / "quick_search.yaml", "retrain": DEMO / "quick_retrain.yaml",
         "baseline": DEMO / "quick_dcsfb.yaml", "seeds": 1, "random": 2}
# Config keys that hold paths: a run that differs from the benchmark's config only there is still its run.
METRICS = ("mAP", "rank-1", "mINP")
GROUPS = (("searched", "DCS-DNAS, searched and retrained"), ("random", "random, same space and FLOPs"),
          ("naswot", "NASWOT pick, same space and FLOPs"),
          ("evolution", "NNI evolution over the supernet, same FLOPs"), ("baseline", "DCS-FB MobileNetV2 (fixed)"))
EVOLUTION = {"population_size": 20, "sample_size": 5}
"""NNI regularized evolution's settings in the ``evolution`` group (its ``max_trials``: ``--nni-evolution``)."""
PROXY_BATCH = 64
"""Training images a training-free score (NASWOT) reads: one fixed batch."""
NASWOT_STREAM = 1_000_003
"""Offset of the NASWOT candidates' draw seed from the benchmark seed (a stream apart from the random ones)."""


@dataclass
class Job:
    """One process: ``name`` (its run directory or result file under ``out``), ``kind`` (``search``,
    ``retrain``, ``train``, ``score``), the jobs it ``needs`` first, and ``prepare`` (run in the scheduler
    before it starts, e.g. to draw its architecture) returning the command."""

    name: str
    kind: str
    prepare: Callable[[], Optional[list[str]]]
    needs: tuple[str, ...] = ()
    status: str = "pending"
    seconds: float = 0.0
    error: Optional[str] = None


@dataclass
class Bench:
    out: Path
    data: Path
    configs: dict[str, Path]
    seeds: list[int]
    random: int
    band: float
    jobs: int
    threads: int
    naswot: int = 0
    evolution: int = 0
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    _costs: dict[int, tuple] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------------------------------ paths
    def run_path(self, name: str) -> Path:
        return self.out / name

    def archs_file(self, seed: int) -> Path:
        """The searched and the random architectures of seed ``seed`` (choice indices) and their target."""
        return self.out / "archs" / f"seed{seed}.json"

    # ------------------------------------------------------------------------------------------ plan
    def plan(self) -> list[Job]:
        """Seed by seed: its search, then the retrainings of the searched and the random networks and the
        supernet's scores; the baselines last. Jobs start in this order as soon as what they need is done,
        so a benchmark stopped early has whole seeds rather than a part of every seed."""
        jobs = []
        for s in self.seeds:
            search = (f"search-s{s}",)
            jobs.append(Job(f"search-s{s}", "search", lambda s=s: self.command("search", f"search-s{s}", s)))
            jobs.append(Job(f"searched-s{s}", "retrain", lambda s=s: self.command(
                "retrain", f"searched-s{s}", s, self.run_path(f"search-s{s}") / "arch.json"), search))
            jobs += [Job(f"random-s{s}-{r}", "retrain", lambda s=s, r=r: self.command(
                "retrain", f"random-s{s}-{r}", s, self.random_arch(s, r)), search) for r in range(self.random)]
            if self.naswot:
                jobs.append(Job(f"naswot-s{s}", "retrain", lambda s=s: self.command(
                    "retrain", f"naswot-s{s}", s, self.naswot_arch(s)), search))
            if self.evolution:
                jobs.append(Job(f"nni-evolution-s{s}", "nni", lambda s=s: self.evolution_command(s), search))
                jobs.append(Job(f"evolution-s{s}", "retrain", lambda s=s: self.command(
                    "retrain", f"evolution-s{s}", s, self.run_path(f"nni-evolution-s{s}") / "arch.json"),
                    (f"nni-evolution-s{s}",)))
            jobs.append(Job(f"supernet-s{s}.json", "score", lambda s=s: self.score_command(s), search))
        jobs += [Job(f"baseline-s{s}", "train", lambda s=s: self.command("train", f"baseline-s{s}", s))
                 for s in self.seeds]
        return jobs

    def load_config(self, kind: str, seed: int, arch: Optional[Path], extra: Sequence[str] = ()):
        """The config of a run and the overrides of its recipe (``extra``: more ``key=value`` overrides)."""
        from dcsnas.config import load_config
        from dcsnas.engine.config import TrainConfig
        from dcsnas.nas.config import SearchConfig

        overrides = [f"seed={seed}", f"threads={self.threads}", f"data.root={self.data.resolve()}", *extra]
        if kind == "search":
            return load_config(SearchConfig, self.configs["search"], overrides), overrides
        if kind == "nni":
            from dcsnas.nni.config import NNISearchConfig

            return load_config(NNISearchConfig, self.configs["search"], overrides), overrides
        if kind == "retrain":
            overrides += ["model.backbone=searched", f"model.arch={arch.resolve()}"]
        config = self.configs["retrain" if kind == "retrain" else "baseline"]
        return load_config(TrainConfig, config, overrides), overrides

    def command(self, kind: str, name: str, seed: int, arch: Optional[Path] = None,
                extra: Sequence[str] = ()) -> Optional[list[str]]:
        """The ``dcsnas`` command of a run (``--resume`` when it stopped), or None when it is done; ``extra``:
        ``key=value`` overrides of its recipe."""
        from dcsnas.engine.rundir import RunDir, pipeline_step_state

        cfg, overrides = self.load_config(kind, seed, arch, extra)
        run = RunDir(self.run_path(name))
        state = pipeline_step_state(run, cfg, kind == "search", "benchmark")
        resume = state == "resume"
        if state == "done":
            return None
        if run.path.exists() and not resume:  # stopped before its first checkpoint: nothing to keep
            shutil.rmtree(run.path)
        config = self.configs["search" if kind == "search" else "retrain" if kind == "retrain" else "baseline"]
        cmd = ["-m", "dcsnas.cli", "train" if kind == "train" else kind, "--config", str(config)]
        if arch is not None:
            cmd += ["--arch", str(arch)]
        cmd += [a for o in overrides if not o.startswith("model.") for a in ("--set", o)]
        return [*cmd, "--out", str(run.path), "--no-progress", *(["--resume"] if resume else [])]

    def evolution_command(self, seed: int) -> Optional[list[str]]:
        """``dcsnas search --strategy nni:evolution`` over the supernet of search ``seed`` within ±band of its
        derived network's FLOPs, or None when done (an NNI search does not resume: a stopped one starts over)."""
        from dcsnas.engine.rundir import RunDir, pipeline_step_state

        name = f"nni-evolution-s{seed}"
        extra = ["nni.evaluator=supernet", f"nni.supernet={self.run_path(f'search-s{seed}')}",
                 f"nni.target_mflops={self.sample(seed)['target_flops'] / 1e6}", f"nni.flops_band={self.band}",
                 f"nni.max_trials={self.evolution}", "search.cost.kind=none",
                 *(f"nni.{k}={v}" for k, v in EVOLUTION.items())]
        cfg, overrides = self.load_config("nni", seed, None, extra)
        run = RunDir(self.run_path(name))
        if pipeline_step_state(run, cfg, True, "benchmark") == "done":
            return None
        if run.path.exists():
            shutil.rmtree(run.path)
        return ["-m", "dcsnas.cli", "search", "--strategy", "nni:evolution", "--config", str(self.configs["search"]),
                *(a for o in overrides for a in ("--set", o)), "--out", str(run.path), "--no-progress"]

    def score_command(self, seed: int) -> Optional[list[str]]:
        result = self.run_path(f"supernet-s{seed}.json")
        if result.is_file():
            return None
        self.sample(seed)
        return [str(Path(__file__).resolve()), "--score-worker", str(self.run_path(f"search-s{seed}")),
                str(self.archs_file(seed)), str(result)]

    # ------------------------------------------------------------------------------------------ architectures
    def costs(self, seed: int):
        """The space of search ``seed`` (its copy in the run directory) and its cost table at the input size
        of the derived network (the search's stored table)."""
        from dcsnas.engine.rundir import RunDir
        from dcsnas.nas.arch import load_arch_in_space
        from dcsnas.nas.cost import cached_costs
        from dcsnas.nas.search import COST_FILE, run_space

        if seed not in self._costs:
            search = RunDir(self.run_path(f"search-s{seed}"))
            space, arch = run_space(search), load_arch_in_space(search.arch)
            self._costs[seed] = space, arch, cached_costs(space, tuple(arch.input_size), search.path / COST_FILE)
        return self._costs[seed]

    def sample(self, seed: int) -> dict[str, Any]:
        """The searched architecture of seed ``seed`` and ``random`` architectures drawn with FLOPs within
        ±band of it (written to :meth:`archs_file` once; read back after)."""
        from dcsnas.models.skeleton import SKELETONS
        from dcsnas.nas.sampling import sample_in_band
        from dcsnas.utils.io import atomic_write_json

        space, arch, costs = self.costs(seed)
        searched = SKELETONS[space.skeleton].indices(space, arch, str(self.run_path(f"search-s{seed}") / "arch.json"))
        path = self.archs_file(seed)
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored["searched"] == searched and stored["band"] == self.band and len(stored["random"]) >= self.random:
                return stored
        target = costs.exact(searched, "flops")
        drawn = sample_in_band(space, costs, target, self.random, random.Random(seed), self.band, [searched])
        stored = {"space": space.name, "input_size": arch.input_size, "target_flops": target, "band": self.band,
                  "searched": searched, "random": drawn,
                  "random_flops": [costs.exact(d, "flops") for d in drawn]}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, stored)
        return stored

    def random_arch(self, seed: int, r: int) -> Path:
        """arch.json of random architecture ``r`` of seed ``seed`` (beside the seed's archs file)."""
        from dcsnas.models.arch import write_arch
        from dcsnas.nas.arch import derive_arch

        stored = self.sample(seed)
        path = self.archs_file(seed).parent / f"random-s{seed}-{r}.json"
        if not path.is_file():
            space, _, costs = self.costs(seed)
            write_arch(path, derive_arch(space, stored["random"][r], costs,
                                         {"random": {"seed": seed, "index": r, "band": self.band}}))
        return path

    def naswot_arch(self, seed: int) -> Path:
        """arch.json of the NASWOT pick of seed ``seed`` (module docstring); its ``naswot`` candidates and their
        scores are kept beside it in ``naswot-s<seed>.scores.json``, so the pick is made once."""
        import tempfile

        import torch

        from dcsnas.models.arch import write_arch
        from dcsnas.models.builder import create_model
        from dcsnas.nas.arch import derive_arch
        from dcsnas.nas.proxies import naswot_score
        from dcsnas.nas.sampling import sample_in_band
        from dcsnas.utils.io import atomic_write_json

        path = self.archs_file(seed).parent / f"naswot-s{seed}.json"
        scores_path = path.with_name(f"naswot-s{seed}.scores.json")
        if path.is_file() and scores_path.is_file():
            stored = json.loads(scores_path.read_text())
            if stored["candidates"] == self.naswot and stored["band"] == self.band:
                return path
        stored = self.sample(seed)
        space, _, costs = self.costs(seed)
        drawn = sample_in_band(space, costs, stored["target_flops"], self.naswot,
                               random.Random(NASWOT_STREAM + seed), self.band, [stored["searched"]])
        cfg, _ = self.load_config("train", seed, None)
        batch, classes = proxy_batch(cfg, seed)
        scores = []
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with tempfile.TemporaryDirectory() as scratch:
                for i, indices in enumerate(drawn):
                    candidate = Path(scratch) / f"{i}.json"
                    write_arch(candidate, derive_arch(space, indices, costs, {}))
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)
                        model = create_model("searched", classes, arch=str(candidate))
                    scores.append(naswot_score(model, batch))
        finally:
            torch.set_num_threads(threads)
        best = max(range(len(drawn)), key=scores.__getitem__)
        write_arch(path, derive_arch(space, drawn[best], costs, {"naswot": {
            "seed": seed, "candidates": self.naswot, "band": self.band, "score": scores[best]}}))
        atomic_write_json(scores_path, {"candidates": self.naswot, "band": self.band, "pick": best,
                                        "archs": drawn, "scores": scores,
                                        "flops": [costs.exact(d, "flops") for d in drawn]})
        return path

    # ------------------------------------------------------------------------------------------ running
    def run_job(self, job: Job, cmd: list[str]) -> None:
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               "OMP_WAIT_POLICY": "PASSIVE"}  # busy-waiting OpenMP threads stall a shared machine
        with open(logs / f"{job.name.removesuffix('.json')}.log", "a") as log:
            log.write(f"$ {sys.executable} {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.run([sys.executable, *cmd], cwd=REPOSITORY, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        if proc.returncode:
            raise RuntimeError(f"exit status {proc.returncode} (log: {logs / job.name.removesuffix('.json')}.log)")

    def run(self) -> list[Job]:
        """All jobs, ``jobs`` at a time; a failed job's dependents are skipped."""
        jobs = self.plan()
        by_name = {j.name: j for j in jobs}
        running: dict[Future, tuple[Job, float]] = {}
        with ThreadPoolExecutor(self.jobs) as pool:
            while True:
                for job in jobs:
                    if job.status != "pending" or len(running) >= self.jobs:
                        continue
                    needs = [by_name[n].status for n in job.needs]
                    if any(s in ("failed", "skipped") for s in needs):
                        job.status, job.error = "skipped", f"needs {', '.join(job.needs)}"
                        continue
                    if all(s == "done" for s in needs):
                        try:
                            cmd = job.prepare()
                        except Exception as exc:  # e.g. no architecture in the FLOPs band
                            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
                            self.log(f"[failed] {job.name}: {job.error}")
                            continue
                        if cmd is None:
                            job.status = "done"
                            self.log(f"[done before] {job.name}")
                            continue
                        job.status = "running"
                        self.log(f"[start] {job.name}" + (" (resumed)" if "--resume" in cmd else ""))
                        running[pool.submit(self.run_job, job, cmd)] = (job, time.perf_counter())
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    job, start = running.pop(future)
                    job.seconds = time.perf_counter() - start
                    error = future.exception()
                    job.status, job.error = ("failed", str(error)) if error else ("done", None)
                    self.log(f"[{job.status}] {job.name} in {job.seconds:.0f}s" + (f": {error}" if error else ""))
        return jobs

    # ------------------------------------------------------------------------------------------ results
    def results(self, jobs: list[Job]) -> dict[str, Any]:
        from dcsnas.compare import compare_runs
        from dcsnas.compare.seeds import mean_std, paired_tests
        from dcsnas.nas.sampling import kendall_tau, rank_among

        def summary_of(values: list[float]) -> dict[str, Any]:  # compare's mean ± sample std (ddof 1), n
            mean, std, n = mean_std(values) if values else (None, None, 0)
            return {"mean": mean, "std": std, "n": n}

        done = {j.name for j in jobs if j.status == "done"}
        trained = [j.name for j in jobs if j.kind in ("retrain", "train") and j.name in done]
        rows = {}
        if trained:
            report = compare_runs([self.run_path(n) for n in trained], None, ("cpu",), latency=False)
            rows = {Path(r["path"]).name: r for r in report["rows"]}

        def entry(name: str) -> Optional[dict[str, Any]]:
            row = rows.get(name)
            return None if row is None else {"run": name, **{m: 100 * row[m] for m in METRICS},
                                             "mflops": row["flops"] / 1e6, "mparams": row["params"] / 1e6}

        seeds, groups = [], {g: [] for g, _ in GROUPS}
        pooled_supernet, pooled_retrained = [], []
        for s in self.seeds:
            searched = entry(f"searched-s{s}")
            randoms = [e for e in (entry(f"random-s{s}-{r}") for r in range(self.random)) if e is not None]
            baseline, naswot, evolution = entry(f"baseline-s{s}"), entry(f"naswot-s{s}"), entry(f"evolution-s{s}")
            groups["searched"] += [searched] if searched else []
            groups["random"] += randoms
            groups["naswot"] += [naswot] if naswot else []
            groups["evolution"] += [evolution] if evolution else []
            groups["baseline"] += [baseline] if baseline else []
            record: dict[str, Any] = {"seed": s, "searched": searched, "random": randoms, "naswot": naswot,
                                      "evolution": evolution, "baseline": baseline}
            if searched and randoms:
                maps = [e["mAP"] for e in randoms]
                record.update(rank=rank_among(searched["mAP"], maps), of=len(maps) + 1,
                              random_median_mAP=statistics.median(maps), random_mean_mAP=statistics.fmean(maps),
                              beats_median=searched["mAP"] > statistics.median(maps),
                              over_random_mean=searched["mAP"] - statistics.fmean(maps))
            scores = self.run_path(f"supernet-s{s}.json")
            if scores.is_file():
                supernet = json.loads(scores.read_text())
                record["supernet"] = supernet
                pairs = [(supernet["random"][r]["mAP"] * 100, e["mAP"]) for r, e in enumerate(
                    entry(f"random-s{s}-{r}") for r in range(self.random)) if e is not None]
                record["kendall_tau_random"] = kendall_tau(*zip(*pairs)) if pairs else None
                pooled_supernet += [p[0] for p in pairs]
                pooled_retrained += [p[1] for p in pairs]
                if searched:
                    pairs.append((supernet["searched"]["mAP"] * 100, searched["mAP"]))
                    record["kendall_tau_with_searched"] = kendall_tau(*zip(*pairs))
            seeds.append(record)
        summary = {g: {"n": len(groups[g]), **{k: summary_of([e[k] for e in groups[g]])
                                               for k in (*METRICS, "mflops", "mparams")}} for g, _ in GROUPS}
        ranked = [r for r in seeds if "rank" in r]
        others = {"random": lambda r: r.get("random_mean_mAP"),
                  "naswot": lambda r: (r["naswot"] or {}).get("mAP"),
                  "evolution": lambda r: (r["evolution"] or {}).get("mAP"),
                  "baseline": lambda r: (r["baseline"] or {}).get("mAP")}
        paired = {}
        for group, value in others.items():
            pairs = [(r["seed"], r["searched"]["mAP"] - value(r)) for r in seeds
                     if r["searched"] and value(r) is not None]
            paired[group] = {"seeds": [p[0] for p in pairs], "differences": [p[1] for p in pairs],
                             **(paired_tests([p[1] for p in pairs]) if pairs else {"n": 0})}
        taus = [r["kendall_tau_random"]["tau"] for r in seeds
                if (r.get("kendall_tau_random") or {}).get("tau") is not None]
        return {
            "groups": summary, "seeds": seeds, "paired": paired,
            "kendall_tau": {
                "pooled_random": kendall_tau(pooled_supernet, pooled_retrained) if pooled_supernet else None,
                "mean_per_seed": statistics.fmean(taus) if taus else None},
            "goal": {"beats_median_every_seed": bool(ranked) and all(r["beats_median"] for r in ranked)
                     and len(ranked) == len(self.seeds),
                     "mean_over_random_mean": (statistics.fmean(r["over_random_mean"] for r in ranked)
                                               if ranked else None),
                     "target_over_random_mean": 1.0},
            "jobs": [{"name": j.name, "status": j.status, "seconds": round(j.seconds, 1), "error": j.error}
                     for j in jobs],
        }


def proxy_batch(cfg: Any, seed: int):
    """The fixed batch a training-free score reads: :data:`PROXY_BATCH` training images of ``cfg``'s data set
    (drawn with ``seed``, test transforms) as a tensor [B, 3, H, W], and its number of training identities."""
    import torch

    from dcsnas.data.loaders import ImageDataset
    from dcsnas.data.transforms import build_transforms

    dataset = cfg.data.load()
    records = random.Random(seed).sample(dataset.train, min(PROXY_BATCH, len(dataset.train)))
    images = ImageDataset(records, build_transforms(cfg.data.transforms, train=False))
    return torch.stack([images[i][0] for i in range(len(images))]), dataset.num_train_pids


# ---------------------------------------------------------------------------------------------- supernet scores
def supernet_scores(search_run: Path, archs: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Test metrics of the searched and the random architectures of ``archs`` (an archs file) evaluated by
    the supernet of ``search_run`` (:func:`score_with_supernet`)."""
    scored = score_with_supernet(search_run, [archs["searched"], *archs["random"]], scratch)
    scores = scored.pop("scores")
    return {**scored, "searched": scores[0], "random": scores[1:]}


def score_with_supernet(search_run: Path, archs: Sequence[dict[str, int]], scratch: Path) -> dict[str, Any]:
    """Test metrics (``scores``, one per architecture of ``archs``: choice indices) evaluated by the supernet of
    ``search_run`` (its last checkpoint) with the shared weights, after BatchNorm recalibration of each path on
    the search's training batches. ``scratch`` receives the scratch run directory the evaluation needs (its
    logger), so the search's own run directory is left as it was."""
    from dcsnas.nas.search import load_supernet

    if scratch.exists():
        shutil.rmtree(scratch)
    searcher = load_supernet(search_run, scratch)

    def score(indices: dict[str, int]) -> dict[str, float]:
        result = searcher.evaluate_architecture(indices, "test", show_progress=False)
        return {k: v for k, v in result.items() if k != "cmc"}

    out = {"checkpoint": str(Path(search_run) / "checkpoints" / "last.pt"),
           "bn_recalibration_batches": searcher.cfg.search.bn_recalibration_batches,
           "scores": [score(a) for a in archs]}
    searcher.logger.close()
    shutil.rmtree(scratch)
    return out


# ---------------------------------------------------------------------------------------------- table
def _cell(stat: dict[str, Any], digits: int = 1) -> str:
    if stat["mean"] is None:
        return "–"
    return f"{stat['mean']:.{digits}f}" + ("" if stat["std"] is None else f" ± {stat['std']:.{digits}f}")


def _number(value: Optional[float], digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, Any], info: dict[str, Any]) -> str:
    """The table of groups (mean ± std over runs) and the per-seed table."""
    lines = [f"Search against chance: preset `{info['preset']}`, seeds {info['seeds']}, {info['random']} random "
             f"architectures per seed within ±{100 * info['band']:g}% of the searched FLOPs. Test metrics in %, "
             "mean ± std (n − 1) over runs.", "",
             "| group | runs | mAP | rank-1 | mINP | MFLOPs | M params |", "|---|---|---|---|---|---|---|"]
    for key, title in GROUPS:
        g = result["groups"][key]
        lines.append(f"| {title} | {g['n']} | {_cell(g['mAP'])} | {_cell(g['rank-1'])} | {_cell(g['mINP'])} | "
                     f"{_cell(g['mflops'], 2)} | {_cell(g['mparams'], 3)} |")
    lines += ["", "| seed | searched mAP | random mAP | random median | rank of searched | NASWOT pick mAP | "
              "supernet mAP (searched; random) | Kendall τ (random) |", "|---|---|---|---|---|---|---|---|"]
    for r in result["seeds"]:
        randoms = ", ".join(f"{e['mAP']:.1f}" for e in r["random"]) or "–"
        supernet = r.get("supernet")
        sup = "–" if supernet is None else (f"{100 * supernet['searched']['mAP']:.1f}; "
                                            + ", ".join(f"{100 * x['mAP']:.1f}" for x in supernet["random"]))
        tau = (r.get("kendall_tau_random") or {}).get("tau")
        naswot = "–" if r.get("naswot") is None else f"{r['naswot']['mAP']:.1f}"
        lines.append(f"| {r['seed']} | {r['searched']['mAP']:.1f} | {randoms} | "
                     f"{r.get('random_median_mAP', float('nan')):.1f} | "
                     f"{r['rank']} of {r['of']} | {naswot} | {sup} | {_number(tau, 2)} |"
                     if "rank" in r else f"| {r['seed']} | – | {randoms} | – | – | {naswot} | {sup} | – |")
    pooled = result["kendall_tau"]["pooled_random"]
    goal = result["goal"]
    margin = goal["mean_over_random_mean"]
    tau = ("–" if not pooled or pooled["tau"] is None
           else f"{pooled['tau']:.2f} (p = {pooled['p']:.2f}, n = {pooled['n']})")
    lines += ["", "Kendall τ between the supernet's mAP (shared weights, BN recalibrated) and the retrained mAP of the "
                  f"random architectures, all seeds pooled: {tau}.",
              f"Searched beats the median random network in every seed: {goal['beats_median_every_seed']}; "
              f"searched − random mean: {'–' if margin is None else f'{margin:+.1f}'} mAP points (goal ≥ +1.0).",
              "", "| searched − | seeds | mean ± std (mAP points) | paired t | p (t) | p (Wilcoxon) |",
              "|---|---|---|---|---|---|"]
    titles = {"random": "random (its seed's mean)", "naswot": "NASWOT pick", "evolution": "NNI evolution pick",
              "baseline": "DCS-FB (fixed)"}
    for group, title in titles.items():
        test = result["paired"][group]
        if test["n"]:
            std = "" if test["std"] is None else f" ± {test['std']:.1f}"
            lines.append(f"| {title} | {test['n']} | {test['mean']:+.1f}{std} | {_number(test['t'], 2)} | "
                         f"{_number(test['p_t'], 3)} | {_number(test['p_wilcoxon'], 3)} |")
    return "\n".join(lines) + "\n"


def ensure_data(root: Path, preset: str, log: Callable[[str], None]) -> None:
    """Generate the synthetic preset into ``root`` unless it holds it (seed 0, as the demo)."""
    from dcsnas.data.synthetic import generate
    from dcsnas.demo import has_synthetic

    if not has_synthetic(root, preset, seed=0):
        log(f"generating the synthetic `{preset}` preset into {root}")
        generate(preset, 0, root, show_progress=False)


def _seeds(value: Optional[str], default: int) -> list[int]:
    """``--seeds``: a count S (seeds 0 … S−1) or a comma list."""
    from dcsnas.errors import ConfigError

    try:
        if value is None:
            return list(range(default))
        return [int(v) for v in value.split(",")] if "," in value else list(range(int(value)))
    except ValueError:
        raise ConfigError(f"--seeds {value}: expected a count (3) or a comma list of seeds (0,2,3)") from None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the `tiny` preset and the demo's quick recipes")
    parser.add_argument("--out", help="benchmark folder (default runs/search-vs-random[-quick])")
    parser.add_argument("--data", help="synthetic data folder (default data/synthetic-<preset>)")
    parser.add_argument("--seeds", help="S: seeds 0 … S−1 (default 3; --quick 1), or a comma list of seeds: 0,2,3")
    parser.add_argument("--random", type=int, help="random architectures per seed (default 4; --quick 2)")
    parser.add_argument("--band", type=float, default=0.05, help="FLOPs band around the searched network")
    parser.add_argument("--naswot", type=int, default=0, help="NASWOT pick among this many random architectures "
                        "per seed (e.g. 100; default 0: no NASWOT group)")
    parser.add_argument("--search-config", type=Path)
    parser.add_argument("--retrain-config", type=Path, help="recipe of the searched and random networks")
    parser.add_argument("--baseline-config", type=Path, help="the fixed baseline's training config")
    parser.add_argument("--nni-evolution", type=int, default=0, help="NNI regularized evolution over each seed's "
                        "supernet with this many trials (e.g. 100; default 0: no evolution group; needs NNI)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (its config's threads)")
    parser.add_argument("--score-worker", nargs=3, metavar=("SEARCH_RUN", "ARCHS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.score_worker:
        import torch

        from dcsnas.utils.io import atomic_write_json

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
        search_run, archs, out = map(Path, args.score_worker)
        result = supernet_scores(search_run, json.loads(archs.read_text()), out.with_suffix(".scratch"))
        atomic_write_json(out, result)
        return result

    defaults = QUICK if args.quick else FULL
    preset = defaults["preset"]
    out = Path(args.out or f"runs/search-vs-random{'-quick' * args.quick}").resolve()
    data = Path(args.data or f"data/synthetic-{preset}").resolve()
    configs = {k: (getattr(args, f"{k}_config") or defaults[k]).resolve() for k in ("search", "retrain", "baseline")}
    seeds = _seeds(args.seeds, defaults["seeds"])
    count = args.random if args.random is not None else defaults["random"]
    for flag, value in (("--naswot", args.naswot), ("--nni-evolution", args.nni_evolution)):
        if value < 0:
            parser.error(f"{flag} {value}: expected a count >= 0")
    bench = Bench(out, data, configs, seeds, count, args.band, args.jobs, args.threads, args.naswot,
                  args.nni_evolution)
    tic = time.perf_counter()
    ensure_data(data, preset, bench.log)
    jobs = bench.run()
    result = bench.results(jobs)
    info = {"preset": preset, "data": str(data), "out": str(out), "seeds": seeds, "random": count,
            "naswot": args.naswot, "nni_evolution": args.nni_evolution, "band": args.band, "jobs": args.jobs,
            "threads": args.threads,
            "configs": {k: str(v.relative_to(REPOSITORY)) if v.is_relative_to(REPOSITORY) else str(v)
                        for k, v in configs.items()},
            "seconds": round(time.perf_counter() - tic, 1)}
    result = {**info, **result}
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown(result, info))
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
