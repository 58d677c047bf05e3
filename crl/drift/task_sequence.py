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

    The wrapped env is task 0; the others are made with ``gymnasium.make(id)`` and must
    have identical observation and action spaces. A switch takes effect at the next
    ``reset()`` (an episode never mixes two tasks), so pair it with an episode-aligned
    schedule. ``info["drift/task"]`` is the index of the task in use.

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
        for t in tasks:
            try:
                other = gym.make(t)
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
        """The drift's state, the task in use and every task's episode generator (the one in use
        is also saved with its stack; the others' episodes start from theirs).
        """
        rngs = [task.unwrapped.np_random.bit_generator.state for task in self._tasks]
        return {**super().get_state(), "active": self._active, "rngs": rngs}

    def select_stack(self, state: dict[str, Any]) -> None:
        """Run the task that ``state`` (:meth:`get_state`) had in use, before its stack is restored."""
        self._active = int(state.get("active", 0))
        self.env = self._tasks[self._active]

    def set_state(self, state: dict[str, Any]) -> None:
        self.select_stack(state)
        for task, rng in zip(self._tasks, state.get("rngs", []), strict=False):
            task.unwrapped.np_random.bit_generator.state = rng
        super().set_state(state)

    def close(self) -> None:
        for e in self._tasks:
            e.close()
