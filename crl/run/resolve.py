"""From a :class:`~crl.run.RunConfig` to what the run builds: the env (``module:EnvId`` too), the
env's ``gymnasium.make`` arguments, the run's name and its fully resolved config. (The agent
with its overrides is :func:`crl.catalog.resolve_agent`.)
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from crl.catalog import resolve_env
from crl.config import to_plain
from crl.errors import ConfigError
from crl.hyperparameters import check_rollout_size
from crl.spec import AgentSpec, EnvSpec, RunConfig, check_run_dir

__all__ = ["env_of", "make_kwargs", "run_name", "resolved_config", "check_run", "check_extension"]


def env_of(name: str) -> EnvSpec:
    """The env spec of ``name``; ``module:EnvId`` imports ``module`` first (it registers ``EnvId``),
    Gymnasium's own convention for envs of the user's package.

    Example:
        >>> env_of("gymnasium.envs.classic_control:CartPole-v1").id
        'CartPole-v1'
    """
    module, sep, env_id = name.partition(":")
    if sep and module and env_id and "/" not in module:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            raise ConfigError(f"--env {name}: cannot import module {module!r} ({e})") from None
        return resolve_env(env_id)
    return resolve_env(name)


def make_kwargs(env: EnvSpec, cfg: RunConfig, num_envs: int | None = None, task_id: bool = False) -> dict[str, Any]:
    """The fully resolved ``gymnasium.make`` keyword arguments of ``env`` in run ``cfg``.

    A drifting env's ``drift_seed`` defaults to the run seed, so every agent of seed ``s``
    sees the same regimes; ``num_envs`` is the envs stepped together (default ``cfg.n_envs``);
    ``task_id`` (an agent that observes the task id) turns on the env's ``task_id`` option
    unless ``cfg.env_kwargs`` sets it.
    """
    kwargs = dict(cfg.env_kwargs)
    if env.base is None:
        if task_id:
            raise ConfigError(f"the agent observes the task id, but env {env.name or env.id!r} has no regimes")
        return kwargs
    if task_id:
        kwargs.setdefault("task_id", True)
    kwargs.setdefault("drift_seed", cfg.seed)
    kwargs["num_envs"] = cfg.n_envs if num_envs is None else num_envs
    return env.make_kwargs(kwargs)


def run_name(env: EnvSpec, agent: AgentSpec, seed: int) -> str:
    """Folder name of a run: ``<env>__<agent>__s<seed>``."""
    return f"{env.name}__{agent.name}__s{seed}"


def check_run(cfg: RunConfig, agent: AgentSpec, folder: Path) -> None:
    """The checks of a run that need both its config and its resolved agent or folder, before
    anything is written: PPO's rollout size with ``n_envs`` (an ``assert`` in SB3), and the
    run folder (``folder``, under ``cfg.run_dir``) can be made and written. One-line
    :class:`~crl.errors.ConfigError`.
    """
    try:
        check_rollout_size(agent.algo, agent.hyperparameters, cfg.n_envs)
    except ConfigError as e:
        raise ConfigError(f"{agent.name}: hyperparameters: {e}") from None
    check_run_dir(cfg.run_dir, str(folder.relative_to(cfg.run_dir)))


def check_extension(folder: Path, done: int, steps: int, resume: bool, ckpt_step: int | None) -> None:
    """Whether the run in ``folder``, finished at step ``done``, may train on to ``steps``
    (``> done``): only when asked (``resume``), and only from a checkpoint taken at its end
    (crl takes one when a run finishes). Else a one-line :class:`ConfigError` saying how.
    """
    if not resume:
        raise ConfigError(
            f"{folder} finished at step {done:,}; to train it on to {steps:,} steps add --resume "
            "(or start again with --overwrite)"
        )
    if ckpt_step != done:
        where = "no checkpoint" if ckpt_step is None else f"its last checkpoint is at step {ckpt_step:,}"
        raise ConfigError(
            f"{folder} finished at step {done:,} but {where}, so it cannot be extended exactly "
            "(it finished before crl kept a checkpoint of the end); start again with --overwrite"
        )


def resolved_config(cfg: RunConfig, env: EnvSpec, agent: AgentSpec, kwargs: dict[str, Any], wandb_mode: str) -> dict:
    """The run's fully resolved config (what ``config.yaml`` holds)."""
    from crl import __version__

    return to_plain(
        {
            "experiment": cfg.experiment,
            "env": {"name": env.name, "id": env.id, "description": env.description, "make_kwargs": kwargs},
            "agent": agent.to_dict(),
            "seed": cfg.seed,
            "steps": cfg.steps,
            "n_envs": cfg.n_envs,
            "vec_env": cfg.vec_env,
            "checkpoint_every": cfg.checkpoint_every,
            "device": cfg.device,
            "torch_threads": cfg.torch_threads,
            "train_threads": cfg.train_threads,
            "wandb": {"mode": wandb_mode, "project": cfg.wandb_project, "entity": cfg.wandb_entity},
            "diagnostics": {
                "every": cfg.diagnostics_every,
                "eval_every": cfg.eval_every,
                "eval_episodes": cfg.eval_episodes,
                "summary_last_frac": cfg.summary_last_frac,
            },
            "command": cfg.command,
            "crl_version": __version__,
        }
    )
