"""The import graph of ``core`` runs one way, as the design draws it.

Imports are read with ``ast`` from every module, those inside functions
included (a lazy import still ties two modules together), so no module is
executed.  Dynamic ``importlib`` loading of model families by name is not an
import statement and is not seen here.
"""

from __future__ import annotations

import ast

import pytest

from tests.conftest import PROJECT_ROOT

CORE = PROJECT_ROOT / "core"


def _module_name(path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _imports_in(source: str, package: str) -> set[str]:
    """Every module ``source`` imports: ``core`` modules by their own name, others by their top package.

    ``package`` anchors relative imports (``from .store import Store``).
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from core import spaces`` imports the module core.spaces; ``from core.store import Store`` core.store.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found.update(t if t in MODULES else t.split(".")[0] for t in targets)
    return found


def _imported(name: str) -> set[str]:
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return _imports_in(path.read_text(encoding="utf-8"), package) - {name}


GRAPH = {name: _imported(name) for name in MODULES}


def _core_edges(name: str) -> set[str]:
    return {m for m in GRAPH[name] if m in MODULES}


def _reachable(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for m in _core_edges(todo.pop()) - seen:
            seen.add(m)
            todo.append(m)
    return seen


def test_the_graph_reads_lazy_and_relative_imports():
    source = "def f():\n    from core import spaces\n    import streamlit.components.v1\n    from .store import Store\n"
    assert _imports_in(source, "core") == {"core.spaces", "streamlit", "core.store"}


def test_core_has_no_import_cycle():
    cycles = sorted(f"{a} ⇄ {b}" for a in MODULES for b in _core_edges(a) if a in _reachable(b) and a < b)
    lone = sorted(a for a in MODULES if a in _reachable(a))
    assert not cycles and not lone, cycles or lone


def test_core_never_imports_streamlit():
    assert not [name for name, imported in GRAPH.items() if "streamlit" in imported]


def test_the_store_knows_no_models():
    assert not {m for m in _reachable("core.store") if m.startswith("core.models")}


def test_audio_is_the_leaf_of_core():
    assert not _core_edges("core.audio")


@pytest.mark.parametrize("entry", ["core.cli", "core.search"])
def test_the_command_line_and_search_never_reach_altair(entry):
    assert not [m for m in {entry} | _reachable(entry) if "altair" in GRAPH[m]]
