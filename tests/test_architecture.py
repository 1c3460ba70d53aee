"""The house's rules, read from the source: imports run down the layers, never in a circle, and no
module outgrows what one reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "pytest_sway"

#: Bottom to top. A module may import from its own layer and the layers below it, never above.
LAYERS = (
    ("foundations", ("errors", "files", "items", "testing", "suites")),
    ("stats", ("stats",)),
    ("backends", ("backends",)),
    ("probes", ("probes",)),
    ("measure", ("measure",)),
    ("reports", ("reports",)),
    (
        "surface",
        (
            "",
            "__main__",
            "plugin",
            "hookspecs",
            "settings",
            "state",
            "markers",
            "sway",
            "progress",
            "reporter",
            "workers",
        ),
    ),
)
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, source: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """Every module of the package that ``name`` imports, at module level or inside a function."""
    here = name.split(".") if name else []
    if not is_package:
        here = here[:-1]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "pytest_sway":
                base = node.module.split(".")[1:]
            else:
                continue
            target = ".".join(base)
            for alias in node.names:  # `from . import module` imports that module, not the package
                sub = f"{target}.{alias.name}" if target else alias.name
                out.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pytest_sway":
                    out.add(".".join(alias.name.split(".")[1:]))
    out.discard(name)
    return out


def _layer(name: str) -> int:
    top = name.split(".")[0]
    for rank, (_, roots) in enumerate(LAYERS):
        if top in roots:
            return rank
    raise AssertionError(f"pytest_sway.{name} belongs to no layer: add it to LAYERS in {__file__}")


def test_every_module_belongs_to_a_layer_and_imports_only_down():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        for target in _imports(name, path.read_text(), path.name == "__init__.py", modules):
            assert target in modules, f"pytest_sway.{name} imports pytest_sway.{target}, which does not exist"
            if _layer(target) > _layer(name):
                upward.append(f"pytest_sway.{name} -> pytest_sway.{target}")
    assert not upward, upward


def test_the_import_graph_has_no_circle():
    modules = _modules()
    graph = {
        name: _imports(name, path.read_text(), path.name == "__init__.py", modules) for name, path in modules.items()
    }
    state: dict[str, int] = {}
    circles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                circles.append(trail[trail.index(target) :] + [target])
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, circles


def test_imports_inside_functions_count():
    """The checks above see an import inside a function (the circles they guard against were such)."""
    modules = _modules()
    source = "def kinds():\n    from . import builtin_probes\n    from ..stats import slices\n"
    assert _imports("probes.base", source, False, modules) == {"probes", "stats.slices"}


def test_no_module_is_longer_than_one_reader_can_hold():
    long = {
        f"pytest_sway.{name}": n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by concern (at most {MAX_LINES} lines each): {long}"
