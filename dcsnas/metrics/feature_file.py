"""The features file read by ``dcsnas eval --features``: a ``.npz`` with the arrays of :data:`REQUIRED`, and
optionally the image paths ``q_paths``/``g_paths`` (string arrays; relative paths are relative to the file's
folder)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dcsnas.errors import DataError
from dcsnas.utils.io import atomic_open

REQUIRED = {
    "qf": "(n_q, d)",
    "gf": "(n_g, d)",
    "q_pids": "(n_q,)",
    "g_pids": "(n_g,)",
    "q_camids": "(n_q,)",
    "g_camids": "(n_g,)",
}
PATHS = {"q_paths": "(n_q,)", "g_paths": "(n_g,)"}
MAX_ARRAY_BYTES = 2**32  # the most the arrays of one features file may hold in memory (4 GiB)


def _check_members(path: Path) -> None:
    """Read each member's .npy header (shape, dtype) before any array is allocated: a header that claims
    more than :data:`MAX_ARRAY_BYTES` in all, or more than the member holds, is a :class:`DataError`."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                shape, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(fh))
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if nbytes > info.file_size:
                    raise DataError(f"{path}: member {info.filename} claims {shape} {dtype} ({nbytes} bytes) but "
                                    f"holds {info.file_size} bytes")
                total += nbytes
    if total > MAX_ARRAY_BYTES:
        raise DataError(f"{path}: its arrays hold {total} bytes, more than the {MAX_ARRAY_BYTES} allowed")


def save_features(path, qf, gf, q_pids, g_pids, q_camids, g_camids, q_paths=None, g_paths=None) -> None:
    """Write the arrays (numpy or CPU tensors) atomically; image paths (both or neither) are stored as given."""
    arrays = {"qf": qf, "gf": gf, "q_pids": q_pids, "g_pids": g_pids, "q_camids": q_camids, "g_camids": g_camids}
    if (q_paths is None) != (g_paths is None):
        raise ValueError("save_features: give both q_paths and g_paths, or neither")
    if q_paths is not None:
        arrays.update(q_paths=np.asarray(q_paths, dtype=str), g_paths=np.asarray(g_paths, dtype=str))
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})


def load_features(path) -> dict[str, np.ndarray]:
    """Read a features file: the :data:`REQUIRED` arrays, plus ``q_paths``/``g_paths`` (absolute) if present."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"features file not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            _check_members(path)
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataError(f"{path} holds a single array, expected a .npz archive with {', '.join(REQUIRED)}")
        with npz:
            missing = [f"{k} {shape}" for k, shape in REQUIRED.items() if k not in npz.files]
            if missing:
                raise DataError(f"{path} lacks array(s): {', '.join(missing)}")
            data = {k: npz[k] for k in [*REQUIRED, *PATHS] if k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read features file {path}: {exc}") from exc
    for key, feats in (("q_paths", "qf"), ("g_paths", "gf")):
        if key in data:
            n = data[feats].shape[0] if data[feats].ndim else 0
            if data[key].dtype.kind not in "US" or data[key].shape != (n,):
                got = f"{data[key].dtype} array of shape {data[key].shape}"
                raise DataError(f"{path}: {key} must be a string array of shape {PATHS[key]} = ({n},), got {got}")
            data[key] = np.array([str(path.parent / p) for p in data[key].astype(str)])
    return data
