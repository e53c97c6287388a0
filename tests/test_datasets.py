from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_image, write_tree

from dcsnas.cli import main
from dcsnas.data import DATASETS, build_dataset
from dcsnas.errors import ConfigError, DataError


def names(records):
    return [(Path(r.path).name, r.pid, r.camid) for r in records]


def test_market_counts_relabelling_junk_and_distractors(market_tree):
    ds = build_dataset("market1501", market_tree)  # the parent folder: resolves Market-1501-v15.09.15
    assert ds.root.endswith("Market-1501-v15.09.15")
    assert names(ds.train) == [("0002_c1s1_000451_03.jpg", 0, 0), ("0002_c2s1_000551_01.jpg", 0, 1),
                               ("0007_c1s1_000001_01.jpg", 1, 0), ("0007_c3s2_010101_02.jpg", 1, 2),
                               ("0007_c6s4_123456_01.jpg", 1, 5)]
    assert names(ds.query) == [("0003_c1s1_000100_00.jpg", 3, 0), ("0005_c2s1_000200_00.jpg", 5, 1),
                               ("0005_c4s1_000300_00.jpg", 5, 3)]
    assert [r.pid for r in ds.gallery] == [0, 0, 3, 3, 5]  # junk (-1) dropped, distractors (0) kept
    stats = ds.stats()
    assert stats["train"] == {"images": 5, "identities": 2, "cameras": 4}
    assert stats["gallery"] == {"images": 5, "identities": 2, "cameras": 4, "distractor_images": 2}
    assert stats["query"]["images_without_cross_camera_match"] == 0


def test_duke_layout(tmp_path):
    root = write_tree(tmp_path / "DukeMTMC-reID", {
        "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg", "0010_c1_f0000001.jpg"],
        "query": ["0005_c2_f0046985.jpg"],
        "bounding_box_test": ["0005_c1_f0046000.jpg", "0005_c2_f0046999.jpg", "0099_c8_f0000002.jpg"],
    })
    ds = build_dataset("dukemtmcreid", tmp_path)
    assert names(ds.train) == [("0001_c2_f0046182.jpg", 0, 1), ("0001_c5_f0051341.jpg", 0, 4),
                               ("0010_c1_f0000001.jpg", 1, 0)]
    assert ds.stats()["gallery"] == {"images": 3, "identities": 2, "cameras": 3, "distractor_images": 0}
    assert ds.root == str(root)


@pytest.mark.parametrize("subset", ["detected", "labeled"])
def test_cuhk03_np_subsets(tmp_path, subset):
    for s in ("detected", "labeled"):
        write_tree(tmp_path / "cuhk03-np" / s, {
            "bounding_box_train": ["0001_c1_1.png", "0001_c2_6.png", "0002_c1_2.png", "0002_c2_8.png"],
            "query": ["0700_c1_3.png"],
            "bounding_box_test": ["0700_c2_7.png", "0701_c1_2.png"] + (["0702_c2_1.png"] if s == "labeled" else []),
        })
    ds = build_dataset("cuhk03", tmp_path, subset=subset)
    assert ds.name == f"cuhk03-{subset}"
    assert [r.pid for r in ds.train] == [0, 0, 1, 1]
    assert [r.camid for r in ds.train] == [0, 1, 0, 1]
    assert len(ds.gallery) == (3 if subset == "labeled" else 2)
    with pytest.raises(ConfigError, match="'subset' = 'both'"):
        build_dataset("cuhk03", tmp_path, subset="both")


def _msmt_tree(root: Path, train_dir: str, test_dir: str) -> None:
    lists = {
        "list_train.txt": [("0000/0000_000_01_0303morning_0015_0.jpg", 0), ("0000/0000_001_05_0303noon_0020_1.jpg", 0),
                           ("0003/0003_000_14_0113afternoon_0100_0.jpg", 3)],
        "list_val.txt": [("0007/0007_000_02_0303morning_0001_0.jpg", 7)],
        "list_query.txt": [("0000/0000_000_15_0113morning_0002_0.jpg", 0)],
        "list_gallery.txt": [("0000/0000_003_03_0113noon_0005_0.jpg", 0), ("0001/0001_000_15_0113noon_0005_0.jpg", 1)],
    }
    for list_name, entries in lists.items():
        folder = train_dir if list_name in ("list_train.txt", "list_val.txt") else test_dir
        for rel, _ in entries:
            write_image(root / folder / rel)
        (root / list_name).write_text("".join(f"{rel} {pid}\n" for rel, pid in entries))


@pytest.mark.parametrize("version, folders", [(1, ("MSMT17_V1", "train", "test")),
                                              (2, ("MSMT17_V2", "mask_train_v2", "mask_test_v2"))])
def test_msmt17_list_files(tmp_path, version, folders):
    _msmt_tree(tmp_path / folders[0], folders[1], folders[2])
    ds = build_dataset("msmt17", tmp_path)
    assert ds.name == f"msmt17-v{version}"
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (0, 4), (1, 13)]  # list_val not used by default
    assert [(r.pid, r.camid) for r in ds.query] == [(0, 14)]  # test pids are their own namespace: 0 is kept
    assert [(r.pid, r.camid) for r in ds.gallery] == [(0, 2), (1, 14)]
    assert len(build_dataset("msmt17", tmp_path, use_val=True).train) == 4


def test_msmt17_bad_list_line(tmp_path):
    _msmt_tree(tmp_path / "MSMT17_V1", "train", "test")
    (tmp_path / "MSMT17_V1" / "list_query.txt").write_text("not-a-valid-line\n")
    with pytest.raises(DataError, match=r"1 line\(s\) of '.*list_query.txt' do not parse"):
        build_dataset("msmt17", tmp_path)


def test_generic_folder_with_regex(tmp_path):
    write_tree(tmp_path, {
        "train": ["id12-cam0-a.png", "id12-cam1-b.png", "id40-cam0-c.png"],
        "probe": ["id50-cam0-a.png"],
        "gallery": ["id50-cam1-a.png", "id51-cam0-a.png"],
    })
    ds = build_dataset("folder", tmp_path, pattern=r"id(?P<pid>\d+)-cam(?P<camid>\d+)", train_dir="train",
                       query_dir="probe", gallery_dir="gallery", camid_base=0, junk_pids=[], distractor_pids=[])
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (0, 1), (1, 0)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(50, 1), (51, 0)]
    with pytest.raises(ConfigError, match="named groups"):
        build_dataset("folder", tmp_path, pattern=r"id(\d+)")
    with pytest.raises(ConfigError, match="has no option 'color'; allowed: pattern, train_dir"):
        build_dataset("folder", tmp_path, color=1)


def test_bad_names_are_reported_with_count_and_first_few(market_tree):
    folder = market_tree / "Market-1501-v15.09.15" / "query"
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        write_image(folder / name)
    message = r"4 file name\(s\) in '.*query' do not match .* \(first: a.jpg, b.jpg, c.jpg\)"
    with pytest.raises(DataError, match=message):
        build_dataset("market1501", market_tree)


def test_missing_split_empty_split_and_identity_overlap(market_tree):
    root = market_tree / "Market-1501-v15.09.15"
    write_image(root / "bounding_box_train" / "0003_c1s1_000001_01.jpg")  # pid 3 is a test identity
    with pytest.raises(DataError, match=r"1 training identities also appear in query/gallery \(e.g. 3\)"):
        build_dataset("market1501", market_tree)
    (root / "bounding_box_train" / "0003_c1s1_000001_01.jpg").unlink()
    for p in (root / "query").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"the query split '.*query' has no usable images"):
        build_dataset("market1501", market_tree)
    (root / "query").rmdir()
    with pytest.raises(DataError, match=r"split folder '.*query' does not exist"):
        build_dataset("market1501", market_tree)


def test_query_without_cross_camera_match_warns_with_count(market_tree):
    write_image(market_tree / "Market-1501-v15.09.15" / "query" / "0003_c2s1_000999_00.jpg")  # gallery has c1, c2
    write_image(market_tree / "Market-1501-v15.09.15" / "query" / "0005_c1s1_000999_00.jpg")  # gallery has c1 only
    with pytest.warns(UserWarning, match="1 of 5 queries have no gallery image"):
        ds = build_dataset("market1501", market_tree)
    assert ds.stats()["query"]["identities_without_cross_camera_match"] == [5]


def test_cli_data_info_prints_json_and_errors_exit_2(market_tree, capsys):
    assert main(["data", "info", "--dataset", "market1501", "--root", str(market_tree)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"]["images"] == 3 and out["train"]["identities"] == 2
    assert main(["data", "info", "--dataset", "market1501", "--root", str(market_tree / "nope")]) == 2
    err = capsys.readouterr().err
    assert "data root" in err and "does not exist" in err and "Traceback" not in err
    assert main(["data", "info", "--dataset", "folder", "--root", str(market_tree / "Market-1501-v15.09.15"),
                 "--option", r"pattern=^(?P<pid>-?\d+)_c(?P<camid>\d)"]) == 0
    assert json.loads(capsys.readouterr().out)["gallery"]["images"] == 5


def test_the_data_set_registry_names_every_data_set_in_an_unknown_name_error(tmp_path):
    assert set(DATASETS) == {"market1501", "dukemtmcreid", "cuhk03", "msmt17", "synthetic", "folder"}
    with pytest.raises(ConfigError) as info:
        build_dataset("viper", tmp_path)
    message = str(info.value)
    assert message.startswith("data.dataset = 'viper': expected one of ")
    assert all(repr(name) in message for name in DATASETS)
    with pytest.raises(ConfigError, match="data set 'market1501' has no option 'pattern'; allowed: none"):
        build_dataset("market1501", tmp_path, pattern="x")
