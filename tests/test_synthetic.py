"""The synthetic Re-ID data set generator: layout, naming, splits, determinism, errors and difficulty."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcsnas.data.synthetic import PRESETS, SynthPreset, _plan, _statistics, generate
from dcsnas.errors import DataError

NAME = re.compile(r"([-\d]+)_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg")
SPLITS = ("bounding_box_train", "query", "bounding_box_test")


def records(root: Path, folder: str) -> list[tuple[Path, int, int]]:
    """(path, pid, 1-based camera) of every file in ``folder``; fails on a name Market's regex rejects."""
    out = []
    for path in sorted((root / folder).iterdir()):
        match = NAME.fullmatch(path.name)
        assert match, f"unparsable name {path.name}"
        out.append((path, int(match[1]), int(match[2])))
    return out


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tiny")
    return root, generate("tiny", seed=0, out=root, show_progress=False)


def test_layout_names_and_counts(tiny):
    root, stats = tiny
    preset = PRESETS["tiny"]
    assert sorted(p.name for p in root.iterdir()) == sorted([*SPLITS, "synth_meta.json"])
    train, query, gallery = (records(root, s) for s in SPLITS)
    assert len(train) == preset.train_images == stats["train"]["images"]
    assert len(query) == preset.query_images == stats["query"]["images"]
    assert len(gallery) == preset.gallery_images + preset.distractors + preset.junk == stats["gallery"]["images"]
    assert sum(pid == 0 for _, pid, _ in gallery) == preset.distractors == stats["gallery"]["distractors"]
    assert sum(pid == -1 for _, pid, _ in gallery) == preset.junk == stats["gallery"]["junk"]
    assert any(p.name.startswith("-1_c") for p, _, _ in gallery) and any(
        p.name.startswith("0000_c") for p, _, _ in gallery
    )
    assert {cam for _, _, cam in train + query + gallery} <= set(range(1, preset.cameras + 1))
    assert len({pid for _, pid, _ in train}) == preset.train_ids
    meta = json.loads((root / "synth_meta.json").read_text())
    assert meta["complete"] and meta["seed"] == 0 and meta["preset"]["name"] == "tiny"
    assert len(meta["identities"]) == preset.train_ids + preset.test_ids
    attributes = [tuple(m["attributes"].values()) for m in meta["identities"].values()]
    assert len(set(attributes)) == len(attributes), "identities must be distinct attribute combinations"


def test_images_are_128x64_rgb_jpeg(tiny):
    root, _ = tiny
    for folder in SPLITS:
        for path, _, _ in records(root, folder)[:5]:
            with Image.open(path) as img:
                assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (64, 128))


def test_splits_follow_market_protocol(tiny):
    root, _ = tiny
    train, query, gallery = (records(root, s) for s in SPLITS)
    train_pids = {pid for _, pid, _ in train}
    test_pids = {pid for _, pid, _ in query}
    assert min(train_pids) > 0 and train_pids.isdisjoint(test_pids)
    assert train_pids.isdisjoint({pid for _, pid, _ in gallery})
    gallery_cams: dict[int, set[int]] = {}
    for _, pid, cam in gallery:
        gallery_cams.setdefault(pid, set()).add(cam)
    assert {pid for pid in gallery_cams if pid > 0} == test_pids
    for pid in test_pids:
        assert len(gallery_cams[pid]) >= 2
    pairs = [(pid, cam) for _, pid, cam in query]
    assert len(pairs) == len(set(pairs)), "one query per (identity, camera)"
    for pid, cam in pairs:
        assert cam in gallery_cams[pid] and gallery_cams[pid] - {cam}, f"query {pid} c{cam} has no cross-camera match"
    assert all(pid > 0 for _, pid, _ in train + query), "junk and distractors belong to the gallery only"


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    root, _ = tiny
    generate("tiny", seed=0, out=tmp_path / "again", show_progress=False)
    assert digests(tmp_path / "again") == digests(root)
    generate("tiny", seed=1, out=tmp_path / "other", show_progress=False)
    other = digests(tmp_path / "other")
    assert set(other.values()).isdisjoint(v for k, v in digests(root).items() if k.endswith(".jpg"))


def test_workers_do_not_change_the_output(tiny, tmp_path):
    root, _ = tiny
    generate("tiny", seed=0, out=tmp_path / "parallel", show_progress=False, workers=2)
    assert digests(tmp_path / "parallel") == digests(root)


def test_unknown_preset_names_the_allowed_ones(tmp_path):
    with pytest.raises(DataError, match=r"unknown synthetic preset 'huge'; allowed: tiny, small, market"):
        generate("huge", seed=0, out=tmp_path)


def test_invalid_custom_preset(tmp_path):
    bad = SynthPreset(
        "bad",
        train_ids=4,
        test_ids=4,
        cameras=3,
        train_images=8,
        query_images=20,
        gallery_images=20,
        distractors=0,
        junk=0,
    )
    with pytest.raises(DataError, match=r"query_images=20 \(allowed: 2 to 3 cameras per test identity\)"):
        generate(bad, seed=0, out=tmp_path)


def test_refuses_foreign_folder_and_replaces_previous_output(tiny, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"is not empty and holds no synth_meta.json"):
        generate("tiny", seed=0, out=foreign, show_progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"

    previous = tmp_path / "previous"
    generate("tiny", seed=1, out=previous, show_progress=False)
    generate("tiny", seed=0, out=previous, show_progress=False)
    assert digests(previous) == digests(tiny[0])


def test_identities_are_distinguishable_but_not_trivially(tiny):
    """Raw-pixel nearest neighbours find the identity within a camera, rarely across cameras."""
    root, _ = tiny

    def load(folder):
        rows = records(root, folder)
        pixels = np.stack([np.asarray(Image.open(p), dtype=np.float32).ravel() for p, _, _ in rows])
        return pixels, np.array([pid for _, pid, _ in rows]), np.array([cam for _, _, cam in rows])

    (qx, qp, qc), (gx, gp, gc) = load("query"), load("bounding_box_test")
    dist = (qx**2).sum(1)[:, None] + (gx**2).sum(1)[None] - 2 * qx @ gx.T
    cross, same = [], []
    for i in range(len(qx)):
        other = gc != qc[i]
        cross.append(gp[other][np.argmin(dist[i][other])] == qp[i])
        here = (gc == qc[i]) & (gp > 0)
        same.append(gp[here][np.argmin(dist[i][here])] == qp[i])
    assert np.mean(cross) < 0.6
    assert np.mean(same) > 0.4 and np.mean(same) > np.mean(cross) + 0.2


def test_market_preset_plans_market1501_counts():
    """The plan (names and counts, no pixels) of ``market`` matches Market-1501's split sizes exactly."""
    jobs = _plan(PRESETS["market"], seed=0).jobs
    stats = _statistics(jobs, cameras=6)
    assert (stats["train"]["images"], stats["train"]["identities"]) == (12936, 751)
    assert (stats["query"]["images"], stats["query"]["identities"]) == (3368, 750)
    assert (stats["gallery"]["images"], stats["gallery"]["distractors"], stats["gallery"]["junk"]) == (
        19732,
        2793,
        3819,
    )
    names = [job.path.split("/")[1] for job in jobs]
    assert len(set(names)) == len(names) and all(NAME.fullmatch(n) for n in names)
