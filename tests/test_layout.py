"""The package's layout rules: the floors (no folder cycle, no import up the floors), no import cycles between
refineloop modules, and no module reaching for another's private names.

Every module under refineloop/ is parsed with `ast`; imports anywhere in it count (at the top, inside functions,
under TYPE_CHECKING), since a lazy import is still a dependency and a cycle through it still couples the two.
`from refineloop.pkg import module` names the module; `from refineloop.pkg import name` names the package, whose
`__init__` re-exports count as the package's own.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "refineloop"


def module_name(path: Path) -> str:
    """refineloop/apps/engine.py -> refineloop.apps.engine; a package's __init__.py is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    """Every refineloop module by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@dataclass(frozen=True)
class Use:
    """One import (or attribute access through an imported module) of a refineloop module."""

    target: str
    """The module imported from."""
    name: str
    """The name taken from it ("" for `import x`)."""
    line: int


def absolute(module: str, node: ast.ImportFrom, modules: dict[str, Path]) -> str:
    """The absolute module an ImportFrom names, relative imports resolved against `module`."""
    if not node.level:
        return node.module or ""
    is_package = modules[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def owning_module(name: str, modules: dict[str, Path]) -> str | None:
    """The longest refineloop module a dotted name starts with."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def uses(module: str, modules: dict[str, Path]) -> Iterator[Use]:
    """What `module` imports from other refineloop modules, and which names it takes."""
    tree = ast.parse(modules[module].read_text("utf-8"), str(modules[module]))
    aliases: dict[str, str] = {}  # local name -> module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = owning_module(alias.name, modules)
                if target is None:
                    continue
                yield Use(target, "", node.lineno)
                if alias.asname:
                    aliases[alias.asname] = target
        elif isinstance(node, ast.ImportFrom):
            source = absolute(module, node, modules)
            if owning_module(source, modules) is None:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    # `from refineloop.pkg import module`: the module itself.
                    yield Use(submodule, "", node.lineno)
                    aliases[alias.asname or alias.name] = submodule
                else:
                    yield Use(owning_module(source, modules) or source, alias.name, node.lineno)
    for node in ast.walk(tree):
        # `module._name` through a module bound by an import above.
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            yield Use(aliases[node.value.id], node.attr, node.lineno)


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the refineloop modules it imports (itself left out)."""
    return {module: {use.target for use in uses(module, modules) if use.target != module} for module in sorted(modules)}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other (a strongly connected component), each as
    a path that ends where it starts; [] when there is none."""
    cycles = []
    for group in strongly_connected(graph):
        if len(group) > 1:
            cycles.append(cycle_within(graph, group))
    return sorted(cycles)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components, without recursion (the graph has a few hundred modules, the stack need not care)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups


def cycle_within(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, set()) & group):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    return [start]


def private_uses(modules: dict[str, Path]) -> list[str]:
    """`module:line takes other._name` for every private name taken from another module."""
    found = []
    for module in sorted(modules):
        for use in uses(module, modules):
            private = use.name.startswith("_") and not use.name.startswith("__")
            if private and use.target != module:
                found.append(f"{module}:{use.line} takes {use.target}.{use.name}")
    return found


#: The floors, ground first. A unit (a folder right under refineloop/, or a module there) imports only from its own
#: floor or the floors below it; docs/architecture.md draws the same order. A new unit needs a place here.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("errors", "state", "schedules", "version", "files", "progress_events", "samplers", "redaction", "visible_text"),
    ("strategies", "acceptance", "knob_shapes", "settings", "tasks", "prompts", "prompts_agents", "budgets"),
    ("stopping", "tools"),
    ("backends",),
    ("run_folder", "prompt_text", "round_request", "run_start"),
    ("judges",),
    ("outputs",),
    ("nodes",),
    ("graph", "graph_build", "run_view"),
    ("apps",),
    ("scale",),
    ("cli",),
    ("api", "refineloop", "__main__"),
)


def unit_of(module: str) -> str:
    """refineloop.apps.batch.plan -> apps; refineloop.graph -> graph; the package's own __init__ -> refineloop."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def unit_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, set[tuple[str, str]]]]:
    """unit -> the other units it imports -> the module pairs behind each edge."""
    units: dict[str, dict[str, set[tuple[str, str]]]] = {}
    for module, targets in graph.items():
        edges = units.setdefault(unit_of(module), {})
        for target in targets:
            if unit_of(target) != unit_of(module):
                edges.setdefault(unit_of(target), set()).add((module, target))
    return units


def upward_imports(graph: dict[str, set[str]], floors: tuple[tuple[str, ...], ...]) -> list[str]:
    """`module -> target` for every import that reaches a higher floor than its own."""
    level = {unit: n for n, floor in enumerate(floors) for unit in floor}
    found = []
    for unit, edges in unit_graph(graph).items():
        for target, pairs in edges.items():
            if level.get(target, -1) > level.get(unit, len(floors)):
                found.extend(f"{module} -> {imported}" for module, imported in sorted(pairs))
    return sorted(found)


def test_every_unit_has_a_floor() -> None:
    units = {unit_of(module) for module in all_modules()}
    placed = {unit for floor in FLOORS for unit in floor}
    assert units == placed, f"give these a floor in FLOORS: {sorted(units - placed)}; gone: {sorted(placed - units)}"


def test_no_import_up_the_floors() -> None:
    found = upward_imports(import_graph(all_modules()), FLOORS)
    assert not found, "imports up the floors (move the code down, or the importer up):\n" + "\n".join(found)


def test_no_folder_cycles() -> None:
    units = {unit: set(edges) for unit, edges in unit_graph(import_graph(all_modules())).items()}
    cycles = find_cycles(units)
    assert not cycles, "folders importing each other:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph(all_modules()))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_module_imports_a_private_name_of_another() -> None:
    found = private_uses(all_modules())
    assert not found, "private names used across modules:\n" + "\n".join(found)


# --------------------------------------------------------------------------------------------- the checker itself


def write_package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    """A throwaway package tree under `root`, as `all_modules` would list it."""
    modules = {}
    for name, text in files.items():
        path = root / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        dotted = name.removesuffix(".__init__")
        modules[dotted] = path
    return modules


def test_a_lazy_import_closes_a_cycle(tmp_path: Path) -> None:
    modules = write_package(
        tmp_path,
        {
            "refineloop.__init__": "",
            "refineloop.a": "from refineloop.b import thing\n",
            "refineloop.b": "def thing():\n    from refineloop import a\n    return a\n",
        },
    )
    assert find_cycles(import_graph(modules)) == [["refineloop.a", "refineloop.b", "refineloop.a"]]


def test_a_package_reexport_is_the_package_and_a_submodule_is_itself(tmp_path: Path) -> None:
    modules = write_package(
        tmp_path,
        {
            "refineloop.__init__": "",
            "refineloop.pkg.__init__": "from refineloop.pkg.inner import Thing\n",
            "refineloop.pkg.inner": "class Thing: ...\n",
            "refineloop.user": "from refineloop.pkg import Thing, inner\n",
        },
    )
    assert import_graph(modules)["refineloop.user"] == {"refineloop.pkg", "refineloop.pkg.inner"}


def test_private_names_are_found_by_import_and_by_attribute(tmp_path: Path) -> None:
    modules = write_package(
        tmp_path,
        {
            "refineloop.__init__": "",
            "refineloop.a": "def _helper(): ...\n",
            "refineloop.b": "from refineloop.a import _helper\n",
            "refineloop.c": "import refineloop.a as a\n\na._helper()\n",
        },
    )
    found = private_uses(modules)
    assert found == ["refineloop.b:1 takes refineloop.a._helper", "refineloop.c:3 takes refineloop.a._helper"]


def test_a_lazy_import_up_the_floors_is_caught(tmp_path: Path) -> None:
    modules = write_package(
        tmp_path,
        {
            "refineloop.__init__": "",
            "refineloop.low.__init__": "",
            "refineloop.low.store": "def save():\n    from refineloop.high.page import words\n    return words\n",
            "refineloop.high.__init__": "",
            "refineloop.high.page": "from refineloop.low import store\nwords = 1\n",
        },
    )
    floors = (("low",), ("high",), ("refineloop",))
    graph = import_graph(modules)
    assert upward_imports(graph, floors) == ["refineloop.low.store -> refineloop.high.page"]
    units = {unit: set(edges) for unit, edges in unit_graph(graph).items()}
    assert find_cycles(units) == [["high", "low", "high"]]


def test_tests_mirror_the_package() -> None:
    """A module's tests sit in the tests/ folder named like its own folder (tests/backends/ for backends/), so a
    reader finds them where they look; tests of top-level modules and of the whole stay at tests/."""
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    units = {unit for floor in FLOORS for unit in floor} | {"bench"}
    assert folders <= units, f"test folders that mirror nothing: {sorted(folders - units)}"
    for folder in folders:
        assert list((ROOT / "tests" / folder).glob("test_*.py")), f"tests/{folder}/ holds no tests"
