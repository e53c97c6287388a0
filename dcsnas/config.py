"""Typed configs: dataclass schemas filled from YAML files and ``--set key=value`` overrides.

A schema is a (nested) dataclass whose fields carry type hints. ``load_config(Schema, path, overrides)``
reads the YAML, applies the overrides, and checks every key and type against the schema: an unknown key
or a value of the wrong type raises :class:`~dcsnas.errors.ConfigError` naming the dotted key and the
expected type. Supported field types: ``bool``, ``int``, ``float`` (ints accepted), ``str``,
``Optional[T]``, ``Literal[...]``, ``list[T]``, ``tuple[T, ...]``, ``dict[str, T]``, ``Any`` and nested
dataclasses.

Ranges come from the schema too: every float is finite (NaN and inf are refused everywhere), and every
number of an int/float field (each item of a list of numbers) lies in the field's :class:`Bounds`, declared
with :func:`ranged`, or else in :data:`DEFAULT_BOUNDS` (>= 0, ints at most 10**9): a new key is validated
without code of its own. ``None`` of an ``Optional`` number is not checked. :func:`ranged` also bounds a
list's length.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar, Union

import yaml

from dcsnas.errors import ConfigError
from dcsnas.utils.io import atomic_write_text

T = TypeVar("T")


@dataclass(frozen=True)
class Bounds:
    """Where the numbers of a config field may lie (``ge``/``gt``: at least / above; ``le``/``lt``: at
    most / below; None: unbounded), and for a list the ``length`` range ``(min, max)``."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    length: Optional[tuple[int, int]] = None

    def admits(self, x: float) -> bool:
        return ((self.ge is None or x >= self.ge) and (self.gt is None or x > self.gt)
                and (self.le is None or x <= self.le) and (self.lt is None or x < self.lt))

    def describe(self) -> str:
        def text(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        low = f"[{text(self.ge)}" if self.ge is not None else f"({text(self.gt)}" if self.gt is not None else None
        high = f"{text(self.le)}]" if self.le is not None else f"{text(self.lt)})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        return ("<= " if high[-1] == "]" else "< ") + high[:-1] if high else "any value"


DEFAULT_BOUNDS = Bounds(ge=0, le=1e9)  # a number key that declares no bounds: >= 0 (and at most 10**9)


def ranged(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           ge: Optional[float] = None, gt: Optional[float] = None, le: Optional[float] = None,
           lt: Optional[float] = None, length: Optional[tuple[int, int]] = None) -> Any:
    """A dataclass field with its :class:`Bounds` (see the module docstring)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"bounds": Bounds(ge, gt, le, lt, length)})


def added_key(default: Any, **bounds: Any) -> Any:
    """A dataclass field added after configs were written and hashed: at its default it is left out of
    :func:`config_hash`, so a config that predates it (or keeps its default) keeps its hash. ``bounds``: the
    keyword arguments of :func:`ranged`."""
    metadata = {"hash_default": True, **({"bounds": Bounds(**bounds)} if bounds else {})}
    return dataclasses.field(default=default, metadata=metadata)


def _numeric(tp: Any) -> bool:
    """Whether ``tp`` is a number type, possibly in an Optional, list, tuple or dict (bounds apply)."""
    origin = typing.get_origin(tp)
    if tp in (int, float):
        return True
    if origin in (Union, types.UnionType, list, tuple, dict):
        return any(_numeric(a) for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis)
    return False


def _check_bounds(value: Any, bounds: Bounds, key: str) -> None:
    """Raise :class:`ConfigError` if a number of ``value`` (or a list's length) lies outside ``bounds``."""
    if isinstance(value, (list, tuple)):
        if bounds.length is not None and not bounds.length[0] <= len(value) <= bounds.length[1]:
            n = bounds.length
            raise ConfigError(f"config key '{key}' = {list(value)!r}: expected "
                              f"{n[0] if n[0] == n[1] else f'{n[0]} to {n[1]}'} values")
        for i, item in enumerate(value):
            _check_bounds(item, bounds, f"{key}[{i}]")
    elif isinstance(value, dict):
        for k, item in value.items():
            _check_bounds(item, bounds, f"{key}.{k}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and not bounds.admits(value):
        kind = "an int" if isinstance(value, int) else "a number"
        raise ConfigError(f"config key '{key}' = {value!r}: expected {kind} {bounds.describe()}")


class _NotFinite(ConfigError):
    """A float of the right type that is NaN or infinite (reported as such, also inside an Optional)."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of str to {_type_name(typing.get_args(tp)[1])}"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the type hint ``tp`` and return it in the schema's form."""
    origin = typing.get_origin(tp)
    err = ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise err
        return _from_dict(tp, value, key + ".")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise err
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise err
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except _NotFinite:
                raise
            except ConfigError:
                continue
        raise err
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise err
        item = typing.get_args(tp)[0]
        items = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise err
        vt = typing.get_args(tp)[1]
        return {str(k): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise err
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise err
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                raise err from None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise err
        else:
            try:
                number = float(value)
            except OverflowError:  # an int beyond the float range
                raise _NotFinite(f"config key '{key}' = {value!r}: expected a finite number") from None
        if not math.isfinite(number):
            raise _NotFinite(f"config key '{key}' = {value!r}: expected a finite number (NaN and inf are refused)")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise err
        return value
    raise TypeError(f"unsupported type hint {tp!r} for config key '{key}'")


def _from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; allowed keys{' under ' + prefix[:-1] if prefix else ''}: "
            + ", ".join(sorted(fields))
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], prefix + name)
        if _numeric(hints[name]) or fields[name].metadata.get("bounds") is not None:
            _check_bounds(kwargs[name], fields[name].metadata.get("bounds", DEFAULT_BOUNDS), prefix + name)
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section '{prefix[:-1] or '<root>'}': {exc}") from None
    return obj


def check_key_value(cls: type, key: str, value: Any) -> Any:
    """``value`` of the dotted ``key`` of the schema ``cls``, checked (type and bounds) as a config file's would
    be; returns it in the schema's form. An unknown key or a bad value is a :class:`ConfigError`."""
    node: Any = cls
    *sections, name = key.split(".")
    for part in sections:
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields or not dataclasses.is_dataclass(typing.get_type_hints(node)[part]):
            raise ConfigError(f"config key '{key}': '{part}' is not a section of {cls.__name__}")
        node = typing.get_type_hints(node)[part]
    fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
    if name not in fields:
        raise ConfigError(f"config key '{key}': '{name}' is not a key of {cls.__name__}")
    tp = typing.get_type_hints(node)[name]
    converted = _convert(value, tp, key)
    if _numeric(tp) or fields[name].metadata.get("bounds") is not None:
        _check_bounds(converted, fields[name].metadata.get("bounds", DEFAULT_BOUNDS), key)
    return converted


def from_dict(cls: type[T], data: dict) -> T:
    """Build the schema ``cls`` from a plain mapping, checking keys, types and bounds; then its
    ``check_config()`` method, if it has one (cross-key rules of a config as the user wrote it)."""
    obj = _from_dict(cls, data)
    check = getattr(obj, "check_config", None)
    if callable(check):
        check()
    return obj


def to_dict(cfg: Any) -> dict:
    """The config as plain Python (lists for tuples), ready for YAML or JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _hashed(value: Any) -> Any:
    """``value`` as :func:`dataclasses.asdict` gives it, without the :func:`added_key` fields at their default."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _hashed(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get("hash_default") and getattr(value, f.name) == f.default)}
    if isinstance(value, (list, tuple)):
        return [_hashed(v) for v in value]
    if isinstance(value, dict):
        return {k: _hashed(v) for k, v in value.items()}
    return value


def config_hash(cfg: Any) -> str:
    """A short, stable hash of a config's content (sha256 of its canonical JSON, 16 hex digits); keys added
    later (:func:`added_key`) count only where they differ from their default."""
    return hashlib.sha256(json.dumps(_hashed(cfg), sort_keys=True).encode()).hexdigest()[:16]


MAX_YAML_BYTES = 16 * 2**20  # the largest YAML file read (configs, search spaces, a run's config.yaml)
MAX_YAML_ALIASES = 256  # aliases (*name) per document
MAX_YAML_NODES = 100_000  # scalars, lists and mappings per document, each alias counted as what it expands to


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys and more than :data:`MAX_YAML_ALIASES` aliases."""

    def __init__(self, stream):
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                event = self.peek_event()
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (an alias bomb?), the last "
                                     f"at line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' entries may be overridden
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise yaml.YAMLError(f"duplicate key {key!r} at lines {seen[key]} and {line} (the second "
                                         "would silently replace the first)")
                seen[key] = line
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                break
        return super().construct_mapping(node, deep)


def _expanded_size(value: Any, limit: int) -> int:
    """The number of nodes of ``value`` with every shared (aliased) part counted each time it occurs; stops
    counting above ``limit``. Linear in the distinct nodes: a shared part's size is computed once."""
    sizes: dict[int, int] = {}

    def size(v: Any, depth: int) -> int:
        if depth > 200:
            raise yaml.YAMLError("nested more than 200 levels deep")
        if not isinstance(v, (list, dict)):
            return 1
        if id(v) not in sizes:
            children = v.values() if isinstance(v, dict) else v
            total = 1
            for child in children:
                total += size(child, depth + 1)
                if total > limit:
                    break
            sizes[id(v)] = total
        return sizes[id(v)]

    return size(value, 0)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` safely and within bounds (no tags that build objects, no duplicate keys, at most
    :data:`MAX_YAML_ALIASES` aliases and :data:`MAX_YAML_NODES` nodes as expanded); errors name ``source``."""
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader subclass)
        nodes = _expanded_size(data, MAX_YAML_NODES)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{source} is not valid YAML: nested too deeply") from None
    if nodes > MAX_YAML_NODES:
        raise ConfigError(f"{source}: more than {MAX_YAML_NODES} values once its aliases are expanded (an alias "
                          "bomb?); write the values out")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.lr=3.5e-4'`` -> ``(['train', 'lr'], 0.00035)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected KEY=VALUE (e.g. train.lr=3.5e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': the key must be dotted names like optim.lr")
    try:
        value = load_yaml(raw, f"override '{text}'") if raw.strip() else ""
    except ConfigError:
        value = raw
    return key.split("."), value


def _apply_override(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override '{'.'.join(path)}': '{part}' is not a section")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist (or is not a regular file)")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"config file '{path}' is {path.stat().st_size} bytes, more than the {MAX_YAML_BYTES} "
                          "a config may have")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), f"config file '{path}'") or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as "
                          "UTF-8") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}': expected a mapping at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``: mappings merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in update.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config; a top-level ``base: FILE`` (or a list of files, relative to this one) is read
    first and this file's keys are merged over it."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config file '{path}': 'base' includes form a cycle")
    data = read_yaml(path)
    bases = data.pop("base", [])
    if not isinstance(bases, (str, list)):
        raise ConfigError(f"config file '{path}': 'base' must be a file name or a list of them, got {bases!r}")
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        if not isinstance(base, str):
            raise ConfigError(f"config file '{path}': 'base' must be a file name or a list of them, got {base!r}")
        merged = deep_merge(merged, read_config_file(path.parent / base, (*_seen, path)))
    return deep_merge(merged, data)


# Config keys that name a file or folder: a relative value is looked up by :func:`resolve_path`.
PATH_KEYS = ("data.root", "model.arch", "search.space", "search.cost.table", "nni.supernet")


def _repository(folder: Path) -> Path | None:
    """The nearest folder at or above ``folder`` that is a repository (holds .git, pyproject.toml or setup.cfg)."""
    for candidate in (folder, *folder.parents):
        if any((candidate / marker).exists() for marker in (".git", "pyproject.toml", "setup.cfg")):
            return candidate
    return None


def path_candidates(value: str, config_file: str | Path | None = None) -> list[Path]:
    """Where a relative path of a config is looked for, in order: the working directory, the config file's
    folder, the repository that holds the config file, and the dcsnas source checkout (if dcsnas runs
    from one); duplicates removed."""
    path = Path(value).expanduser()
    bases = [Path.cwd()]
    if config_file is not None:
        folder = Path(config_file).resolve().parent
        bases += [folder, _repository(folder)]
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() or (checkout / "setup.cfg").is_file():
        bases.append(checkout)
    out: list[Path] = []
    for base in bases:
        if base is not None and (base / path).resolve() not in [p.resolve() for p in out]:
            out.append(base / path)
    return out


def resolve_path(value: str, key: str, config_file: str | Path | None = None, required: bool = False) -> str:
    """``value`` of the path key ``key``: unchanged when absolute or found in the working directory, else the
    first :func:`path_candidates` that exists (as an absolute path). When none exists: unchanged, or with
    ``required`` a :class:`ConfigError` that lists the places tried."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return value
    candidates = path_candidates(value, config_file)
    for candidate in candidates:
        if candidate.exists():
            return str(candidate.resolve())
    if required:
        raise ConfigError(f"config key '{key}' = '{value}': no such file or folder; tried "
                          + ", ".join(f"'{c}'" for c in candidates))
    return value


def resolve_paths(cfg: Any, config_file: str | Path | None = None, required: tuple[str, ...] = ()) -> Any:
    """:func:`resolve_path` of each of :data:`PATH_KEYS` that ``cfg`` has and sets (in place); the keys in
    ``required`` must exist."""
    for key in PATH_KEYS:
        *sections, name = key.split(".")
        node = cfg
        for section in sections:
            node = getattr(node, section, None)
        value = getattr(node, name, None) if node is not None else None
        if isinstance(value, str) and value:
            setattr(node, name, resolve_path(value, key, config_file, key in required))
    return cfg


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                required_paths: tuple[str, ...] = ()) -> T:
    """Load the schema ``cls`` from a YAML file (optional, with ``base`` includes) and ``key=value`` overrides;
    relative paths of :data:`PATH_KEYS` are resolved (:func:`resolve_paths`; ``required_paths`` must exist)."""
    data = read_config_file(path) if path is not None else {}
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(data, keys, value)
    return resolve_paths(from_dict(cls, data), path, required_paths)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
