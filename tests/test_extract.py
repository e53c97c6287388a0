"""``dcsnas.FeatureExtractor`` and ``dcsnas extract``: the embeddings of a tiny run equal ``eval --run``'s
features; every input form (paths, PIL images, uint8/float batches), flip averaging, exported files, and
unreadable images."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcsnas
from dcsnas.cli import main
from dcsnas.config import load_config, save_config
from dcsnas.engine.checkpoint import save_checkpoint
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.evaluator import extract_run_features
from dcsnas.errors import DataError
from dcsnas.metrics import load_features
from dcsnas.models.builder import create_model

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 5


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max over samples of max_j |got - expected| / ||expected_i||."""
    return float(((got - expected).abs().amax(1) / expected.norm(dim=1)).max())


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A run of experiments/cpu/tiny_test.yaml (MobileNetV2 + DCS-CSALR with deep supervision) as training leaves
    it, with random weights, attention switched on and a DCS gate that drops channels."""
    run = tmp_path_factory.mktemp("run")
    cfg = load_config(TrainConfig, ROOT / "experiments/cpu/tiny_test.yaml", [f"data.root={tiny_data}"])
    cfg = replace(cfg, data=replace(cfg.data, test_batch_size=7))
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    model = create_model(cfg.model, NUM_CLASSES)
    attention = model.attentions["stage2"]
    attention.gamma.data.fill_(0.7)
    attention.gate.weight.data.normal_()
    attention.gate.bias.data.zero_()
    save_checkpoint(run / "checkpoints" / "last.pt", epoch=cfg.optim.epochs - 1, model=model.state_dict(),
                    num_classes=NUM_CLASSES)
    return run


def test_embeddings_equal_eval_run_features(tiny_run):
    arrays, _ = extract_run_features(tiny_run, device="cpu", show_progress=False)
    extractor = dcsnas.FeatureExtractor(tiny_run, device="cpu")
    assert extractor.batch_size == 7 and extractor.flip is False  # the run's test_batch_size and eval.flip
    for prefix in ("q", "g"):
        feats = extractor(list(arrays[f"{prefix}_paths"]))
        assert feats.dtype == torch.float32 and feats.shape == arrays[f"{prefix}f"].shape
        assert torch.equal(feats, arrays[f"{prefix}f"].cpu())


def test_extract_command_writes_the_eval_features_file(tiny_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "feats.npz"
    assert main(["extract", "--run", str(tiny_run), "--query", str(tiny_data / "query"),
                 "--gallery", str(tiny_data / "bounding_box_test"), "--out", str(out), "--device", "cpu"]) == 0
    capsys.readouterr()
    written = load_features(out)
    arrays, _ = extract_run_features(tiny_run, device="cpu", show_progress=False)
    for key in ("q_pids", "g_pids", "q_camids", "g_camids"):
        assert np.array_equal(written[key], arrays[key]), key
    assert [Path(p) for p in written["g_paths"]] == [Path(p).resolve() for p in arrays["g_paths"]]
    assert np.array_equal(written["qf"], arrays["qf"].numpy()) and np.array_equal(written["gf"], arrays["gf"].numpy())
    assert main(["eval", "--features", str(out)]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert main(["eval", "--run", str(tiny_run), "--device", "cpu"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert from_file["mAP"] == from_run["mAP"] and from_file["rank-1"] == from_run["rank-1"]


def test_extract_images_of_a_split_and_of_any_folder(tiny_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "q.npz"
    assert main(["extract", "--run", str(tiny_run), "--images", str(tiny_data / "query"), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["labelled"] is True
    with np.load(out) as npz:
        names = [Path(p).name for p in npz["paths"]]
        assert npz["features"].shape == (len(names), 1280)
        assert int(npz["pids"][0]) == int(names[0].split("_")[0]) and int(npz["camids"][0]) == int(names[0][6]) - 1
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in names[:2]:
        (plain / f"photo-{name}").write_bytes((tiny_data / "query" / name).read_bytes())
    assert main(["extract", "--run", str(tiny_run), "--images", str(plain), "--out", str(out), "--device", "cpu",
                 "--force"]) == 0
    assert json.loads(capsys.readouterr().out)["labelled"] is False
    with np.load(out) as npz:
        assert set(npz.files) == {"features", "paths"} and npz["features"].shape == (2, 1280)


def test_every_input_form_gives_the_same_embeddings(tiny_run):
    extractor = dcsnas.FeatureExtractor(tiny_run, device="cpu")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 64, 32, 3), dtype=np.uint8)  # already at the input size: no resampling
    images = [Image.fromarray(p) for p in pixels]
    expected = extractor(images)
    assert expected.shape == (3, 1280)
    assert torch.equal(extractor(pixels), expected)  # [N, H, W, 3] uint8 array
    assert torch.equal(extractor(torch.from_numpy(pixels).permute(0, 3, 1, 2)), expected)  # [N, 3, H, W] uint8
    as_float = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    assert relative_error(extractor(as_float), expected) <= 1e-5
    assert relative_error(extractor(images[1]), expected[1:2]) <= 1e-5  # one image (another batch size)
    # flip averaging: the mean of the embeddings of each image and of its mirror image
    mirrored = extractor([im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images])
    flipped = dcsnas.FeatureExtractor(tiny_run, device="cpu", flip=True)(images)
    assert relative_error(flipped, (expected + mirrored) / 2) <= 1e-5


def test_exported_file_gives_the_runs_embeddings(tiny_run, tiny_data, tmp_path, capsys):
    paths = sorted(str(p) for p in (tiny_data / "query").iterdir())[:4]
    expected = dcsnas.FeatureExtractor(tiny_run, device="cpu")(paths)
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / f"model.{fmt}"
        assert main(["export", "--run", str(tiny_run), "--format", fmt, "--out", str(out)]) == 0
        capsys.readouterr()
        got = dcsnas.FeatureExtractor(out, device="cpu", trust_torchscript=fmt == "torchscript")(paths)
        assert relative_error(got, expected) <= 1e-4, fmt


def test_unreadable_images_are_named_and_refused(tiny_run, tiny_data, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    good = sorted(str(p) for p in (tiny_data / "query").iterdir())[:3]
    extractor = dcsnas.FeatureExtractor(tiny_run, device="cpu", batch_size=2)
    with pytest.raises(DataError) as exc:
        extractor([good[0], str(broken), good[1], str(tmp_path / "missing.png"), good[2]])
    message = str(exc.value)
    assert message.startswith("2 of 5 image(s) cannot be read, no features computed: ")
    assert f"'{broken}'" in message and f"'{tmp_path / 'missing.png'}'" in message and good[0] not in message
    with pytest.raises(DataError, match=r"expected images \[N, 3, H, W\]"):
        extractor(torch.zeros(2, 4, 8, 8))


def test_cross_domain_eval_equals_extract_then_eval_features(tiny_run, tmp_path, capsys):
    """``eval --run R --dataset D --root ROOT`` on another synthetic set (seed 1, other people and cameras)
    gives the metrics of ``extract --query --gallery`` + ``eval --features`` with the same weights."""
    from dcsnas.data.synthetic import GALLERY_DIR, QUERY_DIR, generate

    other = tmp_path / "synthetic-seed1"
    generate("tiny", 1, other, show_progress=False)
    assert main(["eval", "--run", str(tiny_run), "--dataset", "synthetic", "--root", str(other), "--no-progress"]) == 0
    cross = json.loads(capsys.readouterr().out)
    features = tmp_path / "seed1.npz"
    assert main(["extract", "--run", str(tiny_run), "--query", str(other / QUERY_DIR), "--gallery",
                 str(other / GALLERY_DIR), "--out", str(features)]) == 0
    capsys.readouterr()
    assert main(["eval", "--features", str(features), "--metric", cross["metric"]]) == 0
    two_steps = json.loads(capsys.readouterr().out)
    assert cross["root"] == str(other) and cross["trained_on"] == "synthetic"
    assert (cross["num_queries"], cross["num_gallery"]) == (two_steps["num_queries"], two_steps["num_gallery"])
    for key in ("mAP", "mINP", "rank-1", "rank-5", "rank-10"):
        assert cross[key] == pytest.approx(two_steps[key], abs=1e-6), key
    assert main(["eval", "--run", str(tiny_run), "--no-progress"]) == 0
    same_domain = json.loads(capsys.readouterr().out)
    assert same_domain["mAP"] != cross["mAP"]  # another data set was evaluated indeed


def test_dataset_without_run_is_refused(tmp_path, capsys):
    assert main(["eval", "--features", str(tmp_path / "f.npz"), "--dataset", "market1501"]) == 2
    assert "--dataset and --root need --run DIR" in capsys.readouterr().err
