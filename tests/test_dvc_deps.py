"""Every project module a DVC stage imports (directly or through other modules, at any depth,
function-level imports included) is among that stage's deps, so that `dvc repro` reruns a stage
whenever code it runs has changed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _module_file(name: str) -> Path | None:
    """The file of project module ``name`` (``upreid.x.y``), or None if not the project's."""
    if name != "upreid" and not name.startswith("upreid."):
        return None
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (never executed)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path) -> set[Path]:
    found: set[Path] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "_common":
                found.add(ROOT / "stages" / "_common.py")
                continue
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        for name in names:
            file = _module_file(name)
            # the package's own __init__ only re-exports lazily (upreid.api); not followed
            if file is not None and file != ROOT / "upreid" / "__init__.py":
                found.add(file)
    return found


def closure(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(_imports(path) - seen)
    return seen


def stages() -> list[tuple[str, str, list[str]]]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in spec.items():
        body = stage.get("do", stage)
        script = body["cmd"].split()[1]
        out.append((name, script, [d for d in body["deps"] if isinstance(d, str)]))
    return out


@pytest.mark.parametrize("name,script,deps", stages(), ids=[s[0] for s in stages()])
def test_a_stage_depends_on_every_module_it_runs(name: str, script: str, deps: list[str]) -> None:
    covered = [ROOT / d for d in deps]
    missing = sorted(
        str(p.relative_to(ROOT))
        for p in closure(ROOT / script)
        if not any(p == c or c in p.parents for c in covered)
    )
    assert not missing, f"stage {name}: add to its deps: {missing}"
