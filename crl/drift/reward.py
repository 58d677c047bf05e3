"""Reward drift: target running direction or target velocity per regime."""

from __future__ import annotations

from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np

from crl.drift.base import DriftWrapper, Params
from crl.drift.schedules import Schedule
from crl.errors import ConfigError, check_non_negative

__all__ = ["TargetVelocity"]


class TargetVelocity(DriftWrapper):
    """Change what the locomotion reward asks for: running direction or target speed.

    The wrapped env must report ``info["x_velocity"]`` and ``info["reward_forward"]``
    (Gymnasium's v5 MuJoCo locomotion tasks do). The forward term is replaced, the other
    terms (control and contact costs, healthy reward) are kept:

    * ``mode="direction"``: regime ``k`` has direction ``d_k = +1`` for even ``k`` and ``-1``
      for odd ``k`` (forward, backward, ...); reward ``= r - f + d_k * f`` with ``f`` the
      forward term. ``info["drift/direction"]``.
    * ``mode="velocity"``: regime ``k`` has target ``v_k ~ U(low, high)``; reward
      ``= r - f - weight * |x_velocity - v_k|``. ``info["drift/target_velocity"]``.

    ``info["reward_task"]`` holds the replaced term, so the terms still sum to the reward.

    Args:
        env: a locomotion env with the info keys above.
        mode: ``"direction"`` or ``"velocity"``.
        low, high: range of target velocities (``mode="velocity"``).
        weight: weight of the velocity error.
        schedule, drift_seed, num_envs: see :class:`~crl.drift.base.DriftWrapper`.

    Example:
        >>> import gymnasium as gym
        >>> env = TargetVelocity(gym.make("HalfCheetah-v5"), schedule={"explicit": {"changes": [[1, 1]]}})
        >>> _ = env.reset(seed=0)
        >>> _, r0, *_, i0 = env.step(env.action_space.sample())
        >>> _, r1, *_, i1 = env.step(env.action_space.sample())
        >>> i0["drift/direction"], i1["drift/direction"]
        (1.0, -1.0)
        >>> bool(np.isclose(r1, -i1["reward_forward"] + i1["reward_ctrl"]))
        True
    """

    name = "target_velocity"

    def __init__(
        self,
        env: gym.Env,
        mode: Literal["direction", "velocity"] = "direction",
        low: float = 0.5,
        high: float = 3.0,
        weight: float = 1.0,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        if mode not in ("direction", "velocity"):
            raise ConfigError(f"mode must be 'direction' or 'velocity', got {mode!r}")
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low <= high):
            raise ConfigError(f"need numbers low <= high, got {low!r}, {high!r}")
        self.mode, self.low, self.high = mode, float(low), float(high)
        self.weight = check_non_negative("weight", weight)
        super().__init__(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs)
        self._record(mode=mode, low=low, high=high, weight=weight)

    def sample_params(self, rng: np.random.Generator, regime: int) -> Params:
        if self.mode == "direction":
            return {"direction": 1.0 if regime % 2 == 0 else -1.0}
        return {"target_velocity": float(rng.uniform(self.low, self.high))}

    def transform_reward(self, reward: SupportsFloat, info: dict[str, Any]) -> SupportsFloat:
        if "reward_forward" not in info or "x_velocity" not in info:
            raise ConfigError("target_velocity needs info['reward_forward'] and info['x_velocity'] from the env")
        forward = float(info["reward_forward"])
        if self.mode == "direction":
            task = self._params["direction"] * forward
        else:
            task = -self.weight * abs(float(info["x_velocity"]) - self._params["target_velocity"])
        info["reward_task"] = task
        return float(reward) - forward + task
