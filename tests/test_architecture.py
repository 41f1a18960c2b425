"""docs/architecture.md's map held true: its layer table names every module of the package (and the Hydra plugins)
once, and no module imports one of a layer above its own, at the top of a file or inside a function; the reports
and the runner stay apart. The table is read from the doc itself, so the map cannot drift from the code."""

import ast
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
APART = ("report", "runner")  # side by side: neither imports the other


def layers() -> dict[str, list[str]]:
    """The doc's ```layers block: ``N name: module module …`` per line, the lowest first (``models`` stands for
    every module under models/)."""
    block = re.search(r"```layers\n(.*?)```", DOC.read_text(), re.S).group(1)
    out = {}
    for line in block.strip().splitlines():
        name, _, modules = line.partition(":")
        out[name.split()[-1]] = modules.split()
    return out


def modules() -> dict[str, Path]:
    """Every module, dotted, under resnet_ablate/ (without its prefix) and hydra_plugins/ (with it)."""
    found = {}
    for path in sorted([*ROOT.glob("resnet_ablate/**/*.py"), *ROOT.glob("hydra_plugins/**/*.py")]):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[0] == "resnet_ablate":
            parts = parts[1:] or ["__init__"]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its file (``hydra_plugins`` apart: config.py
    registers the plugins by name, and they import the package only when Hydra runs them)."""
    package = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1] if node.level > 1 else package
            target = [*base, *(node.module.split(".") if node.module else [])]
            out |= {".".join(target + [a.name]) for a in node.names} | {".".join(target)}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("resnet_ablate"):
            target = node.module.split(".")[1:]
            out |= {".".join(target + [a.name]) for a in node.names} | {".".join(target)}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("resnet_ablate.")}
    return out


def layer_of(name: str, table: dict[str, list[str]]) -> str | None:
    """The layer whose entry is ``name`` or a package above it (``models`` holds ``models.units``)."""
    for layer, entries in table.items():
        if any(name == e or name.startswith(e + ".") for e in entries):
            return layer
    return None


def violations(graph: dict[str, set[str]], table: dict[str, list[str]]) -> list[str]:
    """Each import of a module of a higher layer, or across the two layers kept apart."""
    rank = {layer: i for i, layer in enumerate(table)}
    known = set(graph)
    out = []
    for name, targets in graph.items():
        mine = layer_of(name, table)
        for target in sorted(t for t in targets if t in known and t != name):
            theirs = layer_of(target, table)
            if rank[theirs] > rank[mine] or {mine, theirs} == set(APART):
                out.append(f"{name} ({mine}) imports {target} ({theirs})")
    return out


@pytest.fixture(scope="module")
def graph():
    return {name: imports(name, path) for name, path in modules().items()}


def test_the_doc_lists_every_module_in_one_layer():
    table = layers()
    entries = [e for es in table.values() for e in es]
    assert len(entries) == len(set(entries)), "a module listed twice"
    unlisted = [m for m in modules() if layer_of(m, table) is None]
    assert not unlisted, f"modules the map does not place: {unlisted}"
    stale = [e for e in entries if not any(m == e or m.startswith(e + ".") for m in modules())]
    assert not stale, f"the map names modules that do not exist: {stale}"
    assert set(APART) <= set(table)


def test_no_module_imports_a_layer_above_its_own(graph):
    assert violations(graph, layers()) == []


def test_the_check_catches_an_upward_import(graph):
    """models importing the store (or the reports importing the runner) is what the map forbids."""
    table = layers()
    broken = {**graph, "models.resnet": graph["models.resnet"] | {"store"}, "report.tables": {"sweep"}}
    assert violations(broken, table) == [
        "models.resnet (networks) imports store (records)",
        "report.tables (report) imports sweep (runner)",
    ]


def test_every_package_of_the_map_ships_in_the_wheel():
    """A new folder of modules (cli/, trackers/) is a package the wheel must list, or an installed copy breaks."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in [*ROOT.glob("resnet_ablate/**/__init__.py"), *ROOT.glob("hydra_plugins/*/__init__.py")]
    }
    assert found <= listed, f"packages pyproject.toml does not ship: {sorted(found - listed)}"
