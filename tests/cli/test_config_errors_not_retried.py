"""A config error is never retried by a sweep, whatever the backend: retrying cannot fix bad
input. Both backends hand each attempt's :class:`crl.sweep.RunOutcome` to the same book-keeping,
which requeues a failed run only if ``config_error`` is false; :func:`crl.sweep.execute` (what a
local worker and a Ray task run) sets it for every :class:`~crl.errors.CrlError`.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from crl.spec import RunConfig, SweepSpec
from crl.sweep import execute, run_sweep


def _clash(run_dir: Path, experiment: str) -> None:
    """A run folder holding a run with another config: a ConfigError only when the run starts."""
    folder = run_dir / experiment / "CartPole-v1__ppo__s0"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": 99, "experiment": experiment}))


def test_execute_marks_a_config_error(tmp_path: Path) -> None:
    _clash(tmp_path, "x")
    cfg = RunConfig(env="CartPole-v1", agent="ppo", steps=128, experiment="x", run_dir=str(tmp_path), wandb="disabled")
    out = execute(cfg)
    assert out.status == "failed" and out.config_error and "different config" in (out.error or "")


def test_a_sweep_does_not_retry_a_config_error(tmp_path: Path) -> None:
    _clash(tmp_path, "s")
    spec = SweepSpec(description="x", envs=["CartPole-v1"], agents=["ppo"], steps=128, experiment="s", wandb="disabled")
    summary = run_sweep(spec, str(tmp_path), retries=2, workers=1, progress=False)
    (run,) = summary["runs"]
    assert run["status"] == "failed" and run["attempts"] == 1 and "different config" in run["error"]
