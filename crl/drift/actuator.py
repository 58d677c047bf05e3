"""Actuator strength drift: gear ratios or control signals scaled per regime."""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np

from crl.drift._checks import mujoco_model, scale_range
from crl.drift.base import DriftWrapper, Params, log_uniform
from crl.drift.schedules import Schedule
from crl.errors import ConfigError

__all__ = ["ActuatorDrift"]


class ActuatorDrift(DriftWrapper):
    """Scale actuator strength per regime: ``mode="gear"`` scales MuJoCo's gear ratios,
    ``mode="control"`` scales the action before the env sees it (a weaker or stronger
    motor signal, clipped to the action space).

    Factors are log-uniform in ``[low, high]``; one for all actuators, or one each with
    ``per_actuator=True``. ``info["drift/actuator_scale"]`` is the (mean) factor.

    Args:
        env: a MuJoCo env (``mode="gear"``) or any env with a Box action space.
        low, high: range of the factor.
        mode: ``"gear"`` or ``"control"``.
        per_actuator: one factor per actuator.
        schedule, drift_seed, num_envs: see :class:`~crl.drift.base.DriftWrapper`.

    Example:
        >>> import gymnasium as gym
        >>> base = gym.make("HalfCheetah-v5")
        >>> g0 = base.unwrapped.model.actuator_gear[:, 0].copy()
        >>> env = ActuatorDrift(base, low=0.5, high=0.5)
        >>> _ = env.reset(seed=0)
        >>> bool(np.allclose(env.unwrapped.model.actuator_gear[:, 0], 0.5 * g0))
        True
    """

    name = "actuator"

    def __init__(
        self,
        env: gym.Env,
        low: float = 0.5,
        high: float = 1.5,
        mode: Literal["gear", "control"] = "gear",
        per_actuator: bool = False,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        self.low, self.high = scale_range(low, high)
        if mode not in ("gear", "control"):
            raise ConfigError(f"mode must be 'gear' or 'control', got {mode!r}")
        if not isinstance(env.action_space, gym.spaces.Box):
            raise ConfigError(f"actuator needs a Box action space, got {env.action_space}")
        self.mode, self.per_actuator = mode, bool(per_actuator)
        self._gear0 = mujoco_model(env, "actuator").actuator_gear[:, 0].copy() if mode == "gear" else None
        super().__init__(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs)
        self._record(low=low, high=high, mode=mode, per_actuator=per_actuator)

    def sample_params(self, rng: np.random.Generator, regime: int) -> Params:
        n = self.env.action_space.shape[0] if self.per_actuator else 1
        s = log_uniform(rng, self.low, self.high, n)
        return {"actuator_scale": float(s.mean()), "scales": s}

    def apply_params(self, params: Params) -> None:
        if self._gear0 is not None:
            self.env.unwrapped.model.actuator_gear[:, 0] = self._gear0 * params["scales"]

    def transform_action(self, action: Any) -> Any:
        if self.mode == "gear":
            return action
        space = self.env.action_space
        return np.clip(np.asarray(action) * self._params["scales"], space.low, space.high).astype(space.dtype)
