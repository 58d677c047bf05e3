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
        ("drift", ("crl.drift", "crl.errors", "crl.named", "crl.seeding")),
        ("seeding", ("crl.seeding",)),
        ("plasticity", ("crl.plasticity", "crl.errors", "crl.named", "crl.config")),
        ("named", ("crl.errors",)),
        # pure specs; gymnasium's registry and crl.drift's routing are read only in EnvSpec.make_kwargs
        ("spec", ("crl.spec", "crl.config", "crl.errors", "crl.named", "crl.drift", "crl.hyperparameters")),
        ("hyperparameters", ("crl.errors",)),  # pure data, read by the spec
        ("diagnostics", ("crl.diagnostics", "crl.plasticity.nets", "crl.errors", "crl.checkpoint", "crl.seeding")),
        ("fast", ("crl.fast", "crl.plasticity", "crl.system", "crl.checkpoint")),
        ("track", ("crl.track", "crl.errors", "crl.config")),
        ("report", ("crl.report", "crl.metrics", "crl.stats", "crl.errors", "crl.config")),
        ("report_page", ("crl.report", "crl.metrics", "crl.stats", "crl.errors", "crl.config")),
        ("report_figures", ("crl.report", "crl.metrics", "crl.stats", "crl.errors", "crl.config")),
        ("metrics", ("crl.metrics", "crl.stats", "crl.errors", "crl.config")),
        ("evidence", ("crl.errors",)),
        ("studies", ("crl.studies", "crl.report", "crl.metrics", "crl.stats", "crl.errors", "crl.config", "crl.probe")),
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
        "import importlib, sys\nfor m in ('crl.report', 'crl.report_page', 'crl.report_figures', 'crl.metrics',\n"
        "          'crl.studies', 'crl.evidence'):\n"
        "    try: importlib.import_module(m)\n    except ModuleNotFoundError: pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _private_imports(path: Path) -> list[str]:
    """``from crl.x import _name`` (a private name of another module) anywhere in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crl") and node.level == 0:
            out += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    return out


def test_no_module_imports_another_modules_private_names():
    bad = {str(p.relative_to(ROOT)): names for p in sorted(PKG.rglob("*.py")) if (names := _private_imports(p))}
    assert not bad, f"private names imported across modules: {bad}"


def _long_functions(path: Path, limit: int) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            if body:
                n = body[-1].end_lineno - body[0].lineno + 1
                if n > limit:
                    out.append(f"{node.name} ({n} lines)")
    return out


@pytest.mark.parametrize("sub", ["run", "fast", "cli"])
def test_functions_in_the_core_packages_fit_on_a_screen(sub):
    """No function body over 60 lines (docstrings not counted) in crl/run, crl/fast and crl/cli."""
    bad = {str(p.relative_to(ROOT)): f for p in sorted((PKG / sub).rglob("*.py")) if (f := _long_functions(p, 60))}
    assert not bad, f"functions over 60 lines: {bad}"


def test_the_tree_says_where_things_live():
    """Drifts, interventions, diagnostics, callbacks, the fast path and the CLI each have their package."""
    for sub in ("drift", "plasticity", "diagnostics", "run", "run/callbacks", "fast", "cli"):
        assert (PKG / sub / "__init__.py").is_file(), sub
    assert (PKG / "spec.py").is_file()
