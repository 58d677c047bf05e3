"""Task sequence: different base environments with identical spaces, switched by the schedule."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from crl.drift.base import DriftWrapper, Params
from crl.drift.schedules import Schedule
from crl.errors import ConfigError
from crl.seeding import derive

__all__ = ["TaskSequence"]


class TaskSequence(DriftWrapper):
    """Switch between environments: regime ``k`` runs ``tasks[k % len(tasks)]``.

    The wrapped env is task 0; the others are made with ``gymnasium.make(id)``, with task 0's
    episode limit where it has one, and must have identical observation and action spaces. A
    switch takes effect at the next ``reset()`` (an episode never mixes two tasks), so pair it
    with an episode-aligned schedule. ``info["drift/task"]`` is the index of the task in use.

    A seeded ``reset(seed=s)`` seeds every task: the one in use with ``s``, task ``j`` otherwise
    with ``crl.seeding.derive(s, "task_sequence", j)`` (a throw-away reset), so a task switched
    in later starts from seeded episodes too. :meth:`get_state` holds the task in use and
    :meth:`task_envs` every task's env, whose states crl's checkpoints keep.

    Args:
        env: the first task.
        tasks: ids of the other tasks, in order (task 0 is ``env``).
        schedule, drift_seed, num_envs: see :class:`~crl.drift.base.DriftWrapper`.

    Example:
        >>> import gymnasium as gym
        >>> env = TaskSequence(gym.make("CartPole-v1", max_episode_steps=5), tasks=["CartPole-v0"],
        ...                    schedule={"every_n_steps": {"change_every": 5}})
        >>> _ = env.reset(seed=0)
        >>> ends = [env.step(0)[3] for _ in range(5)]
        >>> _, info = env.reset()
        >>> info["drift/task"], env.env.spec.id
        (1.0, 'CartPole-v0')
    """

    name = "task_sequence"

    def __init__(
        self,
        env: gym.Env,
        tasks: list[str] | None = None,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        if not tasks or not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise ConfigError(f"tasks must be a non-empty list of Gymnasium ids, got {tasks!r}")
        envs = [env]
        limit = env.spec.max_episode_steps if env.spec is not None else None
        for t in tasks:
            try:
                other = gym.make(t) if limit is None else gym.make(t, max_episode_steps=limit)
            except gym.error.Error as e:
                raise ConfigError(f"task {t!r}: {e}") from None
            for what in ("observation_space", "action_space"):
                if getattr(other, what) != getattr(env, what):
                    raise ConfigError(f"task {t!r}: {what} {getattr(other, what)} differs from {getattr(env, what)}")
            envs.append(other)
        self._tasks = envs
        self._active = 0
        super().__init__(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs)
        self._record(tasks=tasks)

    def sample_params(self, rng: np.random.Generator, regime: int) -> Params:
        return {"task": float(regime % len(self._tasks))}

    @property
    def n_tasks(self) -> int:
        """The number of tasks in the sequence (a task revisited keeps its id)."""
        return len(self._tasks)

    def task_index(self, regime: int | None = None) -> int:
        """The index in the sequence of the task that ``regime`` runs (default: the one in force)."""
        return int(self.regime if regime is None else regime) % len(self._tasks)

    def interpolate(self, a: Params, b: Params, alpha: float) -> Params:
        raise ConfigError("task_sequence cannot change gradually; use a step schedule")

    def task_envs(self) -> list[gym.Env]:
        """Every task's env, task 0 first (the one in use is also ``self.env``)."""
        return list(self._tasks)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._refresh()
        index = int(self._params["task"])
        if seed is not None:  # the other tasks' episodes are seeded too (derived from seed)
            for i, task in enumerate(self._tasks):
                if i != index:
                    task.reset(seed=derive(seed, "task_sequence", i))
        if index != self._active:
            self._active = index
            self.env = self._tasks[index]
        return super().reset(seed=seed, options=options)

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "active": self._active}

    def select_task(self, index: int) -> None:
        """Run task ``index`` from now on (a checkpoint's task in use, put back before its stack is)."""
        self._active = int(index)
        self.env = self._tasks[self._active]

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if "active" in state:
            self.select_task(state["active"])

    def close(self) -> None:
        for e in self._tasks:
            e.close()
