"""Sweeps: a grid of (env x agent x seed) runs from one YAML file.

A sweep file (``experiments/*.yaml``)::

    description: what the sweep compares and what it costs
    experiment: quickstart          # folder under the runs dir (default: file stem)
    envs: [slippery-ant]
    agents: [ppo, ppo-l2]
    seeds: [0, 1, 2]                # or an integer n for seeds 0..n-1
    steps: 30000
    env_kwargs: {change_every: 10000}
    agent_kwargs: {}
    n_envs: 1
    checkpoint_every: 50000
    wandb: auto
    report: true                    # build the HTML report at the end

Grid expansion is deterministic (envs, then agents, then seeds) and every run has a
stable folder, so running a sweep twice skips finished runs and resumes unfinished ones.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crl.config import from_mapping, load_yaml
from crl.errors import ConfigError
from crl.run import RunConfig, RunResult, train

__all__ = ["SweepSpec", "load_sweep", "expand", "run_sweep"]


@dataclass
class SweepSpec:
    """A sweep file."""

    description: str
    """What the sweep compares, where it comes from, and its measured cost."""
    envs: list[str]
    """Env names (catalog names, YAML paths or Gymnasium ids)."""
    agents: list[str]
    """Agent names (catalog names or YAML paths)."""
    seeds: list[int] | int = 1
    """Seeds, or a count n meaning seeds 0..n-1."""
    steps: int = 100_000
    """Environment steps per run."""
    experiment: str = ""
    """Folder under the runs dir (default: the file's stem)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides applied to every env."""
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides applied to every agent."""
    n_envs: int = 1
    """Parallel envs per run."""
    checkpoint_every: int = 50_000
    """Steps between checkpoints."""
    wandb: str = "auto"
    """wandb mode of every run."""
    report: bool = False
    """Build the HTML report of the experiment at the end."""

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (catalog name or path)."""
    p = Path(path)
    if not p.exists() and not str(path).endswith((".yaml", ".yml")):
        from crl.catalog import experiment_files

        files = experiment_files()
        if str(path) not in files:
            raise ConfigError(f"no sweep file {str(path)!r}; catalog experiments: {', '.join(sorted(files))}")
        p = files[str(path)]
    spec = from_mapping(SweepSpec, load_yaml(p), str(p))
    if not spec.experiment:
        spec.experiment = p.stem
    if not spec.envs or not spec.agents or not spec.seed_list:
        raise ConfigError(f"{p}: envs, agents and seeds must not be empty")
    if spec.steps <= 0:
        raise ConfigError(f"{p}: steps must be positive, got {spec.steps}")
    return spec


def expand(spec: SweepSpec, run_dir: str = "runs", wandb: str | None = None, **overrides: Any) -> list[RunConfig]:
    """The runs of the grid, in a deterministic order (envs, agents, seeds)."""
    runs = []
    for env in spec.envs:
        for agent in spec.agents:
            for seed in spec.seed_list:
                cfg = RunConfig(
                    env=env,
                    agent=agent,
                    seed=seed,
                    steps=spec.steps,
                    experiment=spec.experiment,
                    run_dir=run_dir,
                    env_kwargs=dict(spec.env_kwargs),
                    agent_kwargs=dict(spec.agent_kwargs),
                    n_envs=spec.n_envs,
                    checkpoint_every=spec.checkpoint_every,
                    wandb=wandb or spec.wandb,
                )
                runs.append(dataclasses.replace(cfg, **overrides))
    return runs


def run_sweep(spec: SweepSpec, run_dir: str = "runs", wandb: str | None = None, **overrides: Any) -> list[RunResult]:
    """Run every run of the grid one after the other (skip finished, resume unfinished).

    A run that fails is reported and the sweep goes on; the failures are listed at the end.
    """
    results = []
    runs = expand(spec, run_dir, wandb, **overrides)
    for i, cfg in enumerate(runs, 1):
        print(
            f"[sweep {spec.experiment}] run {i}/{len(runs)}: {cfg.env} / {cfg.agent} / seed {cfg.seed}",
            file=sys.stderr,
            flush=True,
        )
        try:
            results.append(train(cfg))
        except KeyboardInterrupt:
            raise
        except ConfigError:
            raise
        except Exception as e:
            print(f"[sweep {spec.experiment}] run failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            results.append(RunResult(Path(run_dir) / spec.experiment, "failed", 0))
    return results
