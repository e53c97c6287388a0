"""``dcsnas export``: the export formulations (unpivoted solve, matrix-form adaptive pooling) against PyTorch's
functions, ONNX and TorchScript parity with the eager model for every model family and attention, the
inference graph's contents and metadata, and the refusals."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_arch
from torch import nn

from dcsnas.attention import AttentionBlock, DCSAttention
from dcsnas.attention.linalg import solve_diagonally_dominant
from dcsnas.attention.token_dcs import TokenAttention
from dcsnas.cli import main
from dcsnas.config import from_dict, save_config
from dcsnas.engine.checkpoint import save_checkpoint
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.inference import inference_model, load_exported, open_exported
from dcsnas.export import ExportError, export_checked, export_model
from dcsnas.models.builder import AttentionPlacement, ModelConfig, create_model
from dcsnas.utils.pooling import adaptive_avg_pool2d

NUM_CLASSES = 13
SIZE = (64, 32)
MBV2 = ModelConfig(backbone="mobilenetv2", width_mult=0.25)
ATTENTIONS = {  # stage2 of MobileNetV2 x0.25 at 64x32: 8 channels on a 16x8 map; 6 landmarks do not divide it
    "sa": ("sa", {"qk_ratio": 2}),
    "csa": ("csa", {"landmarks": 6, "qk_ratio": 2}),
    "csalr": ("csalr", {"landmarks": 6, "groups": 2, "qk_ratio": 2}),
    "dcs-csalr": ("dcs", {"backend": "csalr", "landmarks": 6, "groups": 2, "qk_ratio": 2}),
}
ARCH = tiny_arch({"name": "csa", "options": {"landmarks": 4}})


def perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Attention switched on (gamma = 0.5, not the identity of the initialisation), DCS gates that drop some
    channels, BatchNorm statistics away from (0, 1): every piece of the graph changes the embedding."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, AttentionBlock):
            module.gamma.data.fill_(0.5)
        if isinstance(module, DCSAttention) or (isinstance(module, TokenAttention) and module.gate is not None):
            module.gate.weight.data.normal_(0, 1, generator=gen)
            module.gate.bias.data.zero_()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2, generator=gen)
            module.running_var.uniform_(0.5, 2.0, generator=gen)
    return model.eval()


def family(name: str, tmp_path: Path) -> ModelConfig:
    if name == "searched":
        (tmp_path / "arch.json").write_text(json.dumps(ARCH))
        return ModelConfig(backbone="searched", arch=str(tmp_path / "arch.json"))
    if name in ("pcb", "pcb-rpp"):
        return replace(MBV2, head="pcb", pcb_reduce_dim=16,
                       attention=[AttentionPlacement("stage2", "sa", {"qk_ratio": 2})])
    if name == "vit":  # DCS in the second of six blocks, overlapping patches
        return ModelConfig(backbone="vit_micro", img_size=list(SIZE), patch_stride=6, dcs_blocks=[1])
    if name == "resnet50":
        return ModelConfig(backbone="resnet50", attention=[AttentionPlacement("layer2", "csalr", {"landmarks": 8})])
    attention, options = ATTENTIONS[name]
    return replace(MBV2, attention=[AttentionPlacement("stage2", attention, options, deep_supervision=True)])


def build(name: str, tmp_path: Path) -> nn.Module:
    model = perturbed(create_model(family(name, tmp_path), NUM_CLASSES))
    if name == "pcb-rpp":
        model.head.refined = True
    return model


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max over samples of max_j |got - expected| / ||expected_i||."""
    return float(((got - expected).abs().amax(1) / expected.norm(dim=1)).max())


# ------------------------------------------------------------------------------------- export formulations
@pytest.mark.parametrize("m, r", [(1, 1), (5, 3), (17, 4), (96, 2)])
def test_unpivoted_solve_matches_linalg_solve(m, r):
    gen = torch.Generator().manual_seed(m)
    a = torch.softmax(torch.randn(3, m, m, generator=gen, dtype=torch.float64) * 3, dim=-1) + torch.eye(m)
    b = torch.randn(3, m, r, generator=gen, dtype=torch.float64)
    expected = torch.linalg.solve(a, b)
    assert torch.allclose(solve_diagonally_dominant(a, b), expected, rtol=0, atol=1e-12)
    got32 = solve_diagonally_dominant(a.float(), b.float())
    assert (got32.double() - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_unpivoted_solve_of_a_hand_system():
    # [[2, 1], [1, 3]] x = [3, 5]: x = (4/5, 7/5)
    a = torch.tensor([[[2.0, 1.0], [1.0, 3.0]]], dtype=torch.float64)
    x = solve_diagonally_dominant(a, torch.tensor([[[3.0], [5.0]]], dtype=torch.float64))
    assert torch.allclose(x.flatten(), torch.tensor([0.8, 1.4], dtype=torch.float64), atol=1e-15)


@pytest.mark.parametrize("size, out", [((16, 8), (6, 1)), ((16, 8), (3, 2)), ((7, 5), (3, 4)), ((12, 8), (6, 4))])
def test_matrix_form_adaptive_pooling_matches_pytorch(monkeypatch, size, out):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    expected = F.adaptive_avg_pool2d(x, out)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert torch.allclose(adaptive_avg_pool2d(x, out), expected, rtol=0, atol=1e-14)


# ------------------------------------------------------------------------------------------------ parity
FAST = ["sa", "csa", "csalr", "dcs-csalr", "pcb", "pcb-rpp", "searched", "vit"]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", FAST + [pytest.param("resnet50", marks=pytest.mark.slow)])
def test_export_matches_pytorch(tmp_path, name, fmt):
    model = build(name, tmp_path)
    report = export_checked(inference_model(model), tmp_path / f"model.{fmt}", fmt, {"input_size": list(SIZE)})
    assert report["parity"]["relative"] <= 1e-4 and report["parity"]["batch_sizes"] == [1, 3]
    run, metadata = open_exported(tmp_path / f"model.{fmt}", trust_torchscript=True)
    assert json.loads(metadata) == {"input_size": list(SIZE)}
    for batch in (2, 5):  # batch sizes the export never saw
        images = torch.randn(batch, 3, *SIZE)
        with torch.no_grad():
            expected = model(images)
        got = run(images)
        assert got.shape == expected.shape == (batch, model.embedding_dim)
        assert relative_error(got, expected) <= 1e-4


@pytest.mark.slow
def test_onnx_export_through_torch_export(tmp_path):
    """The exporter taken where torch no longer ships the TorchScript-based one."""
    pytest.importorskip("onnxscript")
    model = build("dcs-csalr", tmp_path)
    report = export_checked(inference_model(model), tmp_path / "model.onnx", "onnx", {"input_size": list(SIZE)},
                            exporter="dynamo")
    assert report["parity"]["relative"] <= 1e-4


def test_inference_graph_has_no_classifier_or_deep_supervision(tmp_path):
    model = build("dcs-csalr", tmp_path)
    assert len(model.deep_supervision) == 1
    deployed = inference_model(model)
    export_model(deployed, tmp_path / "model.pt", "torchscript", {"input_size": list(SIZE)})
    keys = list(torch.jit.load(str(tmp_path / "model.pt")).state_dict())
    assert keys and not any("classifier" in k or "deep_supervision" in k for k in keys)
    export_model(deployed, tmp_path / "model.onnx", "onnx", {"input_size": list(SIZE)})
    import onnx

    shapes = [tuple(init.dims) for init in onnx.load(str(tmp_path / "model.onnx")).graph.initializer]
    assert shapes and not any(NUM_CLASSES in s for s in shapes)  # the 13-way identity classifier is gone
    assert model.head.classifier.weight.shape[0] == NUM_CLASSES  # the original model is untouched


def test_an_operator_without_onnx_form_is_named(tmp_path):
    class Inverse(nn.Module):
        def forward(self, x):
            return torch.linalg.inv(x[:, 0, :4, :4] + 4 * torch.eye(4)).flatten(1)

    with pytest.raises(ExportError, match="cannot export to onnx: .*linalg_inv"):
        export_model(Inverse(), tmp_path / "inv.onnx", "onnx", {"input_size": list(SIZE)})
    assert not (tmp_path / "inv.onnx").exists()


# ------------------------------------------------------------------------------------ command and refusals
def make_run(root: Path, model_cfg: ModelConfig, epochs_done: int = 2, epochs: int = 2) -> Path:
    """A run directory as dcsnas train leaves it after ``epochs_done`` of ``epochs`` (random weights)."""
    cfg = from_dict(TrainConfig, {"data": {"root": "unused", "transforms": {"height": SIZE[0], "width": SIZE[1]}},
                                  "optim": {"epochs": epochs}, "eval": {"flip": True, "metric": "cosine"}})
    cfg = replace(cfg, model=model_cfg)
    save_config(cfg, root / "config.yaml")
    model = perturbed(create_model(model_cfg, NUM_CLASSES))
    save_checkpoint(root / "checkpoints" / "last.pt", epoch=epochs_done - 1, model=model.state_dict(),
                    num_classes=NUM_CLASSES)
    return root


def test_export_command_writes_checked_file_with_metadata(tmp_path, capsys):
    run = make_run(tmp_path / "run", family("csalr", tmp_path))
    assert main(["export", "--run", str(run), "--format", "onnx"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["file"] == str(run / "model.onnx") and report["parity"]["relative"] <= 1e-4
    import onnxruntime

    meta = json.loads(onnxruntime.InferenceSession(str(run / "model.onnx")).get_modelmeta()
                      .custom_metadata_map["dcsnas"])
    assert meta["input_size"] == [64, 32] and meta["mean"] == [0.485, 0.456, 0.406]
    assert meta["std"] == [0.229, 0.224, 0.225] and meta["embedding_dim"] == 1280
    assert (meta["metric"], meta["flip"], meta["checkpoint"], meta["epoch"]) == ("cosine", True, "last", 2)
    assert main(["export", "--run", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.ts")]) == 0
    assert load_exported(tmp_path / "m.ts", trust_torchscript=True)[1] == meta


def test_export_refusals(tmp_path, capsys, monkeypatch):
    unfinished = make_run(tmp_path / "unfinished", MBV2, epochs_done=1, epochs=3)
    assert main(["export", "--run", str(unfinished), "--format", "onnx"]) == 2
    assert "last.pt is from epoch 1 of 3: the training has not finished" in capsys.readouterr().err
    assert main(["export", "--run", str(unfinished), "--format", "onnx", "--checkpoint", "best"]) == 2
    assert "has no finished checkpoint" in capsys.readouterr().err and not (unfinished / "model.onnx").exists()
    (unfinished / "checkpoints" / "last.pt").unlink()
    assert main(["export", "--run", str(unfinished), "--format", "torchscript"]) == 2
    assert "has no finished checkpoint" in capsys.readouterr().err

    run = make_run(tmp_path / "run", MBV2)
    with pytest.raises(SystemExit) as exc:
        main(["export", "--run", str(run), "--format", "tflite"])
    assert exc.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert main(["export", "--run", str(run), "--format", "onnx"]) == 2
    assert 'onnxruntime is not installed; install the export extra: pip install "dcsnas[export]"' in \
        capsys.readouterr().err
