"""``dcsnas tune`` (DESIGN §6): an NNI hyper-parameter experiment (:func:`run_tune`) whose trials run
``python -m dcsnas.nni.tune trial ...`` (:func:`run_trial`, :func:`main`): a ``dcsnas train``/``retrain``
run that reports its metric to NNI after every evaluation and at the end.

NNI 3.0's manager (Node.js) serves its REST API and web UI on all interfaces, without authentication; with
``bind: loopback`` (the default) a ``--require`` preload in ``NODE_OPTIONS`` patches Node's
``net.Server.prototype.listen`` while the manager starts, so that its servers bind to 127.0.0.1 only
(:func:`_manager_environment`). NNI has no setting for the address it listens on, hence the patch.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import yaml

from dcsnas.config import load_config, to_dict
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.rundir import RunDir, create_run_dir
from dcsnas.engine.trainer import Trainer
from dcsnas.errors import ConfigError
from dcsnas.models.arch import load_arch, write_arch
from dcsnas.nni.config import TuneConfig, check_trial_keys
from dcsnas.nni.deps import Experiment, ExperimentConfig, nni, nni_quiet
from dcsnas.nni.summary import write_summary

_LOOPBACK_JS = """// dcsnas: the NNI manager's servers listen on loopback (127.0.0.1) only.
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  else if (args[0] && typeof args[0] === 'object' && args[0].port !== undefined && !args[0].host)
    args[0] = Object.assign({}, args[0], {host: '127.0.0.1'});
  return listen.apply(this, args);
};
"""
_POLL_S = 1.0


def _free_port() -> int:
    """A port p with p and p + 1 free on loopback (NNI's manager takes both)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


@contextmanager
def _manager_environment(folder: Path, loopback: bool) -> Iterator[None]:
    """While the NNI manager (Node.js) starts: with ``loopback``, ``NODE_OPTIONS`` preloads a script that
    binds its servers to 127.0.0.1 (NNI 3.0 listens on all interfaces, without authentication)."""
    previous = os.environ.get("NODE_OPTIONS")
    if loopback:
        script = folder / "loopback.js"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(_LOOPBACK_JS)
        os.environ["NODE_OPTIONS"] = " ".join(filter(None, [previous, f'--require "{script}"']))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("NODE_OPTIONS", None)
        else:
            os.environ["NODE_OPTIONS"] = previous


def _yaml_value(value: Any) -> str:
    """A tuner value as the text of a ``--set`` override (YAML reads ``1e-05`` as a string, ``1.0e-05`` not)."""
    return yaml.safe_dump(value, default_flow_style=True).split("\n...")[0].strip()


def _trial_config(command: str, config: str, arch: Optional[str], overrides: list[str], params: dict[str, Any]):
    """The :class:`~dcsnas.engine.config.TrainConfig` of a trial: the base config, ``retrain``'s searched
    backbone, the overrides, then the tuner's values."""
    searched = ["model.backbone=searched", f"model.arch={Path(arch).resolve()}"] if command == "retrain" else []
    return load_config(TrainConfig, config, [*searched, *overrides,
                                             *(f"{k}={_yaml_value(v)}" for k, v in params.items())])


def _probe(spec: dict[str, Any]) -> Any:
    """A value of an NNI search-space entry, to check that the trial config accepts its type."""
    value = spec["_value"][0]
    return value if spec["_type"] == "choice" else int(value) if spec["_type"] == "randint" else float(value)


def _trial_command(cfg: TuneConfig) -> str:
    """The command line NNI starts every trial with (:func:`main` of this module)."""
    python = cfg.trial_python or (sys.executable if cfg.training_service["platform"] == "local" else "python3")
    words = [python, "-m", "dcsnas.nni.tune", "trial", cfg.command, "--config", cfg.config,
             "--metric", cfg.metric]
    if cfg.arch is not None:
        words += ["--arch", cfg.arch]
    for override in cfg.set:
        words += ["--set", override]
    return shlex.join(words)


def _training_service(cfg: TuneConfig, command: str) -> dict[str, Any]:
    """NNI's training-service mapping of ``cfg``; on Kubernetes (kubeflow, frameworkcontroller) every role
    without a ``command`` gets the trial command (and kubeflow roles the code directory ``.``)."""
    service = copy.deepcopy(cfg.training_service)
    platform = service["platform"]
    roles = ([service.get(k) for k in ("worker", "master", "ps")] if platform == "kubeflow" else
             service.get("task_roles", service.get("taskRoles", [])) if platform == "frameworkcontroller" else [])
    for role in (r for r in roles if isinstance(r, dict)):
        keys = {k.replace("_", "").lower() for k in role}
        if "command" not in keys:
            role["command"] = command
        if platform == "kubeflow" and "codedirectory" not in keys:
            role["code_directory"] = "."
    return service


def experiment_config(cfg: TuneConfig, name: str, folder: Path):
    """NNI's ``ExperimentConfig`` of ``cfg`` (validated by NNI), with its experiment directory in ``folder``."""
    command = _trial_command(cfg)
    try:
        config = ExperimentConfig(
            experiment_name=name, trial_command=command, trial_code_directory=str(Path.cwd()),
            search_space=cfg.search_space, tuner=to_dict(cfg.tuner), max_trial_number=cfg.max_trials,
            trial_concurrency=cfg.concurrency, max_experiment_duration=cfg.max_duration,
            experiment_working_directory=str(folder), nni_manager_ip=cfg.nni_manager_ip,
            training_service=_training_service(cfg, command))
        config.validate()
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(f"tune config: NNI rejects the experiment settings: {exc}") from None
    return config


def run_tune(cfg: TuneConfig, run: RunDir) -> dict[str, Any]:
    """Run the hyper-parameter experiment of ``cfg``: NNI's experiment directory in ``run/nni``, its trials'
    run directories inside it; then the summary (``summary.json``, ``trials.csv``, ``summary.md``) and
    ``metrics.json`` in ``run``. Trials run from the current directory (NNI's trial code directory), where
    relative paths of the config resolve. Returns the summary."""
    check_trial_keys(cfg, TrainConfig)
    probe = _trial_config(cfg.command, cfg.config, cfg.arch, cfg.set,
                          {k: _probe(spec) for k, spec in cfg.search_space.items()})
    if probe.eval.val_identities == 0:
        warnings.warn("eval.val_identities = 0: the trials report their test-split metric, so the tuner selects "
                      "on the test set; hold out identities for validation with eval.val_identities")
    folder = (run.path / "nni").resolve()
    config = experiment_config(cfg, run.path.name, folder)
    port = cfg.port or _free_port()
    experiment = Experiment(config)
    with nni_quiet():
        with _manager_environment(folder, cfg.bind == "loopback"):
            experiment.start(port)
        if cfg.webui:
            host = "127.0.0.1" if cfg.bind == "loopback" else cfg.nni_manager_ip or "<this machine>"
            print(f"dcsnas: NNI web UI at http://{host}:{port} while the experiment runs", file=sys.stderr)
        try:
            while experiment.get_status() not in ("DONE", "STOPPED", "ERROR"):
                time.sleep(_POLL_S)
            status = experiment.get_status()
            trials = _tune_trials(experiment)
        finally:
            experiment.stop()
    summary = write_summary(run.path, trials, cfg.metric)
    run.write_metrics({"experiment": experiment.id, "status": status, "metric": cfg.metric, "best": summary["best"],
                       "num_trials": summary["num_trials"], "num_succeeded": summary["num_succeeded"]})
    return summary


def _tune_trials(experiment) -> list[dict[str, Any]]:
    """Every trial of a running HPO experiment: parameters, status, reported metrics, run directory."""
    metrics = experiment.get_job_metrics()
    trials = []
    for job in experiment.list_trial_jobs():
        data = metrics.get(job.trialJobId, [])
        final = next((m.data for m in data if m.type == "FINAL"), None)
        params = job.hyperParameters[-1].parameters if job.hyperParameters else {}
        trials.append({"trial": job.trialJobId, "status": job.status, "params": params,
                       "metric": final.get("default") if isinstance(final, dict) else final,
                       "intermediate": [m.data for m in data if m.type == "PERIODICAL"],
                       "run": final.get("run") if isinstance(final, dict) else None})
    return trials


class TrialReporter:
    """The evaluator of a trial's loop: ``evaluate(split)``, whose ``metric`` on ``split`` (the selection
    split: validation when there is one, else test) goes to ``nni.report_intermediate_result``; the last is
    :attr:`reported`."""

    def __init__(self, evaluate: Callable[..., dict], split: str, metric: str):
        self.evaluate, self.split, self.metric, self.reported = evaluate, split, metric, None

    def __call__(self, split: str = "test", show_progress: Optional[bool] = None) -> dict:
        result = self.evaluate(split, show_progress)
        if split == self.split:
            self.reported = result[self.metric]
            nni.report_intermediate_result(self.reported)
        return result


def run_trial(command: str, config: str, arch: Optional[str], overrides: list[str], metric: str) -> dict[str, Any]:
    """One trial of ``dcsnas tune``: ``dcsnas train``/``retrain`` of the config with the tuner's values, into
    ``$NNI_OUTPUT_DIR/run`` (``runs/`` outside NNI); ``metric`` goes to NNI after every evaluation (on the
    validation split when there is one, else the test split) and, with the run directory, at the end."""
    params = nni.get_next_parameter() or {}
    cfg = _trial_config(command, config, arch, overrides, params)
    output = os.environ.get("NNI_OUTPUT_DIR")
    run = create_run_dir(Path(output) / "run" if output else None, command, cfg)
    if arch is not None:
        write_arch(run.arch, load_arch(arch))
    trainer = Trainer(cfg, run, show_progress=False)
    reporter = TrialReporter(trainer.evaluate, "val" if trainer.data.val_split is not None else "test", metric)
    trainer.loop.evaluate = reporter
    trainer.fit()
    final = {"default": reporter.reported, "run": str(run.path.resolve())}
    nni.report_final_result(final)
    return final


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m dcsnas.nni.tune trial {train,retrain} --config FILE [--arch FILE] [--set K=V ...]
    [--metric M]``: the trial command of ``dcsnas tune``."""
    parser = argparse.ArgumentParser(prog="python -m dcsnas.nni.tune")
    sub = parser.add_subparsers(dest="action", required=True)
    trial = sub.add_parser("trial", help="one trial of dcsnas tune (started by NNI)")
    trial.add_argument("command", choices=("train", "retrain"))
    trial.add_argument("--config", required=True)
    trial.add_argument("--arch")
    trial.add_argument("--set", dest="overrides", action="append", default=[])
    trial.add_argument("--metric", default="mAP")
    args = parser.parse_args(argv)
    try:
        run_trial(args.command, args.config, args.arch, args.overrides, args.metric)
    except ConfigError as exc:
        print(f"dcsnas: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
