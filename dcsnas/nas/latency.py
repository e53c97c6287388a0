"""The latency lookup table of a search space (FBNet's LUT); times in milliseconds.

**Entries.** One per cost term of :mod:`dcsnas.nas.cost` (stem, each block, each attention slot, the head
conv, ResNet-50's fixed stages) and per combination of the options it depends on (a block: op × input width ×
output width; an attention slot: candidate × width): the median time in ms of one forward of that module alone
(eval mode, no gradient, fp32, random weights and input) at its input shape ``[batch, C, H, W]`` on one device,
over ``repeats`` timed blocks after ``warmup`` untimed forwards (:class:`torch.utils.benchmark.Timer`, which
synchronises CUDA and runs on ``threads`` CPU threads). A part that runs nothing (no attention) costs 0 ms. A
table holds one batch size and one input size. Through :meth:`~dcsnas.nas.cost.CostModel.with_latency` the
entries become the ``latency`` tables of the cost terms: a derived network's estimate is the sum of its
entries, and the search's expected latency is the same expectation as its expected FLOPs.

**File** (JSON, :func:`write_table`/:func:`read_table`): ``format``, ``version``, ``space`` and ``space_hash``,
``device`` and ``device_name``, ``torch``, ``batch``, ``input_size`` ([H, W]), ``threads``, ``warmup``,
``repeats``, ``unit`` (``ms``) and ``entries``: ``{"part", "options": {choice: option label}, "module": what
was measured and its input shape, "ms"}``. Reading checks the size, every type, that every time is finite and
>= 0, and entry by entry that the table is one of the space at that batch and input size: an error names the
file and the first missing, extra or different entry.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn
from torch.utils.benchmark import Timer

from dcsnas.config import config_hash
from dcsnas.errors import ConfigError
from dcsnas.models.skeleton import SKELETONS
from dcsnas.nas.cost import ModuleSpec, space_specs, term_options
from dcsnas.nas.space import SearchSpace
from dcsnas.utils.io import atomic_write_json

FORMAT, VERSION = "dcsnas-latency-table", 1
TABLE_FILE = "latency_table.json"  # a search's copy of the table it used, in its run directory
MAX_TABLE_BYTES = 16 * 2**20  # the largest table file read
MAX_ENTRIES = 200_000
MAX_TEXT = 1000  # the longest string of a table (a part, an option label, a module description)
MAX_MS = 1e7  # a larger time (about 3 hours for one module) is no measurement
BLOCK_S = 1e-3  # a timed block repeats a fast module until it lasts about this long (s)


@dataclass(frozen=True)
class Entry:
    """One entry of a space's table: ``part`` (its cost term), ``options`` (choice key → option label), the
    option ``index`` in the term's table, and the module ``spec`` (None: nothing runs, 0 ms)."""

    part: str
    options: dict[str, str]
    index: tuple[int, ...]
    spec: Optional[ModuleSpec]

    @property
    def id(self) -> str:
        """E.g. ``s2/1[s2/1/op=ir_k3_e3, s2/width=16]`` (choices in sorted order); a fixed part: its name."""
        options = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return self.part + (f"[{options}]" if options else "")

    def describe(self, batch: int) -> str:
        return "nothing" if self.spec is None else self.spec.describe(batch)


def space_entries(space: SearchSpace, input_size: tuple[int, int],
                  fixed: Optional[dict[str, nn.Module]] = None) -> list[Entry]:
    """The entries of ``space``'s table at ``input_size``, in the order of the cost terms (``fixed``: the modules
    of its fixed stages; default: built on the ``meta`` device, enough to name the entries)."""
    if fixed is None:
        with torch.device("meta"):
            fixed = SKELETONS[space.skeleton].fixed(space)
    entries = []
    for name, choices, specs in space_specs(space, input_size, fixed):
        unique, combos = term_options(choices)
        for index in combos:
            option = {c.key: c.options[i] for c, i in zip(unique, index)}
            labels = {c.key: c.labels[i] for c, i in zip(unique, index)}
            entries.append(Entry(name, labels, index, specs(*(option[c.key] for c in choices))))
    return entries


@contextmanager
def _threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def time_module(module: nn.Module, shape: tuple[int, ...], device: torch.device, threads: int, warmup: int = 5,
                repeats: int = 20) -> float:
    """Median ms of one forward of ``module`` (put on ``device`` in eval mode) on a random input of ``shape``:
    ``warmup`` untimed forwards, then ``repeats`` timed blocks of n forwards (n such that a block lasts about
    :data:`BLOCK_S`, at most 100), each block's time divided by n."""
    module = module.to(device).eval()
    x = torch.randn(tuple(shape), device=device)
    timer = Timer("module(x)", globals={"module": module, "x": x}, num_threads=threads)
    with _threads(threads):
        for _ in range(warmup):
            module(x)
        once = timer.timeit(1).median
        number = max(1, min(100, int(BLOCK_S / max(once, 1e-7))))
        times = [timer.timeit(number).median for _ in range(repeats)]
    return statistics.median(times) * 1e3


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model where the platform tells it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_table(space: SearchSpace, input_size: tuple[int, int], batch: int, device: torch.device | str,
                  threads: Optional[int] = None, warmup: int = 5, repeats: int = 20) -> dict[str, Any]:
    """The latency table of ``space`` (module docstring) as its JSON document; each distinct module is timed
    once. ``threads``: CPU threads (default: torch's current number).
    Random weights and inputs are drawn from torch's global generator (fork it to leave a run's draws alone)."""
    device = torch.device(device)
    threads = threads or torch.get_num_threads()
    fixed = SKELETONS[space.skeleton].fixed(space)
    entries = space_entries(space, input_size, fixed)
    distinct = {e.spec.key + e.spec.shape: e.spec for e in entries if e.spec is not None}
    times: dict[tuple, float] = {}
    for key, spec in distinct.items():
        times[key] = time_module(spec.build(), (batch, *spec.shape[1:]), device, threads, warmup, repeats)
    return {
        "format": FORMAT, "version": VERSION, "space": space.name, "space_hash": config_hash(space),
        "device": str(device), "device_name": device_name(device), "torch": torch.__version__, "batch": batch,
        "input_size": [int(s) for s in input_size], "threads": threads, "warmup": warmup, "repeats": repeats,
        "unit": "ms", "statistic": "median",
        "entries": [{"part": e.part, "options": e.options, "module": e.describe(batch),
                     "ms": 0.0 if e.spec is None else round(times[e.spec.key + e.spec.shape], 6)} for e in entries],
    }


def write_table(table: dict[str, Any], path: str | Path) -> None:
    """Write a table document as JSON, atomically."""
    atomic_write_json(path, table)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _load(path: Path) -> Any:
    """The JSON of ``path``, bounded in size, with NaN and ±Infinity refused (one-line ConfigErrors)."""
    if not path.is_file():
        raise ConfigError(f"latency table '{path}' does not exist (or is not a regular file)")
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise ConfigError(f"latency table '{path}' is {size} bytes, more than the {MAX_TABLE_BYTES} allowed")
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ConfigError(f"latency table '{path}' is not valid JSON: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"latency table '{path}' is not valid JSON: nested too deeply") from None


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


def check_document(doc: Any, source: str) -> dict[str, Any]:
    """``doc`` if it has the structure of a table document (module docstring), else a one-line
    :class:`ConfigError` naming ``source`` and the first wrong key or entry."""
    def fail(message: str) -> None:
        raise ConfigError(f"latency table '{source}': {message}")

    if not isinstance(doc, dict):
        fail(f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        fail(f"format = {str(doc.get('format'))[:80]!r}, version = {str(doc.get('version'))[:20]}; expected "
             f"{FORMAT!r}, version {VERSION} (written by dcsnas bench latency-table)")
    for key in ("space", "device", "device_name", "torch", "unit"):
        if not _is_text(doc.get(key)):
            fail(f"'{key}' must be a string (at most {MAX_TEXT} characters)")
    if doc["unit"] != "ms":
        fail(f"unit = {doc['unit'][:20]!r}; expected 'ms'")
    if not _is_int(doc.get("batch"), 1, 1 << 20):
        fail(f"'batch' must be a positive int, got {str(doc.get('batch'))[:40]}")
    if not _is_int(doc.get("threads"), 1, 1 << 16):
        fail(f"'threads' must be a positive int, got {str(doc.get('threads'))[:40]}")
    size = doc.get("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(s, 1, 1 << 20) for s in size)):
        fail(f"'input_size' must be [height, width] in pixels, got {str(size)[:40]}")
    entries = doc.get("entries")
    if not isinstance(entries, list) or not entries or len(entries) > MAX_ENTRIES:
        fail(f"'entries' must be a non-empty list of at most {MAX_ENTRIES} entries")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"part", "options", "module", "ms"}:
            fail(f"entries[{i}] must be an object with the keys part, options, module, ms")
        options = entry["options"]
        if not (_is_text(entry["part"]) and _is_text(entry["module"]) and isinstance(options, dict)
                and len(options) <= 8 and all(_is_text(k) and _is_text(v) for k, v in options.items())):
            fail(f"entries[{i}]: part and module must be strings and options an object of strings")
        ms = entry["ms"]
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or not 0 <= ms <= MAX_MS:
            fail(f"entries[{i}] ({str(entry['part'])[:80]}): ms = {str(ms)[:40]}; expected a finite number of "
                 f"milliseconds in [0, {MAX_MS:g}]")
    return doc


def match_space(doc: dict[str, Any], space: SearchSpace, source: str) -> dict[str, Tensor]:
    """The latency tables (ms, float64) by cost-term name of a checked document that is a table of ``space`` at
    its own batch and input size; a :class:`ConfigError` naming ``source`` and the first missing, extra, repeated
    or different entry otherwise."""
    expected = space_entries(space, tuple(doc["input_size"]))
    batch = doc["batch"]
    given: dict[str, dict[str, Any]] = {}
    for entry in doc["entries"]:
        eid = Entry(entry["part"], entry["options"], (), None).id
        if eid in given:
            raise ConfigError(f"latency table '{source}': entry '{eid[:200]}' appears twice")
        given[eid] = entry
    size = "×".join(map(str, doc["input_size"]))
    where = f"the space '{space.name}' at {size}, batch {batch}"
    ids = {e.id for e in expected}
    for eid in given:
        if eid not in ids:
            raise ConfigError(f"latency table '{source}' is not a table of {where}: it has the extra entry "
                              f"'{eid[:200]}'")
    shapes: dict[str, tuple[int, ...]] = {}
    for e in expected:  # every combination is an entry: a term's table size is its largest index + 1
        shapes[e.part] = tuple(max(i + 1, n) for i, n in zip(e.index, shapes.get(e.part, (0,) * len(e.index))))
    tables = {part: torch.zeros(shape, dtype=torch.float64) for part, shape in shapes.items()}
    for e in expected:
        if e.id not in given:
            raise ConfigError(f"latency table '{source}' is not a table of {where}: it has no entry '{e.id}'")
        entry = given[e.id]
        if entry["module"] != e.describe(batch):
            raise ConfigError(f"latency table '{source}' is not a table of {where}: entry '{e.id}' measured "
                              f"'{entry['module'][:200]}', the space's module is '{e.describe(batch)}'")
        tables[e.part][e.index] = float(entry["ms"])
    return tables


def read_table(path: str | Path, space: SearchSpace, input_size: Optional[tuple[int, int]] = None,
               batch: Optional[int] = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read, check and match a table file (module docstring): its document and its latency tables by cost-term
    name. ``input_size``/``batch``: what the caller needs (a table measured at others is refused)."""
    path = Path(path)
    doc = check_document(_load(path), str(path))
    if input_size is not None and list(doc["input_size"]) != [int(s) for s in input_size]:
        raise ConfigError(f"latency table '{path}' was measured at {doc['input_size'][0]}×{doc['input_size'][1]} "
                          f"pixels, the search runs at {input_size[0]}×{input_size[1]} (data.transforms.height/width)")
    if batch is not None and doc["batch"] != batch:
        raise ConfigError(f"latency table '{path}' was measured at batch {doc['batch']}, search.cost.batch is "
                          f"{batch}; measure one at that batch or set search.cost.batch={doc['batch']}")
    return doc, match_space(doc, space, str(path))
