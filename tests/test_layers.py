"""The direction of dependencies, checked on the source: front ends -> engine -> core -> ground
floor (see docs/architecture.md). Every ``import`` counts, including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("common", "index", "retriever", "generator", "engine", "api", "attend", "eval")

# What each package may import of ours (besides itself).
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "index": {"common"},
    "retriever": {"common", "index"},
    "generator": {"common", "index", "retriever"},
    "engine": {"common", "index", "retriever", "generator"},
    "api": {"common", "engine"},
    "attend": {"common", "engine", "eval"},
    "eval": {"common", "index", "retriever", "generator", "engine"},
}
# Modules allowed more, and why.
EXCEPTIONS: dict[str, set[str]] = {
    "attend.commands.serve": {"api"},  # `attend serve` runs the API
    # Model tools, not services: they drive one model directly (no collection, no store).
    "attend.commands.embed": {"retriever"},
    "attend.commands.generate": {"generator"},
    "attend.commands.train_encoder": {"retriever"},
    "attend.commands.train_distill": {"retriever"},
    "attend.commands.train_reranker": {"retriever"},
    "attend.commands.train_generator": {"generator"},
}
MAX_LINES = 500


def _sources() -> list[Path]:
    return sorted(p for pkg in OURS for p in (ROOT / pkg).rglob("*.py"))


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """``(line, top-level package)`` of every absolute import of ours in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out.extend((node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in OURS)
    return out


def violations(path: Path) -> list[str]:
    module = _module(path)
    package = module.split(".")[0]
    allowed = ALLOWED[package] | {package} | EXCEPTIONS.get(module, set())
    return [f"{path.relative_to(ROOT)}:{line} imports {target}" for line, target in imported_packages(path)
            if target not in allowed]


def test_every_package_has_rules() -> None:
    assert set(ALLOWED) == set(OURS)
    for pkg in OURS:
        assert (ROOT / pkg / "__init__.py").is_file(), pkg


def test_dependencies_point_one_way() -> None:
    found = [v for p in _sources() for v in violations(p)]
    assert not found, "imports against the layering (docs/architecture.md):\n" + "\n".join(found)


def test_the_check_catches_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    (tmp_path / "index").mkdir()
    bad = tmp_path / "index" / "bad.py"
    bad.write_text("def f():\n    from engine.engine import Engine\n    import api.main\n")
    assert violations(bad) == ["index/bad.py:2 imports engine", "index/bad.py:3 imports api"]
    ok = tmp_path / "index" / "ok.py"
    ok.write_text("from common.errors import InvalidInput\nimport numpy\n")
    assert violations(ok) == []


def test_files_stay_small() -> None:
    big = [f"{p.relative_to(ROOT)}: {n} lines" for p in _sources()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not big, f"split these by concept (at most {MAX_LINES} lines):\n" + "\n".join(big)
