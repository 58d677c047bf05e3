"""Task identity as an observation: the one-hot id of the task in force, appended.

Continual World gives its agents the one-hot id of the current task; parameter-isolation
methods (multi-head policies, PackNet, progressive networks, adapters) need it at act time, in
training and in evaluations on past regimes alike. :class:`TaskIdObservation` appends it to a
flat ``Box`` observation, read from the drifts inside (so pinning a past regime with
``set_regime`` pins its id too). Every registered drifting env takes it as a ``gymnasium.make``
option: ``gymnasium.make(id, task_id=True)`` (as many ids as the schedule has distinct regimes)
or ``task_id=N`` (room for ``N`` tasks, for schedules whose regimes never repeat).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from crl.drift.base import DriftWrapper, find_drifts
from crl.errors import ConfigError, check_int

__all__ = ["TaskIdObservation", "task_id_wrapper"]


class TaskIdObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Append the one-hot task id (length ``n_tasks``) to every observation.

    The id is :meth:`DriftWrapper.task_index <crl.drift.base.DriftWrapper.task_index>` of the
    outermost drift inside: a revisited regime of a cyclic schedule keeps its first id, a task
    sequence gives the task's place in the sequence. A task id beyond ``n_tasks`` stops the run
    with one line.

    Args:
        env: a drifting env with a flat ``Box`` observation space.
        n_tasks: the one-hot's length; default: the env's number of distinct tasks
            (:attr:`DriftWrapper.n_tasks <crl.drift.base.DriftWrapper.n_tasks>`), which must then be known.

    Example:
        >>> import crl
        >>> crl.register_drifting("doc/TaskCartPole-v0", base="CartPole-v1", drifts=[{"level_shift": {}}],
        ...                       schedule={"cyclic": {"change_every": 10, "cycle": [0, 1], "align": "exact"}})
        >>> env = gym.make("doc/TaskCartPole-v0", task_id=True)
        >>> obs, _ = env.reset(seed=0)
        >>> env.observation_space.shape, obs[-2:].tolist()
        ((6,), [1.0, 0.0])
        >>> for _ in range(10):
        ...     obs = env.step(0)[0]
        >>> obs[-2:].tolist()
        [0.0, 1.0]
    """

    def __init__(self, env: gym.Env, n_tasks: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, n_tasks=n_tasks)
        gym.ObservationWrapper.__init__(self, env)
        drifts = find_drifts(env)
        if not drifts:
            raise ConfigError("task_id: the env has no drift, so no task identity to observe")
        self.drift: DriftWrapper = drifts[0]
        if n_tasks is None:
            n_tasks = self.drift.n_tasks
            if n_tasks is None:
                raise ConfigError(
                    f"task_id: the {self.drift.schedule.name} schedule has no fixed set of regimes; "
                    "give the number of task ids (task_id: N)"
                )
        self.n_tasks = check_int("task_id", n_tasks, minimum=1)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ConfigError(f"task_id needs a flat Box observation space, got {space}")
        low = np.concatenate([space.low, np.zeros(self.n_tasks, space.dtype)])
        high = np.concatenate([space.high, np.ones(self.n_tasks, space.dtype)])
        self.observation_space = gym.spaces.Box(low, high, dtype=space.dtype)

    @property
    def task(self) -> int:
        """The task id in force now (checked against ``n_tasks``)."""
        task = self.drift.task_index()
        if task >= self.n_tasks:
            raise ConfigError(
                f"task_id: regime {self.drift.regime} is task {task}, but only {self.n_tasks} task ids were "
                f"asked for (task_id: {self.n_tasks}); raise it"
            )
        return task

    def observation(self, observation: Any) -> np.ndarray:
        one_hot = np.zeros(self.n_tasks, self.observation_space.dtype)
        one_hot[self.task] = 1.0
        return np.concatenate([np.asarray(observation, self.observation_space.dtype), one_hot])


def task_id_wrapper(env: gym.Env, task_id: bool | int) -> gym.Env:
    """``env`` with :class:`TaskIdObservation` when ``task_id`` asks for it (``True``: as many ids as
    the env has tasks; an int: that many), else ``env`` itself.

    Example:
        >>> task_id_wrapper(gym.make("CartPole-v1"), False).spec.id
        'CartPole-v1'
    """
    if task_id is False or task_id is None:
        return env
    if task_id is True:
        return TaskIdObservation(env)
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise ConfigError(f"task_id must be true, false or a number of tasks, got {task_id!r}")
    return TaskIdObservation(env, task_id)
