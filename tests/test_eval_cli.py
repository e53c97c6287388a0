"""``dcsnas eval --features``: JSON output, rank-list images, and exit code 2 on bad input."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from dcsnas.cli import main
from dcsnas.metrics import evaluate_features, save_features


def _arrays(seed=0, n_q=12, n_g=40):
    rng = np.random.default_rng(seed)
    return {
        "qf": rng.standard_normal((n_q, 8)).astype(np.float32), "gf": rng.standard_normal((n_g, 8)).astype(np.float32),
        "q_pids": rng.integers(0, 5, n_q), "g_pids": rng.integers(0, 5, n_g),
        "q_camids": rng.integers(0, 3, n_q), "g_camids": rng.integers(0, 3, n_g),
    }


def _run(capsys, *argv):
    code = main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("extra", [[], ["--metric", "cosine", "--rerank"], ["--protocol", "cuhk03", "--seed", "4"]])
def test_prints_the_metrics_as_json(tmp_path, capsys, extra):
    a = _arrays()
    save_features(tmp_path / "f.npz", **a)
    code, out, err = _run(capsys, "--features", tmp_path / "f.npz", *extra)
    assert code == 0 and err == ""
    report = json.loads(out)
    opts = {"metric": "cosine" if "cosine" in extra else "euclidean", "rerank": "--rerank" in extra}
    if "cuhk03" in extra:
        opts.update(protocol="cuhk03", seed=4)
    expected = evaluate_features(*a.values(), **opts)
    assert report["mAP"] == expected["mAP"] and report["mINP"] == expected["mINP"]
    assert report["cmc"] == expected["cmc"].tolist() and len(report["cmc"]) == 50
    assert [report[f"rank-{r}"] for r in (1, 5, 10, 20)] == [expected["cmc"][r - 1] for r in (1, 5, 10, 20)]
    assert report["num_valid_queries"] == expected["num_valid_queries"]
    assert (report["num_queries"], report["num_gallery"]) == (12, 40)


def test_max_rank_limits_the_cmc_and_out_writes_metrics_json(tmp_path, capsys):
    save_features(tmp_path / "f.npz", **_arrays())
    code, out, _ = _run(capsys, "--features", tmp_path / "f.npz", "--max-rank", 7, "--out", tmp_path / "run")
    report = json.loads(out)
    assert code == 0 and len(report["cmc"]) == 7
    assert "rank-5" in report and "rank-10" not in report
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == report


def test_visualize_writes_rank_lists(tmp_path, capsys):
    # 2 queries (pids 1, 2; cam 0) and 3 gallery images on a line (cam 1): pid 1 at 0.1, pid 2 at 0.2, pid 1 at 5.
    for name, shade in [("q0", 40), ("q1", 80), ("g0", 120), ("g1", 160), ("g2", 200)]:
        Image.new("RGB", (20, 40), (shade, shade, shade)).save(tmp_path / f"{name}.png")
    save_features(
        tmp_path / "f.npz",
        qf=np.array([[0.0], [0.0]], np.float32), gf=np.array([[0.1], [0.2], [5.0]], np.float32),
        q_pids=np.array([1, 2]), g_pids=np.array([1, 2, 1]), q_camids=np.array([0, 0]), g_camids=np.array([1, 1, 1]),
        q_paths=["q0.png", "q1.png"], g_paths=["g0.png", "g1.png", "g2.png"],
    )
    code, out, _ = _run(capsys, "--features", tmp_path / "f.npz", "--visualize", 2, "--out", tmp_path / "vis")
    assert code == 0
    assert json.loads(out)["rank_lists"]["count"] == 2
    img = np.asarray(Image.open(tmp_path / "vis" / "ranks" / "00000_q0.png"))
    # Query 0 (pid 1): top 2 = g0 (pid 1: green frame), g1 (pid 2: red frame); the frames' top-left pixels:
    slot = 64 + 2 * 4 + 10
    assert img.shape == (128 + 8, 3 * 72 + 2 * 10, 3)
    assert tuple(img[0, 0]) == (0, 0, 0)
    assert tuple(img[0, slot]) == (0, 170, 0)
    assert tuple(img[0, 2 * slot]) == (220, 0, 0)
    assert tuple(img[60, slot + 30]) == (120, 120, 120)  # g0's pixels inside the frame
    img = np.asarray(Image.open(tmp_path / "vis" / "ranks" / "00001_q1.png"))
    assert tuple(img[0, slot]) == (220, 0, 0) and tuple(img[0, 2 * slot]) == (0, 170, 0)
    code, out, _ = _run(
        capsys, "--features", tmp_path / "f.npz", "--visualize", 5, "--vis-queries", 1, "--out", tmp_path / "one"
    )
    assert code == 0 and json.loads(out)["rank_lists"]["count"] == 1
    img = np.asarray(Image.open(tmp_path / "one" / "ranks" / "00000_q0.png"))
    assert img.shape[1] == 6 * 72 + 5 * 10  # room for 5; the 3 gallery images fill the first 3 slots
    assert tuple(img[0, 3 * slot]) == (0, 170, 0) and tuple(img[0, 4 * slot]) == (255, 255, 255)


def test_the_feature_source_is_a_required_exclusive_choice(capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval"])
    assert info.value.code == 2
    assert "one of the arguments --features --run is required" in capsys.readouterr().err


def _write_bad(tmp_path, kind):
    a = _arrays()
    path = tmp_path / "f.npz"
    if kind == "missing-array":
        del a["gf"]
        np.savez(path, **a)
    elif kind == "not-npz":
        path.write_text("hello")
    elif kind == "npy":
        path = tmp_path / "f.npy"
        np.save(path, a["qf"])
    elif kind == "nan":
        a["gf"][3, 2] = np.nan
        save_features(path, **a)
    elif kind == "short-pids":
        a["g_pids"] = a["g_pids"][:-1]
        save_features(path, **a)
    elif kind == "dim":
        a["gf"] = a["gf"][:, :5]
        save_features(path, **a)
    elif kind == "float-camids":
        a["q_camids"] = a["q_camids"].astype(np.float32)
        save_features(path, **a)
    elif kind == "paths-length":
        save_features(path, **a, q_paths=["a.png"], g_paths=["b.png"] * 40)
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing-array", r"lacks array\(s\): gf \(n_g, d\)"),
        ("not-npz", "cannot read features file"),
        ("npy", "holds a single array, expected a .npz archive"),
        ("nan", r"gf contains NaN or inf \(first in row 3\)"),
        ("short-pids", r"g_pids has shape \(39,\), expected \(n_g,\) = \(40,\)"),
        ("dim", r"gf has shape \(40, 5\), expected \(n_g, 8\)"),
        ("float-camids", "q_camids has dtype float32, expected an integer dtype"),
        ("paths-length", r"q_paths must be a string array of shape \(n_q,\) = \(12,\)"),
    ],
)
def test_bad_files_exit_2_with_a_message(tmp_path, capsys, kind, message):
    code, out, err = _run(capsys, "--features", _write_bad(tmp_path, kind))
    assert code == 2 and out == ""
    assert err.startswith("dcsnas: error: ") and "Traceback" not in err
    assert re.search(message, err), err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--visualize", "3"], "--visualize needs --out DIR"),
        (["--visualize", "3", "--out", "{tmp}/o"], "has no q_paths/g_paths arrays: --visualize needs the image paths"),
        (["--max-rank", "0"], "--max-rank must be a positive integer"),
        (["--features", "{tmp}/missing.npz"], "features file not found"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, argv, message):
    save_features(tmp_path / "f.npz", **_arrays())
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--features" not in argv:
        argv = ["--features", str(tmp_path / "f.npz"), *argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err
