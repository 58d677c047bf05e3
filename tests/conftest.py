"""Shared fixtures: the repo root on the path, wandb and rendering kept local."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``pytest -n auto`` (``make test``): one worker per core this process may use (its CPU
    affinity, as crl's runs count them, not the host's count a container may report), at most 8
    (each worker holds torch and MuJoCo).
    """
    from crl.system import usable_cores

    return min(usable_cores(), 8)


def run_crl(
    *args: str,
    cwd: Path | None = None,
    check: bool = False,
    timeout: float = 300,
    env: dict[str, str | None] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m crl ARGS`` in a subprocess (the real command line); ``env`` values
    of None remove the variable."""
    full = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "crl", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in full.items() if v is not None},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"crl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def crl_cli():
    """The ``run_crl`` helper as a fixture."""
    return run_crl
