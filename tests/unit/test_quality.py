"""House rules checked on every run: ruff, mypy, cohesion (no cycles, no private reach), API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "langchain_ha"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "src", "tests", "benchmarks", "examples")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str]]:
    """``(imported module, imported name or "")`` for every import of our own code."""
    found: list[tuple[str, str]] = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            base = node.module
            if node.level:  # relative: from the package, up level - 1 packages
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, node.module])
            if base.startswith("langchain_ha"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.append((sub, "") if sub in modules else (base, alias.name))
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("langchain_ha")]
    return found


# Known debt, to be paid by step 8 (issue 19): this list may only shrink.
_KNOWN_PRIVATE: set[tuple[str, str]] = set()
_KNOWN_CYCLES = {
    frozenset({"langchain_ha.cli", "langchain_ha.providers.simulator"}),
    frozenset({"langchain_ha.cluster.rollout", "langchain_ha.cluster.startup",
               "langchain_ha.cluster.supervisor"}),
}


def _private_uses() -> set[tuple[str, str]]:
    """Imports of another module's private name, or of a private module from outside the
    package that holds it (``langchain_ha._proc`` is shared by every package of ours)."""
    modules = _modules()
    bad = set()
    for module, path in modules.items():
        for target, name in _imports(module, path, modules):
            if name.startswith("_") and not name.startswith("__"):
                bad.add((module, f"{target}.{name}"))
            parts = target.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_")]
            if private:
                owner = ".".join(parts[: private[0]])
                if module != owner and not module.startswith(owner + "."):
                    bad.add((module, target))
    return bad


def test_no_module_uses_another_modules_private_names() -> None:
    assert _private_uses() - _KNOWN_PRIVATE == set()


def _cycles() -> set[frozenset[str]]:
    modules = _modules()
    graph = {m: {t for t, _ in _imports(m, p, modules) if t in modules and t != m}
             for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: set[frozenset[str]] = set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.add(frozenset(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles() -> None:
    """Type-only imports count too: a cycle is a sign of one concept in two modules."""
    assert _cycles() - _KNOWN_CYCLES == set()


def test_the_known_debt_is_still_owed() -> None:
    """The allow-lists above shrink when debt is paid: an entry that no longer applies must go."""
    assert _private_uses() >= _KNOWN_PRIVATE
    assert _cycles() >= _KNOWN_CYCLES


@pytest.mark.parametrize("name", __import__("langchain_ha").__all__)
def test_public_names_resolve(name: str) -> None:
    import langchain_ha

    assert getattr(langchain_ha, name) is not None
