"""The vectorised envs of a run, and their checkpointable state."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from crl.checkpoint import get_env_state, set_env_state
from crl.drift import TaskIdObservation
from crl.errors import ConfigError, CrlError
from crl.system import usable_cores

__all__ = ["make_vec_env", "env_states", "set_env_states", "check_env_make", "task_count"]


def make_vec_env(env_id: str, make_kwargs: dict[str, Any], n_envs: int, kind: str = "dummy") -> VecEnv:
    """``n_envs`` copies of ``gymnasium.make(env_id, **make_kwargs)``, each with SB3's
    ``Monitor`` outermost, in a ``DummyVecEnv`` (``kind="dummy"``) or a
    :class:`~crl.fast.ProcVecEnv` (``"proc"``; ``"auto"``: proc for several envs on several cores).

    Example:
        >>> venv = make_vec_env("CartPole-v1", {}, 2)
        >>> venv.num_envs, type(venv).__name__
        (2, 'DummyVecEnv')
        >>> venv.close()
    """

    def factory() -> gym.Env:
        return Monitor(gym.make(env_id, **make_kwargs))

    if kind == "auto":
        kind = "proc" if n_envs > 1 and usable_cores() > 1 else "dummy"
    if kind == "proc":
        from crl.fast import ProcVecEnv

        return ProcVecEnv([factory] * n_envs)
    return DummyVecEnv([factory] * n_envs)


def env_states(venv: VecEnv) -> list[Any]:
    """The checkpointable state of every env of ``venv`` (DummyVecEnv or ProcVecEnv)."""
    if isinstance(venv, DummyVecEnv):
        return [get_env_state(e) for e in venv.envs]
    return venv.get_env_states()


def set_env_states(venv: VecEnv, states: list[Any]) -> None:
    """Restore :func:`env_states`."""
    if isinstance(venv, DummyVecEnv):
        if len(states) != len(venv.envs):
            raise ValueError(f"{len(states)} env states for {len(venv.envs)} envs")
        for e, st in zip(venv.envs, states, strict=True):
            set_env_state(e, st)
    else:
        venv.set_env_states(states)


def check_env_make(env_id: str, make_kwargs: dict[str, Any]) -> int:
    """Make and close the env once: bad keyword arguments become one-line :class:`ConfigError`.

    Returns the number of task ids its observations end with (the ``task_id`` option; 0: none).
    """
    try:
        env = gym.make(env_id, **make_kwargs)
    except CrlError:
        raise
    except (TypeError, gym.error.Error) as e:
        raise ConfigError(f"env {env_id!r} rejected its arguments: {e}") from None
    tasks = task_count(env)
    env.close()
    return tasks


def task_count(env: gym.Env) -> int:
    """How many task ids end ``env``'s observations (its :class:`~crl.drift.TaskIdObservation`), or 0.

    Example:
        >>> task_count(gym.make("CartPole-v1"))
        0
    """
    e: Any = env
    while e is not None:
        if isinstance(e, TaskIdObservation):
            return e.n_tasks
        e = getattr(e, "env", None)
    return 0
