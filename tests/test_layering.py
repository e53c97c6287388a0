"""The package's import graph keeps the layers of docs/architecture.md: every import of a dcsnas module runs
downward (or stays inside its own package), packages of one layer do not import each other, there is no
import cycle between modules, and imports sit at the top of a module except where they defer an optional
heavy dependency or live in a command.

The graph is read with ``ast`` from the source files, independently of the code under test.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dcsnas"

# Lowest first; packages in one tuple sit side by side and may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),  # the exception types every layer raises; imports nothing of dcsnas
    ("utils",),  # raises errors' ConfigError/DataError (io)
    ("config",),  # the YAML config loader; writes through utils.io
    ("data", "attention", "losses", "metrics"),
    ("models",),
    ("engine",),
    ("nas",),
    ("nni",),
    ("bench",),
    ("compare",),
    ("extract", "export"),
    ("demo",),
    ("commands",),
    ("cli",),
]
LAYER_OF = {name: (level, name) for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.Module, name: str, is_package: bool) -> list[tuple[str, int, bool]]:
    """(imported dcsnas module, line, at module level?) for every import in ``tree``."""
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / `try:` blocks at the top count as top level
        if isinstance(node, (ast.If, ast.Try)):
            top_level.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target == "dcsnas" or target.startswith("dcsnas."):
                found.append((target, node.lineno, id(node) in top_level))
    return found


def package_graph() -> dict[str, list[tuple[str, int, bool]]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges = []
        for target, line, top in imported_modules(tree, name, path.name == "__init__.py"):
            while target not in modules and "." in target:  # `from pkg.mod import name`
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name and (target, line, top) not in edges:
                edges.append((target, line, top))
        graph[name] = edges
    return graph


def part(module: str) -> str:
    """The top-level package or module of ``dcsnas.x.y``: ``x`` (``""`` for ``dcsnas`` itself)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def test_every_part_of_the_package_has_a_layer():
    parts = {part(m) for m in package_graph()} - {""}
    assert parts <= set(LAYER_OF), f"packages without a layer in LAYERS: {sorted(parts - set(LAYER_OF))}"


def test_imports_run_downward_and_not_sideways():
    wrong = []
    for module, edges in package_graph().items():
        if part(module) not in LAYER_OF:
            continue  # the package's face (re-exports lazily), or a part reported by the test above
        level, own = LAYER_OF[part(module)]
        for target, line, _ in edges:
            if part(target) == own or part(target) not in LAYER_OF:
                continue
            target_level, _ = LAYER_OF[part(target)]
            if target_level >= level:
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "imports that do not run downward:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = {m: sorted({t for t, _, _ in edges}) for m, edges in package_graph().items()}
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_dcsnas_imports_sit_at_module_level():
    """A function-local import of a dcsnas module hides an edge of the graph (commands are exempt: each
    command imports its machinery when it runs, so ``dcsnas --help`` stays fast)."""
    hidden = [f"{module}:{line} imports {target} inside a function"
              for module, edges in package_graph().items() if part(module) not in ("commands", "")
              for target, line, top in edges if not top]
    assert not hidden, "\n".join(sorted(hidden))
