"""How the package is put together: no import cycle (deferred imports included), no private name imported from
another module, nothing set on import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sb3_trpo"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(path): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, at any depth of its code (functions included).

    ``from package import name`` counts as importing the submodule ``package.name`` where that is a module, and the
    package itself otherwise.
    """
    package = name if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists() else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {module for module in found if module in known and module != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as the list of its modules, first repeated last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_import_cycle_deferred_imports_included() -> None:
    modules = _modules()
    graph = {name: _imports(name, tree, set(modules)) for name, tree in modules.items()}
    assert any(graph.values())  # the parser found the package's imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_cycle_finder_finds_a_deferred_cycle() -> None:
    """The check above would see a cycle closed by an import inside a function (as the vine runners had)."""
    a = ast.parse("from sb3_trpo.b import x\n")
    b = ast.parse("def f():\n    from sb3_trpo.a import y\n")
    known = {"sb3_trpo.a", "sb3_trpo.b"}
    graph = {"sb3_trpo.a": _imports("sb3_trpo.a", a, known), "sb3_trpo.b": _imports("sb3_trpo.b", b, known)}
    assert _cycle(graph) == ["sb3_trpo.a", "sb3_trpo.b", "sb3_trpo.a"]


def test_no_private_name_is_imported_from_another_module() -> None:
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sb3_trpo"):
                private = [alias.name for alias in node.names if alias.name.startswith("_") and not alias.name.endswith("__")]
                assert not private, f"{name} imports {private} from {node.module}"


SETTINGS = (
    "print(repr((multiprocessing.get_start_method(allow_none=True), "
    "list(multiprocessing.forkserver._forkserver._preload_modules))))"
)


def test_importing_the_package_changes_no_multiprocessing_setting() -> None:
    """``import sb3_trpo`` (and every module of it) leaves the start method and the fork server's preload list as
    they were: a pool adds its module to the list when it starts, not on import."""
    modules = [name for name in _modules() if not name.endswith("__main__")]
    script = "\n".join(
        ["import multiprocessing, multiprocessing.forkserver", SETTINGS, "import sb3_trpo", SETTINGS]
        + [f"import {name}" for name in modules]
        + [SETTINGS]
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    before, after_package, after_every_module = result.stdout.strip().splitlines()
    assert before == after_package == after_every_module
