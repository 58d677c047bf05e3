"""The wheel carries the catalogs, so a non-editable install works."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def test_wheel_ships_catalogs_and_works_outside_the_repo(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("crl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "crl/_catalog/envs/slippery-ant.yaml" in names
    assert "crl/_catalog/agents/ppo.yaml" in names
    assert "crl/_catalog/experiments/quickstart.yaml" in names
    assert not any(n.startswith(("envs/", "agents/", "experiments/", "tests/")) for n in names)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import crl, gymnasium as gym; from crl.catalog import builtin_dir, agent_specs, env_specs;"
        f"assert str(builtin_dir()).startswith({str(site)!r}), builtin_dir();"
        "assert 'ppo' in agent_specs() and 'slippery-ant' in env_specs();"
        "gym.make('crl/SlipperyAnt-v0'); print('ok')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(site)}, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
