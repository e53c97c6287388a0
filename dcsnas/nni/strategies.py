"""``dcsnas search --strategy nni:*`` (DESIGN §6): NNI's NAS strategies on our search spaces, ending in
the same ``arch.json`` as the DCS-DNAS search (:func:`run_nni_search`).

Random and regularized evolution train each sampled architecture with
:class:`~dcsnas.nni.lightning.ReIDModule` (the engine's losses, our metrics; mAP reported to NNI), or with
``nni.evaluator: supernet`` score it by a trained DCS-DNAS supernet (:mod:`dcsnas.nni.supernet`), within a
FLOPs band with ``nni.target_mflops`` (:class:`~dcsnas.nni.space.FlopsBand`); DARTS and
GumbelDARTS train the one-shot supernet with it (weight steps on the weight split, architecture steps on the
architecture split of :func:`~dcsnas.nas.split.split_for_search`). All run in this process (NNI's sequential
engine), so no NNI manager or web UI is started.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from dcsnas.config import read_yaml, to_dict
from dcsnas.engine.rundir import RunDir
from dcsnas.errors import ConfigError
from dcsnas.models.arch import write_arch
from dcsnas.nas.arch import SPACE_FILE, derive_arch
from dcsnas.nas.cost import cached_costs
from dcsnas.nas.search import COST_FILE, search_info
from dcsnas.nas.space import parse_space
from dcsnas.nni.config import NNI_STRATEGIES, NNISearchConfig
from dcsnas.nni.deps import ModelStatus, NasExperiment, NasExperimentConfig, nni_quiet, strategy
from dcsnas.nni.lightning import ReIDEvaluator
from dcsnas.nni.space import ReIDSpace, sample_indices
from dcsnas.nni.summary import write_summary
from dcsnas.nni.supernet import SupernetEvaluator
from dcsnas.utils.io import atomic_write_text
from dcsnas.utils.seed import seed_everything

ONESHOT = ("nni:darts", "nni:gumbel-darts")


def _strategy(name: str, cfg: NNISearchConfig):
    nas = cfg.search
    if name == "nni:random":
        return strategy.Random(seed=cfg.seed)
    if name == "nni:evolution":
        return strategy.RegularizedEvolution(population_size=cfg.nni.population_size,
                                             sample_size=cfg.nni.sample_size, mutation_prob=cfg.nni.mutation_prob,
                                             seed=cfg.seed)
    darts = {"arc_learning_rate": nas.arch_lr, "warmup_epochs": nas.warmup_epochs}
    if name == "nni:darts":
        return strategy.DARTS(**darts)
    # NNI anneals linearly from the first to the second temperature; ours ends at tau_start · tau_decay^(E-1)
    return strategy.GumbelDARTS(temperature=(nas.tau_start, nas.tau_start * nas.tau_decay ** (cfg.optim.epochs - 1)),
                                **darts)


def _check_search(cfg: NNISearchConfig, strategy: str) -> None:
    if strategy not in NNI_STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r}; allowed: dcs, {', '.join(NNI_STRATEGIES)}")
    if cfg.loss.center_weight > 0:
        raise ConfigError("loss.center_weight > 0: the center loss needs its own optimizer, which NNI's one-shot "
                          "strategies do not allow; set loss.center_weight=0 for NNI strategies")
    if cfg.search.split != "per_identity":
        raise ConfigError("search.split = identity_disjoint: NNI's architecture steps use the full task loss, "
                          "which needs the classifier's identities; use search.split=per_identity")
    if strategy in ONESHOT and (cfg.nni.evaluator == "supernet" or cfg.nni.target_mflops is not None):
        raise ConfigError(f"nni.evaluator = supernet and nni.target_mflops apply to nni:random and nni:evolution, "
                          f"not to the one-shot {strategy}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("dcsnas search --strategy nni:* runs in a single process; start it without torchrun")
    epochs = cfg.nni.trial_epochs or cfg.optim.epochs  # of a trial; τ and the IB warm-up follow them
    if strategy not in ONESHOT and cfg.loss.ib_weight > 0 and cfg.loss.ib_start_epoch(epochs) >= epochs:
        raise ConfigError(f"nni.trial_epochs = {epochs}: the IB term starts at epoch "
                          f"{cfg.loss.ib_start_epoch(epochs)} (loss.ib_warmup_epochs / ib_warmup_ratio), so no "
                          "trial would train with it; raise nni.trial_epochs or lower the warm-up")
    if strategy not in ONESHOT and cfg.nni.evaluator == "train" and cfg.eval.val_identities == 0:
        warnings.warn("eval.val_identities = 0: the architectures are ranked by their test-split mAP; hold out "
                      "identities for validation with eval.val_identities")
    if cfg.search.cost.kind != "none":
        warnings.warn(f"search.cost.kind = {cfg.search.cost.kind}: NNI's strategies search without a cost term "
                      "(compare the FLOPs in arch.json instead)")


def run_nni_search(cfg: NNISearchConfig, run: RunDir, strategy: str, show_progress: bool = True) -> dict[str, Any]:
    """Run NNI's ``strategy`` (one of :data:`~dcsnas.nni.config.NNI_STRATEGIES`) on ``cfg.search.space`` into
    the run directory: NNI's experiment in ``nni/``, ``arch.json`` (the best architecture), ``space.yaml``,
    ``metrics.json`` and, for multi-trial strategies, the trials summary. Returns the metrics."""
    _check_search(cfg, strategy)
    seed_everything(cfg.seed)
    space_file = Path(cfg.search.space)
    if cfg.nni.evaluator == "supernet":  # the supernet's own space: its weights are that space's
        space_file = Path(cfg.nni.supernet) / SPACE_FILE
        if not space_file.is_file():
            raise ConfigError(f"nni.supernet = '{cfg.nni.supernet}': not the run directory of a search "
                              f"({SPACE_FILE} is missing)")
    space_data = read_yaml(space_file)
    space = parse_space(space_data, str(space_file))
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.path / SPACE_FILE, space_file.read_text())
    oneshot = strategy in ONESHOT
    with nni_quiet():
        if cfg.nni.evaluator == "supernet":
            evaluator = SupernetEvaluator.from_run(cfg.nni.supernet, run.path)
            num_classes, costs = evaluator.searcher.data.num_classes, evaluator.searcher.costs
        else:
            evaluator = ReIDEvaluator(to_dict(cfg), str(run.path), oneshot, show_progress)
            num_classes = evaluator.datamodule.num_classes
            costs = cached_costs(space, (cfg.data.transforms.height, cfg.data.transforms.width),
                                 run.path / COST_FILE)
        band = None if cfg.nni.target_mflops is None else (costs, cfg.nni.target_mflops * 1e6, cfg.nni.flops_band)
        model_space = ReIDSpace(space_data, num_classes, cfg.head, band)
        config = NasExperimentConfig("sequential", "raw" if oneshot else "simplified",
                                     experiment_working_directory=str((run.path / "nni").resolve()),
                                     max_trial_number=cfg.nni.max_trials)
        experiment = NasExperiment(model_space, evaluator, _strategy(strategy, cfg), config)
        experiment.run()
        top = experiment.export_top_models(formatter="dict")
        if not top:
            experiment.stop()
            band = ("" if cfg.nni.target_mflops is None else f" (or none lies within ±{100 * cfg.nni.flops_band:g} % "
                    f"of nni.target_mflops = {cfg.nni.target_mflops}: widen nni.flops_band)")
            raise ConfigError(f"{strategy}: no architecture was evaluated{band}; log: {run.path / 'nni'}")
        sample = top[0]
        details = (_oneshot_details(experiment) if oneshot else
                   _trials(experiment.strategy.list_models(sort=False, limit=None)))
        experiment.stop()
    if cfg.nni.evaluator == "supernet":
        evaluator.close()
    arch = derive_arch(space, sample_indices(space, sample), costs,
                       {**search_info(cfg, space), "strategy": strategy, "nni_experiment": experiment.id,
                        **({"supernet": str(cfg.nni.supernet)} if cfg.nni.evaluator == "supernet" else {})})
    write_arch(run.arch, arch)
    metrics = {"strategy": strategy, "arch": {"path": str(run.arch), "flops": arch.flops, "params": arch.params},
               "sample": sample, **details}
    if not oneshot:
        summary = write_summary(run.path, details["trials"], "mAP")
        metrics["best"] = summary["best"]
    run.write_metrics(metrics)
    return metrics


def _oneshot_details(experiment) -> dict[str, Any]:
    """The supernet's choice probabilities and its last evaluation."""
    module = experiment.strategy.oneshot_module
    probabilities = {label: {str(k): v for k, v in dist.items()} for label, dist in module.export_probs().items()}
    result = module.training_module.result
    return {"probabilities": probabilities,
            "supernet_eval": None if result is None else {k: v for k, v in result.items() if k != "cmc"}}


def _trials(models) -> dict[str, Any]:
    """The architectures a multi-trial strategy trained, in order, with their mAP."""
    def status(model) -> str:
        return "SUCCEEDED" if model.status == ModelStatus.Trained else model.status.value.upper()

    return {"trials": [{"trial": i + 1, "status": status(m), "params": dict(m.sample), "metric": m.metric,
                        "intermediate": list(m.metrics.intermediates)} for i, m in enumerate(models)]}
