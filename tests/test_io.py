from __future__ import annotations

import json

import pytest
import torch

from dcsnas.utils.io import atomic_open, atomic_torch_save, atomic_write_json


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "ckpt.json"
    atomic_write_json(target, {"epoch": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as fh:
            fh.write('{"epoch": 2')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.json"]  # no temporary file left behind


def test_atomic_torch_save_round_trip(tmp_path):
    state = {"w": torch.arange(4.0)}
    atomic_torch_save(state, tmp_path / "sub" / "last.pt")
    assert torch.equal(torch.load(tmp_path / "sub" / "last.pt")["w"], state["w"])


def test_atomic_write_uses_the_default_permissions(tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    atomic_write_json(tmp_path / "m.json", {})
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~umask
