"""The package's shape: imports go down the stages (no cycles, counting imports inside
functions), the engines never import each other, and no module grows past ~450 lines.

The import graph comes from grimp (import-linter's engine), which reads every import statement,
including those inside functions; `make lint` also runs import-linter's layer contracts
(pyproject.toml, [tool.importlinter]).
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "thingmask"
MAX_LINES = 450


def _edges() -> dict[str, set[str]]:
    graph = grimp.build_graph("thingmask")
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    for module in edges:  # a package re-exporting its own children is not a cycle
        edges[module] = {t for t in edges[module] if not t.startswith(module + ".")}
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


@pytest.mark.parametrize(
    ("edges", "cycles"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"a"}}, []),  # a module importing itself is no cycle between modules
    ],
)
def test_cycle_finder_on_known_graphs(edges, cycles):
    assert strongly_connected(edges) == cycles


def test_no_import_cycles_among_the_package_modules():
    assert strongly_connected(_edges()) == []


def test_the_engines_never_import_each_other():
    edges = _edges()
    engines = ("thingmask.engines.torchvision_engine", "thingmask.engines.detectron2_engine")
    for module, targets in edges.items():
        for own, other in (engines, engines[::-1]):
            if module == own or module.startswith(own + "."):
                crossing = [t for t in targets if t == other or t.startswith(other + ".")]
                assert not crossing, f"{module} imports the other engine: {crossing}"


def test_no_module_is_over_the_size_limit():
    sizes = {
        str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    too_big = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_big, f"split these along their seams (limit {MAX_LINES} lines): {too_big}"


def _contract_layers() -> list[set[str]]:
    """The layers of the import-linter contract in pyproject.toml, top to bottom."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return [
        {name.strip().removeprefix("thingmask.") for name in layer.split(":")}
        for layer in contract["layers"]
    ]


def _architecture_rows() -> list[set[str]]:
    """The packages and modules of ARCHITECTURE.md's stage table, top to bottom."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    table = text[text.index("| stage (top → bottom) |") :].split("\n\n", 1)[0]
    rows = [line.split("|")[2] for line in table.splitlines()[2:]]
    return [{name.strip("`/ ") for name in row.split("·")} for row in rows]


def test_architecture_table_is_the_import_contract():
    assert _architecture_rows() == _contract_layers()


def test_every_top_level_module_and_package_is_in_a_stage():
    """A new module or package at the top must be placed in a stage (the table and the contract)."""
    staged = set().union(*_contract_layers())
    top = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    top |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert top == staged
    assert len([p for p in PACKAGE.glob("*.py") if p.stem != "__init__"]) <= 10
