"""The house rules of DESIGN 1, read off the sources with ``ast``: no import circle in the four
packages (imports inside functions count; ``if TYPE_CHECKING:`` blocks do not), no private
``_name`` imported from another module, no module over 700 lines, and the rooms' direction: the
contract imports neither ``ssh`` nor ``experiment``, ``ssh`` not ``experiment``, and the
backends neither (their ``__main__``, the driver's entry point, aside)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipekit_cycle", "vardax_jax", "vardax_torch", "conformance")
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for branch in child.orelse:
                    visit(branch)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges(module: str) -> list[tuple[str, str, str]]:
    """``(target module, imported name or "", line)`` for every import of a project module."""
    tree = ast.parse(MODULES[module].read_text())
    edges = []
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    edges.append((alias.name, "", str(node.lineno)))
            continue
        target = _resolve(module, node)
        if target not in MODULES:
            continue
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            edges.append((sub, "", str(node.lineno)) if sub in MODULES else (target, alias.name, str(node.lineno)))
    return edges


GRAPH = {module: _edges(module) for module in MODULES}


def test_the_graph_sees_the_packages():
    assert {"pipekit_cycle", "pipekit_cycle.ssh.metrics", "vardax_jax.solver", "conformance.suite"} <= set(MODULES)
    assert any(target == "pipekit_cycle.ssh.patches" for target, _, _ in GRAPH["pipekit_cycle.ssh.baselines"])


def find_circles(graph: dict[str, list[tuple[str, str, str]]]) -> list[str]:
    """Every back edge of a depth-first walk, as the circle it closes."""
    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target, _, _ in graph[module]:
            if state.get(target) == 1:
                circles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module)
    return circles


def test_the_circle_finder_finds_circles():
    graph = {"a": [("b", "", "1")], "b": [("c", "x", "2")], "c": [("a", "", "3")], "d": [("a", "", "4")]}
    assert find_circles(graph) == ["a -> b -> c -> a"]
    assert find_circles({"a": [("b", "", "1")], "b": []}) == []


def test_no_import_circle():
    # An explicit import of a package (``import pipekit_cycle as pk`` inside it) is an edge into
    # its __init__, which imports the package's modules back: a circle like any other.
    circles = find_circles(GRAPH)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_private_name_crosses_modules():
    crossing = [
        f"{module}:{line} imports {name} from {target}"
        for module, edges in GRAPH.items()
        for target, name, line in edges
        if name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert not crossing, "\n".join(crossing)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (the house limit is {MAX_LINES}): split it"


ROOMS = {
    # who may not import whom (prefixes)
    "pipekit_cycle.": ("pipekit_cycle.ssh", "pipekit_cycle.experiment"),
    "pipekit_cycle.ssh": ("pipekit_cycle.experiment",),
    "vardax_jax": ("pipekit_cycle.ssh", "pipekit_cycle.experiment", "vardax_torch"),
    "vardax_torch": ("pipekit_cycle.ssh", "pipekit_cycle.experiment", "vardax_jax"),
}


def _room(module: str) -> str | None:
    if module.startswith(("pipekit_cycle.ssh", "pipekit_cycle.experiment")):
        return "pipekit_cycle.ssh" if module.startswith("pipekit_cycle.ssh") else None
    if module.startswith("pipekit_cycle"):
        return "pipekit_cycle."
    return module.split(".")[0] if module.split(".")[0] in ROOMS else None


def test_rooms_import_only_downwards():
    wrong = []
    for module, edges in GRAPH.items():
        room = _room(module)
        if room is None or module.endswith("__main__"):
            continue  # python -m vardax_torch train: the backend hosts the driver's entry point
        for target, _, line in edges:
            if target.startswith(ROOMS[room]):
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)
