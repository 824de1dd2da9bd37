"""The import graph of `recsys_spark/` has no cycle and no arrow that points up a layer.

Every module is parsed with `ast` (module-level and function-level imports alike, since a lazy import
is still a dependency), so the test needs no Spark and imports nothing from the package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "recsys_spark"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Lowest first. A module may import any layer below its own, and its own package, never a layer above
# and never a sibling package of its own layer (siblings are independent: what two of them share
# belongs one layer down). A name stands for that module and, for a package, everything under it.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "catalog"),  # stdlib-only: exception types; the catalogue of stages, tables, models
    ("config", "session"),  # typed job configs; building a Spark session
    ("lake",),  # Delta tables, their contracts, file helpers
    ("events", "distributed"),  # event types and interest weights r_ui; launching ranks (Horovod/Gloo)
    # services the stages use: gates before a commit; per-day counters; interest profiles (the profile
    # recall channel and the ranker's profile-match features in samples both read them)
    ("quality", "stats", "profiles"),
    # one stage each; channel lists; A/B buckets and business metrics
    ("ingest", "generate", "similarity", "graph", "samples", "candidates", "experiments"),
    ("train",),  # the models, their training and the model registry
    ("evaluate", "streaming", "recommend"),  # read trained models and stage outputs
    ("pipeline", "publish"),  # the daily run and what it publishes
    ("cli",),  # the command line: imports every job
]


def layer_of(module: str) -> int:
    """Index in LAYERS of a dotted module name under the package (the package root itself: 0)."""
    parts = module.split(".")[1:]
    if not parts:
        return 0
    for index, names in enumerate(LAYERS):
        if parts[0] in names:
            return index
    raise AssertionError(f"{module} is in no layer: add {parts[0]!r} to LAYERS in tests/test_layers.py")


def top(module: str) -> str:
    """The first name under the package: `recsys_spark.graph.walks` -> `graph`."""
    return module.split(".")[1] if "." in module else ""


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """Package modules named by one import statement (a `from X import name` of a submodule counts)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        yield target
        for alias in node.names:
            if f"{target}.{alias.name}" in known:
                yield f"{target}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    graph: dict[str, set[str]] = {}
    for module, path in found.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            for target in imported(node, module, path.name == "__init__.py", known):
                if target == PACKAGE or not target.startswith(PACKAGE + "."):
                    continue
                # `import recsys_spark.a.b.name` of a non-module: keep the deepest module that exists
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in known and target != module:
                    edges.add(target)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [one_cycle(graph, component) for component in components]


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete path start -> ... -> start inside a strongly connected component, for the message."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, node, start]
                if nxt not in parents:
                    parents[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return component


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    lines = []
    for cycle in found:
        tangled = strongly_connected(graph, cycle[0])
        lines.append(f"  {' -> '.join(cycle)}   (all tangled together: {', '.join(sorted(tangled))})")
    assert not found, "import cycles in recsys_spark/:\n" + "\n".join(lines)


def strongly_connected(graph: dict[str, set[str]], start: str) -> set[str]:
    """Modules reachable from `start` that also reach it back."""

    def reach(edges: dict[str, set[str]]) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in edges.get(todo.pop(), set()) - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    backwards: dict[str, set[str]] = {}
    for source, targets in graph.items():
        for target in targets:
            backwards.setdefault(target, set()).add(source)
    return reach(graph) & reach(backwards)


def test_no_upward_or_sideways_import():
    graph = import_graph()
    bad = []
    for source in sorted(graph):
        for target in sorted(graph[source]):
            up, down = layer_of(source), layer_of(target)
            if down > up:
                bad.append(f"  {source} (layer {up}) -> {target} (layer {down}): points up")
            elif down == up and top(source) != top(target):
                bad.append(f"  {source} -> {target}: sibling packages of layer {up}")
    order = "\n".join(f"  {i}: {', '.join(names)}" for i, names in enumerate(LAYERS))
    assert not bad, (
        "imports against the layer order:\n" + "\n".join(bad) + "\nlayers, lowest first:\n" + order
    )


def test_the_checker_sees_function_level_imports_and_cycles():
    # The checker itself must be able to fail: a lazy import inside a function is an edge, and a
    # two-module loop is reported as a cycle.
    tree = ast.parse("def f():\n    from recsys_spark.cli import UsageError\n")
    targets = [t for node in ast.walk(tree) for t in imported(node, "recsys_spark.stats", False, set())]
    assert targets == ["recsys_spark.cli"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b", "a"]]
