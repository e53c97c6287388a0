"""The end-to-end demo of ``dcsnas demo``: synthetic data, DCS-FB, a DCS-DNAS search, the retraining of
the derived network, and the comparison of the trained networks, in this process.

The budgets are the configs in the repository's ``experiments/demo/`` (``quick_*``: the ``tiny`` preset,
about one epoch a step). Every step writes a run directory under ``out``, named after the step (the names in
the comparison table). A step whose run directory holds its results is skipped, and one that was stopped
continues from its last checkpoint, so a killed demo started again goes on where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import dcsnas
from dcsnas.compare import compare_runs, format_table
from dcsnas.compare.runs import attention_label
from dcsnas.compare.table import si
from dcsnas.config import load_config
from dcsnas.data.synthetic import GENERATOR_VERSION, META_NAME, PRESETS, generate
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.lifecycle import RunRequest
from dcsnas.engine.rundir import RunDir, pipeline_step_state
from dcsnas.engine.trainer import Trainer
from dcsnas.errors import ConfigError
from dcsnas.models.arch import write_arch
from dcsnas.models.builder import arch_params
from dcsnas.nas.arch import load_arch_in_space
from dcsnas.nas.config import SearchConfig
from dcsnas.nas.search import Searcher

REPOSITORY = Path(dcsnas.__file__).resolve().parents[1]
DEMO_CONFIGS = REPOSITORY / "experiments" / "demo"
DEVICES = ("cpu",)  # where the comparison measures latency and memory: the demo's machine


@dataclass(frozen=True)
class Step:
    """One training or search run: ``name`` (its run directory under ``out``), ``kind`` (``train``,
    ``search`` or ``retrain``: the derived network of the preceding search) and its config file."""

    name: str
    kind: Literal["train", "search", "retrain"]
    config: str
    title: str


@dataclass(frozen=True)
class Plan:
    """The steps, the synthetic preset they train on, and the default data and output folders."""

    preset: str
    data: str
    out: str
    steps: tuple[Step, ...]

    @property
    def compared(self) -> list[Step]:
        return [s for s in self.steps if s.kind != "search"]


def demo_plan(quick: bool) -> Plan:
    """The steps of the full demo (``small`` preset) or of ``--quick`` (``tiny``)."""
    prefix = "quick_" if quick else ""
    steps = (
        Step("dcs-fb", "train", f"{prefix}dcsfb.yaml", "DCS-FB: MobileNetV2 with DCS-CSALR attention"),
        Step("mobilenetv2", "train", f"{prefix}baseline.yaml", "baseline: MobileNetV2 without attention"),
        Step("dcs-dnas-search", "search", f"{prefix}search.yaml", "DCS-DNAS: architecture search"),
        Step("dcs-dnas", "retrain", f"{prefix}retrain.yaml", "DCS-DNAS: retraining the derived network"),
    )
    preset = "tiny" if quick else "small"
    return Plan(preset, f"data/synthetic-{preset}", "runs/demo-quick" if quick else "runs/demo", steps)


def config_file(name: str) -> Path:
    """A demo config in the repository's ``experiments/demo``, with a clear error when it is missing."""
    path = DEMO_CONFIGS / name
    if not path.is_file():
        raise ConfigError(f"dcsnas demo reads its configs from the repository: '{path}' is missing. Install dcsnas "
                          "from a clone of the repository with `pip install -e .` so that experiments/ lies "
                          "next to the package")
    return path


def has_synthetic(root: Path, preset: str, seed: int) -> bool:
    """Whether ``root`` holds the complete synthetic data set ``preset`` generated with ``seed``."""
    try:
        meta = json.loads((root / META_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("version") == GENERATOR_VERSION and meta.get("complete") is True and meta.get("seed") == seed
            and meta.get("preset") == dataclasses.asdict(PRESETS[preset]))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:02.0f}s"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


class Demo:
    """Runs a :class:`Plan` into ``out`` with the data in ``data``; ``log`` prints a line."""

    def __init__(self, plan: Plan, out: str | Path, data: str | Path, show_progress: bool = True,
                 log: Callable[[str], None] = print):
        self.plan, self.out, self.data = plan, Path(out), Path(data)
        self.show_progress, self.log = show_progress, log

    def run(self) -> dict[str, Any]:
        """All steps, then the comparison; returns the comparison's report with ``seconds`` (per step and
        ``total``) added."""
        configs = {s.name: config_file(s.config) for s in self.plan.steps}  # every file checked before any work
        work: list[tuple[str, str, Callable[[], Any]]] = [
            ("data", f"synthetic data, preset {self.plan.preset} → {self.data}", self.prepare_data)]
        work += [(s.name, f"{s.title} ({configs[s.name].relative_to(REPOSITORY)})",
                  lambda s=s: self.run_step(s, configs[s.name])) for s in self.plan.steps]
        work.append(("compare", f"comparing {', '.join(s.name for s in self.plan.compared)}", self.compare))
        results, seconds, start = {}, {}, time.perf_counter()
        for i, (name, title, job) in enumerate(work, 1):
            self.log(f"[{i}/{len(work)}] {title}")
            tic = time.perf_counter()
            results[name] = job()
            seconds[name] = time.perf_counter() - tic
        return {**results["compare"], "seconds": {**seconds, "total": time.perf_counter() - start}}

    # ----------------------------------------------------------------------------------------- steps
    def prepare_data(self) -> None:
        if has_synthetic(self.data, self.plan.preset, seed=0):
            self.log("  already there (its synth_meta.json matches): skipped")
            return
        stats = generate(self.plan.preset, 0, self.data, show_progress=self.show_progress)
        self.log(f"  {stats['images']} images in {_duration(stats['seconds'])}")

    def load_step_config(self, step: Step, path: Path):
        """The step's config with the demo's data, and repository-relative search spaces made absolute."""
        overrides = [f"data.root={self.data.resolve()}"]
        if step.kind == "search":
            cfg = load_config(SearchConfig, path, overrides)
            cfg.search.space = str(REPOSITORY / cfg.search.space)  # an absolute path stays as it is
            return cfg
        if step.kind == "retrain":
            search = next(s for s in self.plan.steps if s.kind == "search")
            overrides += ["model.backbone=searched", f"model.arch={(self.out / search.name / 'arch.json').resolve()}"]
        return load_config(TrainConfig, path, overrides)

    def run_step(self, step: Step, path: Path) -> None:
        cfg = self.load_step_config(step, path)
        run = RunDir(self.out / step.name)
        state = pipeline_step_state(run, cfg, step.kind == "search", "demo")
        if state == "done":
            self.log(f"  {run.path} has its metrics.json: skipped")
        else:
            if state == "resume":
                self.log(f"  continuing the stopped run in {run.path} from its last checkpoint")
            # a folder without checkpoint holds a run stopped in its first epoch: --force moves it aside
            self.train(step, cfg, RunRequest(step.kind, run.path, resume=state == "resume", force=state == "new"))
        self.report(step, run)

    def train(self, step: Step, cfg, request: RunRequest) -> None:
        arch = load_arch_in_space(cfg.model.arch) if step.kind == "retrain" else None

        def build(run: RunDir):
            if arch is not None:
                write_arch(run.arch, arch)  # the architecture beside the run's config
            return (Searcher if step.kind == "search" else Trainer)(cfg, run, show_progress=self.show_progress)

        with request.start(cfg, build) as trainer:
            trainer.fit()

    def report(self, step: Step, run) -> None:
        """A line on the run's result: the test accuracy, or the derived network of a search."""
        metrics = json.loads(run.metrics.read_text())
        test, untrained = metrics["test"], metrics.get("untrained_test")
        line = f"  test mAP {_percent(test['mAP'])}, rank-1 {_percent(test['rank-1'])}"
        if step.kind == "search":
            arch = load_arch_in_space(run.arch)
            placed = [f"{s.name}: {attention_label(s.attention.name, s.attention.options)}"
                      for s in arch.stages if s.attention is not None]
            line = (f"  derived network: {arch.flops / 1e6:.2f} MFLOPs, {si(arch_params(str(run.arch)))} parameters, "
                    f"attention {', '.join(placed) or 'none'}")
        elif untrained:
            line += f" (untrained: mAP {_percent(untrained['mAP'])}"
            line += (": no better than the untrained network, too little training to mean anything)"
                     if test["mAP"] <= untrained["mAP"] else ")")
        epochs = metrics["epochs"]
        self.log(f"{line}, {epochs} epoch{'s' * (epochs != 1)} in {_duration(metrics['train_time_s'])}")

    def compare(self) -> dict[str, Any]:
        """:func:`~dcsnas.compare.compare_runs` of the trained runs into ``out/compare``; skipped when its
        compare.json is newer than every run's metrics.json (the table is then rebuilt from it)."""
        runs = [self.out / s.name for s in self.plan.compared]
        saved = self.out / "compare" / "compare.json"
        if saved.is_file() and all(saved.stat().st_mtime > (run / "metrics.json").stat().st_mtime for run in runs):
            report = json.loads(saved.read_text())
            if [row["path"] for row in report["rows"]] == [str(run) for run in runs]:
                self.log(f"  {saved} is newer than the runs: skipped")
                report["table"] = format_table(report["rows"], DEVICES, report["profile"]["repeats"] or None,
                                               report["profile"].get("noisy", ""))
                return report
        return compare_runs(runs, self.out / "compare", DEVICES)
