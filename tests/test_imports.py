"""Every module under src/clusterplan imports on its own, and the module-level imports among
clusterplan modules form no cycle (function-local imports are allowed: they are deliberate,
lazy loads of heavy or optional parts, or documented back-compat aliases)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = ROOT / "clusterplan"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> set[str]:
    """The modules (and possible submodules) one import statement of module ``name`` names,
    relative imports resolved."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        anchor = name.split(".") if is_package else name.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    return {base, *(f"{base}.{alias.name}" for alias in node.names)}


def _top_level_imports(name: str, path: Path) -> set[str]:
    """The clusterplan modules ``name`` imports when it loads (not inside functions, nor under
    ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text("utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If):
                test = node.test
                if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                    visit(node.orelse)
                    continue
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                found.update(_imported(node, name, is_package))

    visit(tree.body)
    return {module for module in found if module in MODULES and module != name}


def _cycle() -> list[str] | None:
    """One import cycle among clusterplan modules, or None."""
    graph = {name: _top_level_imports(name, path) for name, path in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return [*stack[stack.index(child):], child]
            if child not in state:
                found = visit(child)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_among_clusterplan_modules() -> None:
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_validation_cases_no_longer_import_each_other() -> None:
    cases = _top_level_imports("clusterplan.validation.cases", MODULES["clusterplan.validation.cases"])
    inference = _top_level_imports("clusterplan.validation.inference_cases",
                                   MODULES["clusterplan.validation.inference_cases"])
    assert "clusterplan.validation.inference_cases" not in cases
    assert "clusterplan.validation.registry" not in cases
    assert "clusterplan.validation.registry" not in inference
    source = MODULES["clusterplan.validation.cases"].read_text("utf-8")
    assert "import_module" not in source  # the table registry lives in validation/registry.py


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    names = [name for name in MODULES if not name.endswith("__main__")]
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    for loaded in [m for m in sys.modules if m.startswith('clusterplan')]:\n"
            "        del sys.modules[loaded]\n"
            "    importlib.import_module(name)\n")
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("name", ["clusterplan.validation.cases", "clusterplan.validation.inference_cases",
                                  "clusterplan.validation.registry"])
def test_validation_modules_import_alone(name: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


#: The planning layers (DESIGN.md, "Layers"): below the API and the interfaces.
PLANNERS = ("training", "inference", "reliability", "campus", "fleet", "costs", "validation")
#: What they never import: the API, and the interfaces that present its answers.
ABOVE_PLANNERS = ("api", "cli", "report", "web")


def _every_import(name: str, path: Path) -> set[str]:
    """The modules ``name`` imports anywhere: at load, inside functions, under TYPE_CHECKING."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.update(_imported(node, name, is_package))
    return found


@pytest.mark.parametrize("planner", PLANNERS)
def test_planners_never_import_the_api_or_the_interfaces(planner: str) -> None:
    forbidden = tuple(f"clusterplan.{layer}" for layer in ABOVE_PLANNERS)
    modules = {name: path for name, path in MODULES.items()
               if name == f"clusterplan.{planner}" or name.startswith(f"clusterplan.{planner}.")}
    assert modules, planner
    upward = sorted(f"{name} imports {imported}" for name, path in modules.items()
                    for imported in _every_import(name, path)
                    if imported in forbidden or imported.startswith(tuple(f"{layer}." for layer in forbidden)))
    assert not upward, upward
