"""DESIGN.md's dependency rules, checked on the source: who may import whom."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PKG = ROOT / "crl"


def _crl_imports(path: Path) -> set[str]:
    """Modules of crl imported anywhere in ``path`` (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("crl")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crl") and node.level == 0:
            out.add(node.module)
    return out


def _modules(sub: str) -> list[Path]:
    p = PKG / sub
    return sorted(p.rglob("*.py")) if p.is_dir() else ([p.with_suffix(".py")] if p.with_suffix(".py").exists() else [])


@pytest.mark.parametrize(
    ("sub", "allowed"),
    [
        ("drift", ("crl.drift", "crl.errors")),
        ("plasticity", ("crl.plasticity", "crl.errors", "crl.config")),
        ("track", ("crl.track", "crl.errors", "crl.config")),
        ("report", ("crl.report", "crl.metrics", "crl.stats", "crl.errors", "crl.config", "crl.cli")),
        ("metrics", ("crl.metrics", "crl.stats", "crl.errors", "crl.config", "crl.cli")),
    ],
)
def test_dependency_rules(sub, allowed):
    for path in _modules(sub):
        bad = {m for m in _crl_imports(path) if not m.startswith(allowed)}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; allowed: {allowed}"


def test_import_crl_does_not_load_torch():
    code = "import crl, sys; print('torch' in sys.modules, 'stable_baselines3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_report_and_metrics_do_not_load_torch():
    code = (
        "import importlib, sys\nfor m in ('crl.report', 'crl.metrics'):\n"
        "    try: importlib.import_module(m)\n    except ModuleNotFoundError: pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
