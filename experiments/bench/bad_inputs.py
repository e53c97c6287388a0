"""Probe: run bad inputs through the ``dcsnas`` command on the tiny preset and count how each one ends.

Each case is one ``dcsnas ...`` command (hostile configs and overrides, YAML bombs, output paths over runs and
protected folders, crafted model files, checkpoints, images, feature files, metrics.json, arch.json, search
spaces, tune configs, flags, OS errors), run as ``dcsnas.cli.main(argv)`` in a child process forked from the
probe (torch is imported once; an uncaught exception prints its traceback and exits 1, as the console script
does; ``--subprocess`` runs ``python -m dcsnas.cli`` instead, slower). Outcomes:

- ``clean``: exit 2 with exactly one ``dcsnas: error:`` line and no traceback;
- ``traceback``: a Python traceback, or an exit code other than 0 and 2;
- ``silent``: exit 0 (the bad input was accepted);
- ``hang``: still running after ``--timeout`` seconds;
- ``data_lost``: a file of the reference run, the data set, the protected folders or an existing output
  changed (restored before the next case);
- ``code_executed``: a crafted file's payload ran (its marker file appeared);
- ``unclear``: anything else (e.g. exit 2 with several error lines).

Set-up (about a minute): the tiny synthetic data set, a finished 1-epoch training run, a 1-epoch search
and its ONNX export, in a temporary folder (``--work DIR`` keeps it). Prints JSON: the counts, then every
case that is not clean with its last stderr line.

Usage: OMP_NUM_THREADS=1 python experiments/bench/bad_inputs.py [--timeout 60] [--only SUBSTRING] [--list]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the dcsnas of this checkout, in this process and its forked children
TINY = ROOT / "experiments" / "cpu" / "tiny_test.yaml"
SEARCH = ROOT / "experiments" / "cpu" / "search_tiny.yaml"
SPACE = ROOT / "search_spaces" / "tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@dataclass
class Work:
    """The probe's folder: data set, reference runs, exported model, features, and a scratch folder per case."""

    root: Path

    def __getattr__(self, name: str) -> Path:
        return self.root / {"data": "datasets/tiny", "run": "run", "search": "search", "onnx": "model.onnx",
                            "feats": "feats.npz", "home": "home", "marker": "MARKER"}[name]

    def scratch(self, case: str) -> Path:
        path = self.root / "cases" / case
        path.mkdir(parents=True, exist_ok=True)
        return path


Argv = Union[list, Callable[[Work, Path], list]]


def cli(*args: str) -> list:
    return [sys.executable, "-m", "dcsnas.cli", *map(str, args)]


def run_forked(args: list, cwd: Path, timeout: float) -> tuple[int | None, str]:
    """``dcsnas.cli.main(args[3:])`` in a forked child with ``cwd``; ``(exit code or None on timeout, stderr)``.
    The commands' modules are imported here first, so that each child starts in milliseconds."""
    import dcsnas.compare  # noqa: F401
    import dcsnas.engine.trainer  # noqa: F401
    import dcsnas.export  # noqa: F401
    import dcsnas.extract  # noqa: F401
    import dcsnas.nas.search  # noqa: F401
    from dcsnas.cli import main as dcsnas_main

    with tempfile.TemporaryFile("w+") as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.setsid()
                os.chdir(cwd)
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.dup2(err.fileno(), 2)
                code = dcsnas_main([str(a) for a in args[3:]])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code if isinstance(code, int) else 1)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None, ""
            time.sleep(0.02)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), err.read()


def run_cli(args: list, cwd: Path, timeout: float) -> tuple[int | None, str]:
    try:
        proc = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, ""
    return proc.returncode, proc.stderr


def setup(w: Work, timeout: float) -> None:
    """Data, a finished training run, a search with its arch.json, an ONNX export and a features file."""
    steps = [
        (w.data, cli("data", "synth", "--preset", "tiny", "--out", w.data)),
        (w.run / "metrics.json", cli("train", "--config", TINY, "--set", f"data.root={w.data}", "--set",
                                     "optim.epochs=1", "--set", "eval.every=0", "--set", "threads=1", "--out", w.run,
                                     "--no-progress")),
        (w.search / "arch.json", cli("search", "--config", SEARCH, "--set", f"data.root={w.data}", "--set",
                                     f"search.space={SPACE}", "--set", "optim.epochs=1", "--set",
                                     "search.warmup_epochs=0", "--set", "threads=1", "--out", w.search,
                                     "--no-progress")),
        (w.onnx, cli("export", "--run", w.run, "--format", "onnx", "--out", w.onnx)),
        (w.feats, cli("extract", "--run", w.run, "--query", w.data / "query", "--gallery",
                      w.data / "bounding_box_test", "--out", w.feats, "--device", "cpu")),
    ]
    for done, args in steps:
        if not done.exists():
            code, err = run_cli(args, w.root, timeout * 10)
            if code != 0:
                raise SystemExit(f"set-up failed: {' '.join(args[3:])}\n{err}")
    (w.home / "thesis.tex").parent.mkdir(exist_ok=True)
    (w.home / "thesis.tex").write_text("precious")


def fingerprint(paths: list[Path]) -> str:
    """A hash of every file (name and content) under ``paths``."""
    digest = hashlib.sha256()
    for base in paths:
        for p in sorted(base.rglob("*")) if base.is_dir() else [base]:
            if p.is_file() and not p.is_symlink() and p.name != ".lock":
                digest.update(str(p).encode())
                digest.update(p.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ case builders
def train(*sets: str, config: Path = TINY, extra: tuple = ()) -> Argv:
    def build(w: Work, tmp: Path) -> list:
        args = ["train", "--config", config, "--set", f"data.root={w.data}", "--set", "optim.epochs=1",
                "--out", tmp / "out", "--no-progress", *extra]
        for s in sets:
            args += ["--set", s]
        return cli(*args)
    return build


def search(*sets: str) -> Argv:
    def build(w: Work, tmp: Path) -> list:
        args = ["search", "--config", SEARCH, "--set", f"data.root={w.data}", "--set", f"search.space={SPACE}",
                "--set", "optim.epochs=2", "--out", tmp / "out", "--no-progress"]
        for s in sets:
            args += ["--set", s]
        return cli(*args)
    return build


def with_file(name: str, content: Union[str, bytes, Callable[[Work], Union[str, bytes]]],
              argv: Callable[[Work, Path, Path], list]) -> Argv:
    """A case that writes ``content`` to ``tmp/name`` first."""
    def build(w: Work, tmp: Path) -> list:
        path = tmp / name
        data = content(w) if callable(content) else content
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return argv(w, tmp, path)
    return build


def config_file(text: str) -> Argv:
    return with_file("config.yaml", lambda w: text.replace("DATA", str(w.data)).replace("MARKER", str(w.marker)),
                     lambda w, tmp, p: cli("train", "--config", p, "--set", "optim.epochs=1", "--out", tmp / "out",
                                           "--no-progress"))


def alias_bomb() -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(9)]
    return "\n".join(lines) + "\n"


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def data_copy(change: Callable[[Path], None]) -> Argv:
    """Train on a copy of the data set changed by ``change(root)``."""
    def build(w: Work, tmp: Path) -> list:
        root = tmp / "data"
        shutil.copytree(w.data, root)
        change(root)
        return cli("train", "--config", TINY, "--set", f"data.root={root}", "--set", "optim.epochs=1", "--out",
                   tmp / "out", "--no-progress")
    return build


def first_train_image(root: Path) -> Path:
    return sorted((root / "bounding_box_train").iterdir())[0]


def replace_by_fifo(root: Path) -> None:
    """A named pipe in place of a training image: a reader that opens it blocks until a writer comes."""
    image = first_train_image(root)
    image.unlink()
    os.mkfifo(image)


def one_identity(root: Path) -> None:
    train_dir = root / "bounding_box_train"
    keep = first_train_image(root).name.split("_")[0]
    for p in train_dir.iterdir():
        if not p.name.startswith(keep):
            p.unlink()


def crafted_pickle(w: Work, path: Path) -> None:
    code = ("import os, torch\nclass P:\n    def __reduce__(self):\n        return (os.system, ('touch %s',))\n"
            "torch.save({'model': {}, 'epoch': 0, 'p': P()}, %r)\n" % (w.marker, str(path)))
    subprocess.run([sys.executable, "-c", code], env=ENV, check=True)


def run_copy(change: Callable[[Work, Path], None], command: Callable[[Work, Path, Path], list]) -> Argv:
    """A copy of the reference run changed by ``change(w, copy)``, then ``command(w, tmp, copy)``."""
    def build(w: Work, tmp: Path) -> list:
        copy = tmp / "run"
        shutil.copytree(w.run, copy, ignore=shutil.ignore_patterns(".lock"))
        change(w, copy)
        return command(w, tmp, copy)
    return build


def eval_run(w: Work, tmp: Path, run: Path) -> list:
    return cli("eval", "--run", run, "--device", "cpu")


def compare(w: Work, tmp: Path, run: Path) -> list:
    return cli("compare", run, "--no-latency", "--device", "cpu")


def metrics_json(**changes) -> Argv:
    def change(w: Work, run: Path) -> None:
        metrics = json.loads((run / "metrics.json").read_text())
        for key, value in changes.items():
            node = metrics
            *parents, last = key.split("__")
            for p in parents:
                node = node[p]
            node[last.replace("_1", "-1") if last == "rank_1" else last] = value
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run_copy(change, compare)


def features(arrays: Callable[[], dict], *flags: str) -> Argv:
    def build(w: Work, tmp: Path) -> list:
        import numpy as np

        path = tmp / "f.npz"
        with open(path, "wb") as fh:
            np.savez(fh, **arrays())
        return cli("eval", "--features", path, *flags)
    return build


def good_arrays() -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    return {"qf": rng.normal(size=(4, 8)), "gf": rng.normal(size=(6, 8)), "q_pids": np.arange(1, 5),
            "g_pids": np.arange(1, 7), "q_camids": np.zeros(4, int), "g_camids": np.ones(6, int)}


def huge_member(w: Work) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    with open(w.feats, "rb") as fh:
        buf.write(fh.read())
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)})
    with zipfile.ZipFile(buf, "a") as archive:
        archive.writestr("qf_big.npy", header.getvalue() + b"\0" * 64)
    return buf.getvalue()


def arch_case(change: Callable[[dict], None]) -> Argv:
    def build(w: Work, tmp: Path) -> list:
        arch = json.loads((w.search / "arch.json").read_text())
        change(arch)
        folder = tmp / "derived"
        folder.mkdir()
        shutil.copy(w.search / "space.yaml", folder / "space.yaml")
        (folder / "arch.json").write_text(json.dumps(arch))
        return cli("retrain", "--arch", folder / "arch.json", "--config", TINY, "--set", f"data.root={w.data}",
                   "--set", "model.attention=[]", "--set", "optim.epochs=1", "--out", tmp / "out", "--no-progress")
    return build


def set_path(obj: dict, path: str, value) -> dict:
    node = obj
    *parents, last = path.split("/")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return obj


def space_case(path: str, value) -> Argv:
    def build(w: Work, tmp: Path) -> list:
        import yaml

        space = yaml.safe_load(SPACE.read_text())
        set_path(space, path, value)
        (tmp / "space.yaml").write_text(yaml.safe_dump(space))
        return search(f"search.space={tmp / 'space.yaml'}")(w, tmp)
    return build


def tune_case(text: str) -> Argv:
    return with_file("tune.yaml", f"config: {TINY}\n{text}",
                     lambda w, tmp, p: cli("tune", "--config", p, "--out", tmp / "out"))


def onnx_meta(meta: Union[dict, str, None], names: tuple = ("images", "embeddings")) -> Argv:
    """An ONNX model (images -> mean over H, W) with ``meta`` as its dcsnas metadata, given to extract."""
    def build(w: Work, tmp: Path) -> list:
        import onnx
        from onnx import TensorProto, helper

        node = helper.make_node("ReduceMean", [names[0]], [names[1]], axes=[2, 3], keepdims=0)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(names[0], TensorProto.FLOAT,
                                                                               ["n", 3, 8, 4])],
                                  [helper.make_tensor_value_info(names[1], TensorProto.FLOAT, ["n", 3])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        if meta is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = "dcsnas", meta if isinstance(meta, str) else json.dumps(meta)
        onnx.save(model, str(tmp / "m.onnx"))
        return cli("extract", "--model", tmp / "m.onnx", "--images", w.data / "query", "--out", tmp / "f.npz",
                   "--device", "cpu")
    return build


GOOD_META = {"input_size": [8, 4], "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "embedding_dim": 3,
             "flip": False}


def torchscript_model(w: Work, tmp: Path) -> list:
    import torch

    traced = torch.jit.trace(torch.nn.Flatten(), torch.zeros(1, 3, 8, 4))
    torch.jit.save(traced, str(tmp / "m.pt"), _extra_files={"dcsnas": json.dumps(GOOD_META)})
    return cli("extract", "--model", tmp / "m.pt", "--images", w.data / "query", "--out", tmp / "f.npz")


def existing(name: str, command: Callable[[Work, Path, Path], list]) -> Argv:
    """An output file that exists (and must survive without --force)."""
    def build(w: Work, tmp: Path) -> list:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep me")
        return command(w, tmp, path)
    return build


def cases() -> list[tuple[str, Argv]]:
    out: list[tuple[str, Argv]] = []
    bad_values = {
        "optim.lr": [".nan", ".inf", "-1", "0", "abc", "[1]"], "optim.epochs": ["0", "-1", "1.5", "1000000000000"],
        "optim.momentum": ["-0.1", ".nan"], "optim.milestones": ["[-1]", "abc", "[.nan]"],
        "optim.weight_decay": ["-1", ".inf"], "optim.gamma": ["-.5"], "optim.warmup_epochs": ["-1"],
        "data.p": ["0", "-3", "1000000", "2.5"], "data.k": ["0", "1000000"],
        "data.test_batch_size": ["0", "10000000"], "data.num_workers": ["-1", "10000"],
        "data.transforms.height": ["0", "100000", "-5"], "data.transforms.width": ["0", "100000"],
        "data.transforms.std": ["[0,0,0]", "[1,1]", "[.nan,1,1]"], "data.transforms.mean": ["[0.5,0.5,0.5,0.5]",
                                                                                        "[.inf,0,0]"],
        "data.transforms.flip_p": ["1.5", "-0.1"], "data.transforms.erasing_p": ["2"],
        "data.transforms.pad": ["-1", "100000"], "loss.label_smoothing": ["1.0", "-0.1", ".nan"],
        "loss.triplet_margin": ["-0.3", ".nan"], "loss.ce_weight": [".nan", "-1"], "loss.center_lr": ["-1"],
        "loss.ib_weight": [".inf"], "loss.ib_input_size": ["[0,8]", "[16]"],
        "model.width_mult": ["0", "-1", ".nan", "1000"], "model.pcb_reduce_dim": ["-1"], "model.last_stride": ["3"],
        "model.head": ["xyz"], "model.backbone": ["nosuch"], "schedule.dcs_tau_start": ["0", "-1", ".nan"],
        "schedule.dcs_tau_end": ["0"], "schedule.rpp_start_epoch": ["0", "-5"], "eval.every": ["-1"],
        "eval.val_identities": ["-2"], "eval.max_rank": ["0"], "eval.metric": ["manhattan"],
        "eval.protocol_seed": ["-1"], "seed": ["-1", "4294967296", "abc"], "threads": ["-1", "100000"],
        "log_every": ["0"], "optim.lrr": ["1"], "foo": ["1"], "amp_dtype": ["float8"], "device": ["tpu"],
        "model.pcb_parts": ["0"],
    }
    for key, values in bad_values.items():
        for value in values:
            extra = ("model.head=pcb",) if key == "model.pcb_parts" else ()
            out.append((f"set:{key}={value}", train(f"{key}={value}", *extra)))
    for s in ["search.warmup_epochs=2", "search.tau_start=0", "search.tau_decay=1.5", "search.arch_fraction=1",
              "search.cost.a=.nan", "search.cost.kind=hinge", "search.arch_lr=0", "search.space=/no/such.yaml",
              "search.mode=x", "search.cost.unit=-1", "search.bn_recalibration_batches=-1"]:
        out.append((f"search:{s}", search(s)))
    # YAML files
    out += [
        ("yaml:alias-bomb", config_file(f"base: {TINY}\n{alias_bomb()}")),
        ("yaml:duplicate-section", config_file(f"base: {TINY}\noptim:\n  lr: 0.1\noptim:\n  epochs: 1\n")),
        ("yaml:duplicate-key", config_file(f"base: {TINY}\nseed: 1\nseed: 2\n")),
        ("yaml:python-tag", config_file(f"base: {TINY}\nx: !!python/object/apply:os.system ['touch MARKER']\n")),
        ("yaml:not-mapping", config_file("- a\n- b\n")),
        ("yaml:deep-nesting", config_file("a: " + "[" * 3000 + "]" * 3000 + "\n")),
        ("yaml:base-cycle", config_file("base: config.yaml\n")),
        ("yaml:base-missing", config_file("base: nowhere.yaml\n")),
        ("yaml:base-number", config_file("base: 3\n")),
        ("yaml:not-utf8", with_file("c.yaml", f"base: {TINY}\n# caf\xe9\n".encode("latin-1"),
                                    lambda w, tmp, p: cli("train", "--config", p, "--out", tmp / "out"))),
        ("yaml:huge-file", with_file("c.yaml", "# x\n" * 5_000_000,
                                     lambda w, tmp, p: cli("train", "--config", p, "--out", tmp / "out"))),
        ("yaml:config-is-folder", lambda w, tmp: cli("train", "--config", tmp, "--out", tmp / "out")),
        ("yaml:config-is-fifo", lambda w, tmp: (os.mkfifo(tmp / "c.yaml"), cli("train", "--config", tmp / "c.yaml",
                                                                              "--out", tmp / "out"))[1]),
        ("yaml:override-bomb", train("optim.milestones=" + "[" * 3000 + "]" * 3000)),
        ("yaml:run-config-alias-bomb", run_copy(lambda w, r: (r / "config.yaml").write_text(alias_bomb()), eval_run)),
        ("yaml:run-config-duplicate", run_copy(lambda w, r: (r / "config.yaml").write_text(
            (r / "config.yaml").read_text() + "seed: 3\n"), eval_run)),
    ]
    # output paths: --force and runs' own files
    out += [
        ("force:cwd", lambda w, tmp: cli("train", "--config", TINY, "--set", f"data.root={w.data}", "--out", ".",
                                         "--force")),
        ("force:cwd-parent", lambda w, tmp: cli("train", "--config", TINY, "--set", f"data.root={w.data}", "--out",
                                                "..", "--force")),
        ("force:data-root", lambda w, tmp: cli("train", "--config", TINY, "--set", f"data.root={w.data}", "--out",
                                               w.data, "--force")),
        ("force:data-parent", lambda w, tmp: cli("train", "--config", TINY, "--set", f"data.root={w.data}",
                                                 "--out", w.data.parent, "--force")),
        ("force:config-folder", with_file("c.yaml", f"base: {TINY}\n", lambda w, tmp, p: cli(
            "train", "--config", p, "--set", f"data.root={w.data}", "--out", tmp, "--force"))),
        ("force:home", lambda w, tmp: cli("train", "--config", TINY, "--set", f"data.root={w.data}", "--out", w.home,
                                          "--force")),
        ("force:symlink-to-run", lambda w, tmp: ((tmp / "link").symlink_to(w.run), cli(
            "train", "--config", TINY, "--set", f"data.root={w.data}", "--out", tmp / "link", "--force"))[1]),
        ("force:not-a-run", lambda w, tmp: ((tmp / "photos").mkdir(), (tmp / "photos" / "a.jpg").write_text("x"), cli(
            "train", "--config", TINY, "--set", f"data.root={w.data}", "--out", tmp / "photos", "--force"))[2]),
        ("out:inside-checkpoints", lambda w, tmp: cli("train", "--config", TINY, "--set", f"data.root={w.data}",
                                                      "--out", w.run / "checkpoints" / "new")),
        ("out:finished-run", lambda w, tmp: cli("train", "--config", TINY, "--set", f"data.root={w.data}", "--out",
                                                w.run)),
        ("out:is-a-file", lambda w, tmp: cli("train", "--config", TINY, "--set", f"data.root={w.data}", "--out",
                                             w.feats)),
        ("eval:out-run", lambda w, tmp: cli("eval", "--features", w.feats, "--out", w.run)),
        ("eval:out-checkpoints", lambda w, tmp: cli("eval", "--features", w.feats, "--out", w.run / "checkpoints")),
        ("export:over-checkpoint", lambda w, tmp: cli("export", "--run", w.run, "--format", "onnx", "--out",
                                                      w.run / "checkpoints" / "last.pt", "--force")),
        ("extract:over-metrics", lambda w, tmp: cli("extract", "--run", w.run, "--images", w.data / "query", "--out",
                                                    w.run / "metrics.json", "--force")),
        ("derive:over-config", lambda w, tmp: cli("derive", w.search, "--out", w.search / "config.yaml", "--force")),
        ("bench:over-arch", lambda w, tmp: cli("bench", "model", "--out", w.search / "arch.json", "--force")),
        ("compare:out-run", lambda w, tmp: cli("compare", w.run, "--out", w.run, "--no-latency", "--force")),
        ("eval:existing-metrics", existing("e/metrics.json", lambda w, tmp, p: cli(
            "eval", "--features", w.feats, "--out", p.parent))),
        ("export:existing", existing("m.onnx", lambda w, tmp, p: cli("export", "--run", w.run, "--format", "onnx",
                                                                      "--out", p))),
        ("extract:existing", existing("f.npz", lambda w, tmp, p: cli("extract", "--run", w.run, "--images",
                                                                      w.data / "query", "--out", p))),
        ("bench:existing", existing("b.json", lambda w, tmp, p: cli("bench", "model", "--out", p))),
        ("derive:existing", existing("a.json", lambda w, tmp, p: cli("derive", w.search, "--out", p))),
        ("compare:existing", existing("c/compare.csv", lambda w, tmp, p: cli(
            "compare", w.run, "--out", p.parent, "--no-latency"))),
        ("compare:out-is-file", lambda w, tmp: cli("compare", w.run, "--out", w.feats, "--no-latency")),
        ("eval:out-is-file", lambda w, tmp: cli("eval", "--features", w.feats, "--out", w.feats)),
        ("bench:out-fifo", lambda w, tmp: (os.mkfifo(tmp / "p.json"), cli("bench", "model", "--out", tmp / "p.json",
                                                                          "--force"))[1]),
        ("bench:visualize-over-run", lambda w, tmp: cli("bench", "attention", "--quick", "--visualize",
                                                        w.run / "config.yaml", "--force")),
    ]
    # model files
    out += [
        ("model:torchscript-untrusted", torchscript_model),
        ("model:onnx-no-metadata", onnx_meta(None)),
        ("model:onnx-meta-not-json", onnx_meta("{not json")),
        ("model:onnx-meta-list", onnx_meta("[1, 2]")),
        ("model:onnx-huge-input", onnx_meta({**GOOD_META, "input_size": [100000, 100000]})),
        ("model:onnx-std-zero", onnx_meta({**GOOD_META, "std": [0, 0, 0]})),
        ("model:onnx-mean-short", onnx_meta({**GOOD_META, "mean": [0.5]})),
        ("model:onnx-dim-string", onnx_meta({**GOOD_META, "embedding_dim": "3"})),
        ("model:onnx-dim-huge", onnx_meta({**GOOD_META, "embedding_dim": 10**12})),
        ("model:onnx-flip-string", onnx_meta({**GOOD_META, "flip": "yes"})),
        ("model:onnx-wrong-names", onnx_meta(GOOD_META, names=("x", "y"))),
        ("model:onnx-wrong-size", onnx_meta({**GOOD_META, "input_size": [16, 8]})),
        ("model:random-bytes", with_file("m.onnx", os.urandom(256), lambda w, tmp, p: cli(
            "extract", "--model", p, "--images", w.data / "query", "--out", tmp / "f.npz"))),
        ("model:empty-file", with_file("m.onnx", b"", lambda w, tmp, p: cli(
            "extract", "--model", p, "--images", w.data / "query", "--out", tmp / "f.npz"))),
        ("model:zip-not-torchscript", with_file("m.pt", lambda w: (w.feats).read_bytes(), lambda w, tmp, p: cli(
            "extract", "--model", p, "--images", w.data / "query", "--out", tmp / "f.npz", "--trust-torchscript"))),
        ("model:fifo", lambda w, tmp: (os.mkfifo(tmp / "m.onnx"), cli(
            "extract", "--model", tmp / "m.onnx", "--images", w.data / "query", "--out", tmp / "f.npz"))[1]),
    ]
    # checkpoints and run directories
    out += [
        ("ckpt:crafted-pickle-eval", run_copy(lambda w, r: crafted_pickle(w, r / "checkpoints" / "last.pt"), eval_run)),
        ("ckpt:crafted-pickle-export", run_copy(lambda w, r: crafted_pickle(w, r / "checkpoints" / "last.pt"),
                                                lambda w, tmp, r: cli("export", "--run", r, "--format", "onnx",
                                                                      "--out", tmp / "m.onnx"))),
        ("ckpt:truncated", run_copy(lambda w, r: (r / "checkpoints" / "last.pt").write_bytes(
            (r / "checkpoints" / "last.pt").read_bytes()[:1000]), eval_run)),
        ("ckpt:empty", run_copy(lambda w, r: (r / "checkpoints" / "last.pt").write_bytes(b""), eval_run)),
        ("run:config-bad-value", run_copy(lambda w, r: (r / "config.yaml").write_text(
            (r / "config.yaml").read_text().replace("seed: 0", "seed: -4")), eval_run)),
        ("run:no-config", run_copy(lambda w, r: (r / "config.yaml").unlink(), eval_run)),
        ("run:resume-changed-model", run_copy(lambda w, r: None, lambda w, tmp, r: cli(
            "train", "--config", TINY, "--set", f"data.root={w.data}", "--set", "optim.epochs=2", "--set",
            "model.width_mult=0.5", "--out", r, "--resume", "--no-progress"))),
    ]
    # data
    out += [
        ("data:fifo-image", data_copy(replace_by_fifo)),
        ("data:bomb-header", data_copy(lambda r: first_train_image(r).write_bytes(png(100000, 100000)))),
        ("data:big-image", data_copy(lambda r: first_train_image(r).write_bytes(png(6000, 5000)))),
        ("data:empty-image", data_copy(lambda r: first_train_image(r).write_bytes(b""))),
        ("data:one-identity", data_copy(one_identity)),
        ("data:no-train-folder", data_copy(lambda r: shutil.rmtree(r / "bounding_box_train"))),
        ("data:root-is-file", lambda w, tmp: cli("train", "--config", TINY, "--set", f"data.root={w.feats}",
                                                 "--out", tmp / "out")),
        ("data:bad-name", data_copy(lambda r: first_train_image(r).rename(r / "bounding_box_train" / "x.jpg"))),
        ("info:camid-base-abc", lambda w, tmp: cli("data", "info", "--dataset", "folder", "--root", w.data,
                                                   "--option", "camid_base=abc")),
        ("info:pattern-no-groups", lambda w, tmp: cli("data", "info", "--dataset", "folder", "--root", w.data,
                                                      "--option", "pattern=^abc")),
        ("info:pattern-invalid", lambda w, tmp: cli("data", "info", "--dataset", "folder", "--root", w.data,
                                                    "--option", "pattern=((")),
        ("info:unknown-dataset", lambda w, tmp: cli("data", "info", "--dataset", "nope", "--root", w.data)),
        ("synth:unknown-preset", lambda w, tmp: cli("data", "synth", "--preset", "huge", "--out", tmp / "d")),
        ("synth:over-run", lambda w, tmp: cli("data", "synth", "--preset", "tiny", "--out", w.run)),
    ]
    # features files
    import numpy as np
    out += [
        ("npz:huge-member", with_file("f.npz", huge_member, lambda w, tmp, p: cli("eval", "--features", p))),
        ("npz:not-zip", with_file("f.npz", b"plain text", lambda w, tmp, p: cli("eval", "--features", p))),
        ("npz:missing-array", features(lambda: {k: v for k, v in good_arrays().items() if k != "gf"})),
        ("npz:object-array", features(lambda: {**good_arrays(), "qf": np.array([{"a": 1}] * 4, dtype=object)})),
        ("npz:dim-mismatch", features(lambda: {**good_arrays(), "gf": np.zeros((6, 9))})),
        ("npz:pid-count", features(lambda: {**good_arrays(), "q_pids": np.arange(3)})),
        ("npz:nan-features", features(lambda: {**good_arrays(), "qf": np.full((4, 8), np.nan)})),
        ("npz:string-pids", features(lambda: {**good_arrays(), "q_pids": np.array(["a", "b", "c", "d"])})),
        ("eval:max-rank-0", features(good_arrays, "--max-rank", "0")),
        ("eval:chunk-negative", features(good_arrays, "--chunk-size", "-1")),
        ("eval:visualize-no-paths", lambda w, tmp: cli("eval", "--features", good_npz(tmp), "--visualize", "3",
                                                       "--out", tmp / "o")),
        ("eval:missing-file", lambda w, tmp: cli("eval", "--features", tmp / "none.npz")),
    ]
    # metrics.json read by compare
    out += [
        ("metrics:num-classes-huge", metrics_json(num_classes=10**10)),
        ("metrics:map-string", metrics_json(test__mAP="abc")),
        ("metrics:map-nan", with_nan_metrics()),
        ("metrics:cmc-empty", metrics_json(test__cmc=[])),
        ("metrics:epochs-negative", metrics_json(epochs=-3)),
        ("metrics:test-missing", run_copy(lambda w, r: (r / "metrics.json").write_text('{"dataset": "x"}'), compare)),
        ("metrics:not-json", run_copy(lambda w, r: (r / "metrics.json").write_text("{"), compare)),
        ("metrics:rank1-above-1", metrics_json(test__rank_1=7)),
    ]
    # arch.json
    out += [
        ("arch:width-0", arch_case(lambda a: set_path(a, "stages/0/width", 0))),
        ("arch:width-huge", arch_case(lambda a: set_path(a, "stages/0/width", 10**6))),
        ("arch:stage-training", arch_case(lambda a: set_path(a, "stages/0/name", "training"))),
        ("arch:op-unknown", arch_case(lambda a: set_path(a, "stages/0/ops/0", "ir_k9_e9"))),
        ("arch:version-2", arch_case(lambda a: set_path(a, "version", 2))),
        ("arch:format-wrong", arch_case(lambda a: set_path(a, "format", "x"))),
        ("arch:skeleton-list", arch_case(lambda a: set_path(a, "skeleton", []))),
        ("arch:input-size-nan", arch_case(lambda a: set_path(a, "input_size", [float("nan"), 32]))),
        ("arch:stride-3", arch_case(lambda a: set_path(a, "stages/0/stride", 3))),
        ("arch:stem-negative", arch_case(lambda a: set_path(a, "stem_channels", -8))),
    ]
    # search spaces
    out += [
        ("space:stage-training", space_case("stages/0/name", "training")),
        ("space:stage-forward", space_case("stages/0/name", "forward")),
        ("space:widths-0", space_case("stages/0/widths", [0, 8])),
        ("space:widths-huge", space_case("stages/0/widths", [8, 100000])),
        ("space:blocks-0", space_case("stages/0/blocks", 0)),
        ("space:duplicate-stage", space_case("stages/1/name", "s1")),
        ("space:attention-unknown", space_case("stages/1/attention/types", ["none", "magic"])),
        ("space:head-channels-nan", space_case("head_channels", float("nan"))),
    ]
    # tune configs
    out += [
        ("tune:value-empty", tune_case("search_space:\n  optim.lr: {_type: choice, _value: []}\n")),
        ("tune:value-string", tune_case("search_space:\n  optim.lr: {_type: uniform, _value: abc}\n")),
        ("tune:unknown-key", tune_case("search_space:\n  optim.lrr: {_type: choice, _value: [0.1]}\n")),
        ("tune:loguniform-zero", tune_case("search_space:\n  optim.lr: {_type: loguniform, _value: [0, 0.1]}\n")),
        ("tune:choice-invalid", tune_case("search_space:\n  optim.lr: {_type: choice, _value: [-1, 0.1]}\n")),
        ("tune:low-above-high", tune_case("search_space:\n  optim.lr: {_type: uniform, _value: [0.2, 0.1]}\n")),
        ("tune:port-80", tune_case("port: 80\nsearch_space:\n  optim.lr: {_type: choice, _value: [0.1]}\n")),
        ("tune:nan-bound", tune_case("search_space:\n  optim.lr: {_type: uniform, _value: [.nan, 0.1]}\n")),
    ]
    # flags
    out += [
        ("flag:bench-batch-0", lambda w, tmp: cli("bench", "model", "--batch", "0")),
        ("flag:bench-batch-huge", lambda w, tmp: cli("bench", "model", "--config", TINY, "--batch", "1000000000")),
        ("flag:bench-threads-0", lambda w, tmp: cli("bench", "attention", "--threads", "0")),
        ("flag:bench-repeats-neg", lambda w, tmp: cli("bench", "model", "--repeats", "-1")),
        ("flag:extract-batch-0", lambda w, tmp: cli("extract", "--run", w.run, "--images", w.data / "query",
                                                    "--out", tmp / "f.npz", "--batch-size", "0")),
        ("flag:extract-batch-huge", lambda w, tmp: cli("extract", "--run", w.run, "--images", w.data / "query",
                                                       "--out", tmp / "f.npz", "--batch-size", "1000000000000")),
        ("flag:compare-repeats-0", lambda w, tmp: cli("compare", w.run, "--repeats", "0")),
        ("flag:eval-vis-queries-0", lambda w, tmp: cli("eval", "--features", w.feats, "--visualize", "2",
                                                       "--vis-queries", "0", "--out", tmp / "o")),
        ("flag:resume-and-force", lambda w, tmp: cli("train", "--config", TINY, "--out", w.run, "--resume",
                                                     "--force")),
        ("flag:bench-num-classes-huge", lambda w, tmp: cli("bench", "model", "--config", TINY, "--num-classes",
                                                           "100000000000")),
    ]
    # OS errors
    out += [
        ("os:eval-out-proc", lambda w, tmp: cli("eval", "--features", w.feats, "--out", "/proc/self/nope")),
        ("os:bench-out-proc", lambda w, tmp: cli("bench", "model", "--config", TINY, "--repeats", "1", "--out",
                                                 "/proc/self/nope/x.json")),
        ("os:train-out-proc", lambda w, tmp: cli("train", "--config", TINY, "--set", f"data.root={w.data}", "--out",
                                                 "/proc/self/nope")),
        ("os:extract-out-sys", lambda w, tmp: cli("extract", "--run", w.run, "--images", w.data / "query", "--out",
                                                  "/sys/nope/f.npz")),
    ]
    return out


def with_nan_metrics() -> Argv:
    def change(w: Work, run: Path) -> None:
        text = (run / "metrics.json").read_text()
        metrics = json.loads(text)
        metrics["test"]["mAP"] = float("nan")
        (run / "metrics.json").write_text(json.dumps(metrics))  # json writes NaN, which Python's reader accepts
    return run_copy(change, compare)


def good_npz(tmp: Path) -> Path:
    import numpy as np

    with open(tmp / "g.npz", "wb") as fh:
        np.savez(fh, **good_arrays())
    return tmp / "g.npz"


def classify(code: int | None, err: str, lost: bool, executed: bool) -> str:
    if executed:
        return "code_executed"
    if lost:
        return "data_lost"
    if code is None:
        return "hang"
    if "Traceback" in err or code not in (0, 2):
        return "traceback"
    if code == 0:
        return "silent"
    errors = [line for line in err.splitlines() if line.startswith("dcsnas: error:")]
    other = [line for line in err.splitlines() if line.strip() and not line.startswith("dcsnas: ")]
    return "clean" if len(errors) == 1 and not other else "unclear"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the probe's files here (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds before a case counts as a hang")
    parser.add_argument("--only", default="", help="run only the cases whose id contains this")
    parser.add_argument("--list", action="store_true", help="list the case ids and exit")
    parser.add_argument("--subprocess", action="store_true", help="one python -m dcsnas.cli process per case")
    args = parser.parse_args()
    all_cases = cases()
    ids = [i for i, _ in all_cases]
    assert len(set(ids)) == len(ids), "case ids repeat"
    if args.list:
        print("\n".join(ids))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="dcsnas-bad-inputs-"))
    work.mkdir(parents=True, exist_ok=True)
    w = Work(work.resolve())
    setup(w, args.timeout)
    guarded = [w.run, w.search, w.data, w.feats, w.onnx, w.home]
    pristine = work / "pristine"
    if not pristine.exists():
        pristine.mkdir()
        for p in guarded:
            (shutil.copytree if p.is_dir() else shutil.copy)(p, pristine / p.name)
    reference = fingerprint(guarded)
    shutil.rmtree(work / "cases", ignore_errors=True)  # a previous probe's scratch folders
    counts = {k: 0 for k in ("clean", "traceback", "silent", "hang", "data_lost", "code_executed", "unclear")}
    details = []
    start = time.monotonic()
    for case_id, build in all_cases:
        if args.only not in case_id:
            continue
        tmp = w.scratch(case_id.replace(":", "_").replace("/", "_").replace("=", "_")[:80])
        w.marker.unlink(missing_ok=True)
        try:
            argv = build(w, tmp)
        except Exception as exc:  # the probe's own set-up of the case
            raise SystemExit(f"case {case_id}: building it failed: {exc!r}")
        kept = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file() and p.read_bytes() == b"keep me"}
        code, err = (run_cli if args.subprocess else run_forked)(argv, tmp, args.timeout)
        lost = fingerprint(guarded) != reference or any(
            not p.is_file() or p.read_bytes() != b for p, b in kept.items())
        outcome = classify(code, err, lost, w.marker.exists())
        counts[outcome] += 1
        last = (err.strip().splitlines() or [""])[-1][:300]
        details.append({"case": case_id, "outcome": outcome, "exit": code, "stderr": last})
        if lost:  # restore the guarded files for the next cases
            for p in guarded:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                (shutil.copytree if (pristine / p.name).is_dir() else shutil.copy)(pristine / p.name, p)
            reference = fingerprint(guarded)
        print(f"{outcome:14s} {case_id}: {last}", file=sys.stderr, flush=True)
    print(json.dumps({"cases": sum(counts.values()), **counts, "seconds": round(time.monotonic() - start),
                      "work": str(work), "not_clean": [d for d in details if d["outcome"] != "clean"]}, indent=2))


if __name__ == "__main__":
    main()
