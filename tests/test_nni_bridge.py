"""The NNI package (dcsnas.nni): model spaces of our search-space files, NNI's strategies ending in
arch.json, the trials of dcsnas tune and the NNI manager's loopback binding. Skipped where NNI is not installed."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nni", reason="NNI 3.0 is not installed")

from nni.mutable import SampleValidationError  # noqa: E402  (after importorskip)
from nni.nas.space import SimplifiedModelSpace  # noqa: E402

from dcsnas.cli import main as cli_main
from dcsnas.config import load_config, read_yaml, to_dict
from dcsnas.engine.rundir import create_run_dir
from dcsnas.errors import ConfigError
from dcsnas.models.arch import load_arch, write_arch
from dcsnas.models.builder import ModelConfig, create_model
from dcsnas.models.searched import build_searched_backbone
from dcsnas.nas.arch import derive_arch
from dcsnas.nas.cost import measure_costs
from dcsnas.nas.space import load_space
from dcsnas.nni import tune as nni_tune
from dcsnas.nni.config import NNISearchConfig, TuneConfig
from dcsnas.nni.lightning import ReIDModule
from dcsnas.nni.space import ReIDSpace, sample_indices
from dcsnas.nni.strategies import run_nni_search

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
INPUT = (64, 32)


def tiny_space() -> ReIDSpace:
    return ReIDSpace(read_yaml(SPACES / "tiny.yaml"), num_classes=8)


@pytest.mark.parametrize("name", ["tiny", "resnet50_attention"])
def test_model_space_has_one_mutable_per_choice_with_the_same_candidates(name):
    space = load_space(SPACES / f"{name}.yaml")
    mutables = ReIDSpace(read_yaml(SPACES / f"{name}.yaml"), num_classes=8).simplify()
    expected = {c.key: c.labels for c in space.choices() if c.searchable}
    assert {label: tuple(map(str, m.values)) for label, m in mutables.items()} == expected


@pytest.mark.parametrize("seed, attention", [(0, "csalr-g2"), (1, "dcs-csalr-g2"), (2, "none")])
def test_a_sampled_model_is_the_network_retrain_builds(tmp_path, seed, attention):
    """NNI's frozen model and the network ``retrain`` builds from the arch.json of the same sample hold the
    same tensors (every key of one maps to a key of the other, same shape) and, with the frozen model's
    weights copied, compute the same outputs."""
    space, model_space = load_space(SPACES / "tiny.yaml"), tiny_space()
    rng = random.Random(seed)
    sample = {label: rng.choice(m.values) for label, m in model_space.simplify().items()}
    sample["s2/attention"] = attention
    torch.manual_seed(seed)
    frozen = model_space.freeze(sample).double().eval()
    with torch.no_grad():  # non-trivial weights: BN statistics and affine parameters, acting attention
        for name, module in frozen.named_modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.5, 0.5)
            if name.endswith(".gate"):
                module.weight.normal_(0.0, 1.0), module.bias.zero_()
            if hasattr(module, "gamma"):
                module.gamma.fill_(0.7)
    arch_path = tmp_path / "arch.json"
    write_arch(arch_path, derive_arch(space, sample_indices(space, sample), measure_costs(space, INPUT), {}))
    reference = create_model(ModelConfig(backbone="searched", arch=str(arch_path)), 8).double().eval()
    source = frozen.state_dict()  # the frozen model holds the derived network's modules at its positions
    mapped = {k: f"model.{k}" for k in reference.state_dict()}
    assert sorted(mapped.values()) == sorted(source)
    reference.load_state_dict({k: source[v] for k, v in mapped.items()})
    x = torch.randn(2, 3, *INPUT, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), reference(x), rtol=1e-9, atol=1e-9)
    assert list(reference.attentions) == ([] if attention == "none" else ["s2"])
    assert all(m.gamma.item() == 0.7 for m in reference.attentions.values())  # the attention acts


@pytest.mark.parametrize("strategy", ["DARTS", "GumbelDARTS"])
def test_one_shot_supernet_gives_every_choice_a_gradient_and_exports_all(strategy):
    from nni.nas import strategy as strategies

    supernet = getattr(strategies, strategy)().mutate_model(tiny_space()).train()
    out = supernet(torch.randn(4, 3, *INPUT))
    (out["logits"][0].logsumexp(1).mean() + out["features"].pow(2).mean()).backward()
    alphas = {id(p): p for m in supernet.modules() if hasattr(m, "arch_parameters") for p in m.arch_parameters()}
    assert alphas and all(p.grad is not None and p.grad.abs().sum() > 0 for p in alphas.values())
    exported: dict = {}
    for module in supernet.modules():
        if hasattr(module, "export"):
            exported.update(module.export(exported))
    space = load_space(SPACES / "tiny.yaml")
    assert set(exported) == {c.key for c in space.choices() if c.searchable}
    assert set(sample_indices(space, exported)) == {c.key for c in space.choices()}


def test_one_shot_attention_computes_the_derived_attention_at_every_width():
    """In NNI's one-shot supernet every attention candidate of s2 exists at every width option w as the module
    the derived network builds (same tensors), and with the width weights one-hot on w (input channels >= w
    zero) the supernet's attention computes that module on the leading w channels, zero beyond."""
    from nni.nas import strategy as strategies

    from dcsnas.attention import create_attention

    space = load_space(SPACES / "tiny.yaml")
    candidates = [c for c in next(c for c in space.choices() if c.key == "s2/attention").options if c is not None]
    widths = next(c for c in space.choices() if c.key == "s2/width").options  # (12, 16)
    torch.manual_seed(0)
    supernet = strategies.DARTS().mutate_model(tiny_space()).double().eval()
    with torch.no_grad():
        for name, p in supernet.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.7)
    mixed = [m for m in supernet.modules() if getattr(m, "widths", None) == [("s2/width", widths)]]
    assert len(mixed) == len(candidates)
    found = set()
    for m in mixed:
        for sub in m.body.modules():
            shapes = {k: v.shape for k, v in sub.state_dict().items()}
            for c in candidates:
                for j, w in enumerate(widths):
                    child = create_attention(c.name, w, **c.options).double().eval()
                    if shapes != {k: v.shape for k, v in child.state_dict().items()}:
                        continue
                    child.load_state_dict(sub.state_dict())
                    x = torch.randn(2, max(widths), 4, 4, dtype=torch.float64)
                    x[:, w:] = 0
                    with torch.no_grad():
                        y = m.body(x, torch.eye(len(widths), dtype=torch.float64)[j])
                        expected, _ = child(x[:, :w])
                    torch.testing.assert_close(y[:, :w], expected, rtol=1e-9, atol=1e-9)
                    assert (y[:, w:] == 0).all()
                    found.add((c.label, w))
    assert found == {(c.label, w) for c in candidates for w in widths}, found


def test_sample_indices_names_a_missing_choice():
    space = load_space(SPACES / "tiny.yaml")
    with pytest.raises(ValueError, match="s1/width"):
        sample_indices(space, {})


def search_config(tiny_data: Path, *overrides: str) -> NNISearchConfig:
    return load_config(NNISearchConfig, ROOT / "experiments/cpu/nni_random_tiny.yaml",
                       [f"data.root={tiny_data}", f"search.space={SPACES / 'tiny.yaml'}", "optim.epochs=1",
                        "nni.max_trials=2", "nni.trial_epochs=1", "search.warmup_epochs=0", *overrides])


@pytest.mark.parametrize("strategy", ["nni:random", "nni:evolution", "nni:darts", "nni:gumbel-darts"])
def test_nni_search_writes_an_arch_json_that_retrain_builds(tiny_data, tmp_path, strategy):
    cfg = search_config(tiny_data, "nni.population_size=2", "nni.sample_size=1", "loss.ib_weight=0.1",
                        "loss.ib_warmup_epochs=0")
    run = create_run_dir(tmp_path / "run", "search", cfg)
    metrics = run_nni_search(cfg, run, strategy, show_progress=False)
    arch = load_arch(run.arch)
    assert arch.search["strategy"] == strategy and arch.input_size == list(INPUT)
    backbone = build_searched_backbone(arch)
    assert backbone(torch.randn(1, 3, *INPUT)).shape[1] == arch.head_channels
    space = load_space(SPACES / "tiny.yaml")
    expected = derive_arch(space, sample_indices(space, metrics["sample"]), measure_costs(space, INPUT), arch.search)
    assert to_dict(expected) == to_dict(arch)
    assert json.loads(run.metrics.read_text())["strategy"] == strategy
    assert (run.path / "nni").is_dir()
    if strategy in ("nni:random", "nni:evolution"):
        summary = json.loads((run.path / "summary.json").read_text())
        assert summary["num_trials"] == 2 and summary["best"]["params"] == metrics["sample"]
        assert (run.path / "trials.csv").read_text().count("\n") == 3
    else:
        assert set(metrics["probabilities"]) == {c.key for c in space.choices() if c.searchable}


def test_nni_trials_draw_new_pk_batches_every_epoch(tiny_data, tmp_path, monkeypatch):
    """The P×K sampler's epoch advances in NNI's training as in the Trainer: the batches of epoch 2 are not
    those of epoch 1 (a sampler left at epoch 0 repeats them)."""
    seen: dict[int, list] = {}
    step = ReIDModule.training_step

    def recording(self, batch, batch_idx):
        seen.setdefault(self.trainer.current_epoch, []).append(batch[1].tolist())
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ReIDModule, "training_step", recording)
    cfg = search_config(tiny_data, "nni.max_trials=1", "nni.trial_epochs=2")
    run_nni_search(cfg, create_run_dir(tmp_path / "run", "search", cfg), "nni:random", show_progress=False)
    assert sorted(seen) == [0, 1] and len(seen[0]) == len(seen[1]) > 0
    assert seen[0] != seen[1]


def test_nni_trials_too_short_for_the_ib_warm_up_are_rejected(tiny_data, tmp_path):
    cfg = search_config(tiny_data, "optim.epochs=4", "loss.ib_weight=0.1", "loss.ib_warmup_epochs=2",
                        "nni.trial_epochs=2")
    with pytest.raises(ConfigError, match="nni.trial_epochs"):
        run_nni_search(cfg, create_run_dir(tmp_path / "run", "search", cfg), "nni:random", show_progress=False)


@pytest.mark.slow
def test_retrain_command_accepts_the_nni_arch(tiny_data, tmp_path):
    cfg = search_config(tiny_data)
    run = create_run_dir(tmp_path / "search", "search", cfg)
    run_nni_search(cfg, run, "nni:darts", show_progress=False)
    code = cli_main(["retrain", "--arch", str(run.arch), "--config", str(ROOT / "experiments/cpu/tiny_test.yaml"),
                     "--set", f"data.root={tiny_data}", "--set", "optim.epochs=1", "--set", "device=cpu",
                     "--set", "model.attention=[]", "--out", str(tmp_path / "retrain"), "--no-progress"])
    assert code == 0 and (tmp_path / "retrain" / "metrics.json").is_file()


def test_search_command_runs_an_nni_strategy(tiny_data, tmp_path, capsys):
    """``dcsnas search --strategy nni:*`` (the dispatch in dcsnas/commands/search.py)."""
    config = str(ROOT / "experiments/cpu/nni_random_tiny.yaml")
    common = ["--set", f"data.root={tiny_data}", "--set", f"search.space={SPACES / 'tiny.yaml'}",
              "--set", "nni.max_trials=1", "--set", "nni.trial_epochs=1", "--no-progress"]
    assert cli_main(["search", "--strategy", "nni:random", "--config", config, "--out", str(tmp_path / "run"),
                     *common]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["strategy"] == "nni:random" and load_arch(printed["arch"]).search["strategy"] == "nni:random"
    assert cli_main(["search", "--strategy", "nni:random", "--config", config, "--out", str(tmp_path / "run"),
                     "--resume", *common]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, message", [
    (["loss.center_weight=0.0005"], "center_weight"),
    (["search.split=identity_disjoint"], "identity_disjoint"),
])
def test_nni_search_rejects_what_nni_cannot_train(tiny_data, tmp_path, overrides, message):
    cfg = search_config(tiny_data, *overrides)
    with pytest.raises(ConfigError, match=message):
        run_nni_search(cfg, create_run_dir(tmp_path / "run", "search", cfg), "nni:darts", show_progress=False)


def test_trial_applies_the_tuners_values_and_reports_each_evaluation(tiny_data, tmp_path, monkeypatch):
    reports = []
    monkeypatch.setattr(nni_tune.nni, "get_next_parameter", lambda: {"optim.lr": 1e-05, "loss.ib_weight": 0.5})
    monkeypatch.setattr(nni_tune.nni, "report_intermediate_result", lambda v: reports.append(("intermediate", v)))
    monkeypatch.setattr(nni_tune.nni, "report_final_result", lambda v: reports.append(("final", v)))
    monkeypatch.setenv("NNI_OUTPUT_DIR", str(tmp_path / "trial"))
    final = nni_tune.run_trial("train", str(ROOT / "experiments/cpu/tiny_test.yaml"), None,
                                 [f"data.root={tiny_data}", "device=cpu", "optim.epochs=2", "eval.every=1",
                                  "eval.val_identities=4", "loss.ib_warmup_epochs=1"], "mAP")
    assert [kind for kind, _ in reports] == ["intermediate", "intermediate", "final"]
    assert reports[-1][1] == final and final["default"] == reports[1][1]
    saved = read_yaml(Path(final["run"]) / "config.yaml")
    assert saved["optim"]["lr"] == 1e-05 and saved["loss"]["ib_weight"] == 0.5
    assert Path(final["run"]) == tmp_path / "trial" / "run"
    history = json.loads((Path(final["run"]) / "metrics.json").read_text())["history"]
    assert [h["val"]["mAP"] for h in history] == [v for kind, v in reports[:2]]


def test_trial_command_runs_the_bridge_with_the_tune_settings():
    cfg = TuneConfig(config="experiments/cpu/tiny_test.yaml", command="retrain", arch="runs/x/arch.json",
                     set=["optim.epochs=1", "data.root=my data"], search_space={"optim.lr": {
                         "_type": "loguniform", "_value": [1e-4, 1e-2]}})
    command = nni_tune._trial_command(cfg)
    assert " -m dcsnas.nni.tune trial retrain --config experiments/cpu/tiny_test.yaml --metric mAP " \
           "--arch runs/x/arch.json --set optim.epochs=1 --set 'data.root=my data'" in command


def test_tune_reads_each_trials_parameters_metrics_and_run_from_the_manager():
    from nni.experiment import TrialJob, TrialMetricData

    def metric(job: str, kind: str, value) -> TrialMetricData:
        return TrialMetricData(0, job, 0, kind, 0, json.dumps(json.dumps(value)))

    class Manager:  # what NNI's REST API answers, through NNI's own data classes
        def list_trial_jobs(self):
            parameters = json.dumps({"parameter_id": 0, "parameter_source": "algorithm",
                                     "parameters": {"optim.lr": 0.01}, "parameter_index": 0})
            return [TrialJob("A", "SUCCEEDED", 0, 0, hyperParameters=[parameters]),
                    TrialJob("B", "FAILED", 0, 1, hyperParameters=[parameters])]

        def get_job_metrics(self):
            return {"A": [metric("A", "PERIODICAL", 0.25), metric("A", "PERIODICAL", 0.5),
                          metric("A", "FINAL", {"default": 0.5, "run": "/runs/a"})]}

    assert nni_tune._tune_trials(Manager()) == [
        {"trial": "A", "status": "SUCCEEDED", "params": {"optim.lr": 0.01}, "metric": 0.5,
         "intermediate": [0.25, 0.5], "run": "/runs/a"},
        {"trial": "B", "status": "FAILED", "params": {"optim.lr": 0.01}, "metric": None, "intermediate": [],
         "run": None}]


@pytest.mark.parametrize("name", ["remote", "kubeflow", "frameworkcontroller"])
def test_training_service_examples_are_valid_nni_experiments(name, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HOME", str(tmp_path))  # the remote example's SSH key file
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519").write_text("key")
    cfg = load_config(TuneConfig, ROOT / f"experiments/tune/{name}.yaml")
    trial = nni_tune._trial_config(cfg.command, cfg.config, cfg.arch, cfg.set,
                                     {k: nni_tune._probe(v) for k, v in cfg.search_space.items()})
    assert trial.eval.val_identities > 0
    service = nni_tune.experiment_config(cfg, name, tmp_path / "nni").training_service
    assert service.platform == name
    roles = [service.worker] if name == "kubeflow" else getattr(service, "task_roles", [])
    assert all(" -m dcsnas.nni.tune trial train --config " in role.command for role in roles)


def test_tuner_values_become_typed_overrides():
    assert [nni_tune._yaml_value(v) for v in (1e-05, 0.5, 3, "adam", True)] == ["1.0e-05", "0.5", "3", "adam",
                                                                                  "true"]


def test_manager_preload_binds_servers_to_loopback(tmp_path):
    import nni_node

    node = Path(nni_node.__path__[0]) / "node"
    server = "const s = require('http').createServer(); s.listen(0, () => { console.log(s.address().address); " \
             "s.close(); });"
    with nni_tune._manager_environment(tmp_path, loopback=True):
        import os

        env = dict(os.environ)
    out = subprocess.run([str(node), "-e", server], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "127.0.0.1"
    default = subprocess.run([str(node), "-e", server], capture_output=True, text=True, timeout=60, check=True)
    assert default.stdout.strip() != "127.0.0.1"


@pytest.mark.slow
def test_tune_runs_three_trials_and_writes_the_summary(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = cli_main(["tune", "--config", "experiments/cpu/tune_tiny.yaml", "--out", str(tmp_path / "tune"),
                     "--set", ("set=[device=cpu,optim.epochs=1,eval.every=1,eval.val_identities=4,"
                               f"loss.ib_warmup_epochs=0,data.root={tiny_data}]")])
    assert code == 0
    summary = json.loads((tmp_path / "tune" / "summary.json").read_text())
    assert summary["num_trials"] == 3 and summary["num_succeeded"] == 3
    assert summary["best"]["metric"] == max(t["metric"] for t in summary["trials"])
    assert set(summary["best"]["params"]) == {"loss.ib_weight", "schedule.dcs_tau_end", "optim.lr"}
    assert Path(summary["best"]["run"]).is_relative_to(tmp_path / "tune" / "nni")
    assert (tmp_path / "tune" / "trials.csv").read_text().count("\n") == 4
    assert (tmp_path / "tune" / "summary.md").is_file() and (tmp_path / "tune" / "metrics.json").is_file()


@pytest.mark.parametrize("override", ["search.sampling=sandwich", "search.op_weights=nested"])
def test_an_nni_search_refuses_the_dcs_weight_step_keys(tiny_data, override):
    """NNI's strategies train their own paths: a DCS-DNAS weight-step key would be ignored, so it is refused."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"{key} = .* applies to the DCS-DNAS search"):
        search_config(tiny_data, override)


@pytest.fixture(scope="module")
def tiny_supernet(tiny_data, tmp_path_factory) -> Path:
    """A DCS-DNAS search of the tiny space trained for one epoch (the supernet NNI's strategies read)."""
    out = tmp_path_factory.mktemp("supernet") / "search"
    code = cli_main(["search", "--config", str(ROOT / "experiments/demo/quick_search.yaml"), "--set",
                     f"data.root={tiny_data}", "--set", "threads=1", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_query_gallery_takes_the_first_image_of_each_identity_and_camera():
    from dcsnas.data.base import ImageRecord, query_gallery

    records = [ImageRecord(f"{i}.jpg", pid, cam) for i, (pid, cam) in enumerate(
        [(0, 1), (0, 1), (0, 2), (1, 1), (0, 2), (1, 3), (1, 1)])]
    query, gallery = query_gallery(records)
    assert [r.path for r in query] == ["0.jpg", "2.jpg", "3.jpg", "5.jpg"]
    assert [r.path for r in gallery] == ["1.jpg", "4.jpg", "6.jpg"]


def test_flops_band_keeps_every_sample_within_the_band():
    space_data = read_yaml(SPACES / "tiny.yaml")
    space = load_space(SPACES / "tiny.yaml")
    costs = measure_costs(space, INPUT)
    low, high = costs.bounds("flops")
    target = (low + high) / 2
    executable = SimplifiedModelSpace.from_model(ReIDSpace(space_data, 8, "bnneck", (costs, target, 0.1)))
    random_state, flops, rejected = np.random.RandomState(0), [], 0
    while len(flops) < 40:  # NNI's strategies retry a violating draw the same way
        try:
            model = executable.random(random_state=random_state)
        except SampleValidationError:
            rejected += 1
            continue
        flops.append(costs.exact(sample_indices(space, model.sample), "flops"))
    assert all(abs(f / target - 1) <= 0.1 for f in flops)
    # without the band most uniform draws lie outside it: the constraint, not the space, keeps them in
    rng = random.Random(0)
    free = [costs.exact({c.key: rng.randrange(len(c.labels)) for c in space.choices()}, "flops") for _ in range(200)]
    assert sum(abs(f / target - 1) > 0.1 for f in free) > 100 and rejected > 40


def test_evolution_over_a_trained_supernet_scores_on_the_architecture_split_only(tiny_supernet, tiny_data, tmp_path,
                                                                                 monkeypatch):
    """nni.evaluator = supernet: every trial is the supernet's retrieval mAP among architecture-split images
    (never a test or weight-split image), nothing trains, and the pick is the best trial within the band."""
    import dcsnas.nas.search as search_module
    from dcsnas.nas.search import load_supernet

    reference = load_supernet(tiny_supernet, tmp_path / "reference")
    arch_paths = {r.path for r in reference.arch_records}
    weight_paths = {r.path for r in reference.data.train_records}
    assert arch_paths and not arch_paths & weight_paths
    read: list[str] = []
    evaluate_model = search_module.evaluate_model

    def recording(model, query, gallery, *args, **kwargs):
        read.extend(r.path for r in [*query, *gallery])
        return evaluate_model(model, query, gallery, *args, **kwargs)

    monkeypatch.setattr(search_module, "evaluate_model", recording)
    low, high = reference.costs.bounds("flops")
    target_mflops = (low + high) / 2e6
    cfg = load_config(NNISearchConfig, ROOT / "experiments/cpu/nni_evolution_tiny.yaml", [
        f"data.root={tiny_data}", "nni.evaluator=supernet", f"nni.supernet={tiny_supernet}",
        f"nni.target_mflops={target_mflops}", "nni.flops_band=0.15", "nni.max_trials=6", "threads=1"])
    run = create_run_dir(tmp_path / "evo", "search", cfg)
    monkeypatch.setattr(ReIDModule, "training_step", lambda *a: pytest.fail("a trial trained a network"))
    metrics = run_nni_search(cfg, run, "nni:evolution", show_progress=False)
    assert read and set(read) <= arch_paths
    trials = metrics["trials"]
    assert len(trials) == 6 and all(t["status"] == "SUCCEEDED" for t in trials)
    space = load_space(tiny_supernet / "space.yaml")
    for trial in trials[:2]:  # the reported metric is the supernet's mAP of that architecture (arch split)
        expected = reference.evaluate_architecture(sample_indices(space, trial["params"]), "arch", False)["mAP"]
        assert trial["metric"] == pytest.approx(expected)
    for trial in trials:
        flops = reference.costs.exact(sample_indices(space, trial["params"]), "flops")
        assert abs(flops / (target_mflops * 1e6) - 1) <= 0.15
    best = max(trials, key=lambda t: t["metric"])
    arch = load_arch(run.arch)
    assert metrics["sample"] == best["params"] and arch.search["supernet"] == str(tiny_supernet)


@pytest.mark.parametrize("overrides, message", [
    (["nni.evaluator=supernet"], "needs supernet"),
    (["nni.supernet=/somewhere"], "only read with it"),
])
def test_supernet_evaluator_settings_go_together(tiny_data, overrides, message):
    with pytest.raises(ConfigError, match=message):
        search_config(tiny_data, *overrides)


def test_one_shot_strategies_refuse_the_supernet_evaluator_and_the_band(tiny_data, tmp_path, tiny_supernet):
    for overrides in (["nni.evaluator=supernet", f"nni.supernet={tiny_supernet}"], ["nni.target_mflops=1.0"]):
        cfg = search_config(tiny_data, *overrides)
        with pytest.raises(ConfigError, match="not to the one-shot nni:darts"):
            run_nni_search(cfg, create_run_dir(tmp_path / f"run{len(overrides)}", "search", cfg), "nni:darts",
                           show_progress=False)
