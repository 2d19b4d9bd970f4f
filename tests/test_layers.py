"""The packages depend one way: service/ may import odata/ and sync/, never the reverse, and no
module imports itself back through others. Reads the source with `ast`, so an import inside a
function or under `if TYPE_CHECKING:` counts too: it is still a dependency a reader must follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "odata", "sync")
LIBRARIES = ("odata", "sync")  # what they may not import: the app that uses them


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(f): f for p in PACKAGES for f in sorted((ROOT / p).rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (`from a import b` counts `a.b` when it is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the path that closes it (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_the_graph_sees_the_packages_and_their_imports() -> None:
    # Guards the two tests below against passing because the scan found nothing.
    edges = graph()
    assert {"service.app", "odata.service", "sync.engine"} <= set(edges)
    assert "odata.plan" in edges["odata.service"]
    assert "sync.config" in edges["service.config"]


def test_libraries_never_import_the_service() -> None:
    wrong = sorted(
        f"{m} -> {t}"
        for m, targets in graph().items()
        for t in targets
        if m.split(".")[0] in LIBRARIES and t.split(".")[0] == "service"
    )
    assert wrong == []


def test_no_import_cycles() -> None:
    assert [" -> ".join(c) for c in cycles(graph())] == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c", "a"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_cycle_finder_finds_cycles_it_is_shown(
    edges: dict[str, set[str]], expected: list[list[str]]
) -> None:
    assert cycles(edges) == expected
