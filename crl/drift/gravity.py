"""Gravity drift: magnitude and direction of gravity change per regime."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from crl.drift._checks import mujoco_model, scale_range
from crl.drift.base import DriftWrapper, Params
from crl.drift.schedules import Schedule
from crl.errors import ConfigError, check_non_negative

__all__ = ["GravityDrift"]


class GravityDrift(DriftWrapper):
    """Redraw MuJoCo's gravity vector per regime: magnitude and tilt from vertical.

    Regime ``k`` has magnitude ``|g| ~ U(low, high)`` (m/s^2) and a direction tilted from
    straight down by an angle ``~ U(0, max_tilt)`` degrees, at a uniform random azimuth.
    ``info["drift/gravity"]`` (magnitude) and ``info["drift/gravity_tilt"]`` (degrees).

    Args:
        env: a MuJoCo env.
        low, high: range of the magnitude (Earth: 9.81).
        max_tilt: largest tilt of the direction, in degrees (0: always straight down).
        schedule, drift_seed, num_envs: see :class:`~crl.drift.base.DriftWrapper`.

    Example:
        >>> import gymnasium as gym
        >>> env = GravityDrift(gym.make("Hopper-v5"), low=4.0, high=12.0, max_tilt=10.0)
        >>> _, info = env.reset(seed=0)
        >>> g = env.unwrapped.model.opt.gravity
        >>> bool(abs(np.linalg.norm(g) - info["drift/gravity"]) < 1e-9), 4.0 <= info["drift/gravity"] <= 12.0
        (True, True)
    """

    name = "gravity"

    def __init__(
        self,
        env: gym.Env,
        low: float = 4.9,
        high: float = 14.7,
        max_tilt: float = 0.0,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        self.low, self.high = scale_range(low, high)
        self.max_tilt = check_non_negative("max_tilt", max_tilt)
        if self.max_tilt > 90:
            raise ConfigError(f"max_tilt must be at most 90 degrees, got {max_tilt!r}")
        mujoco_model(env, "gravity")
        super().__init__(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs)
        self._record(low=low, high=high, max_tilt=max_tilt)

    def sample_params(self, rng: np.random.Generator, regime: int) -> Params:
        mag = rng.uniform(self.low, self.high)
        tilt = rng.uniform(0.0, self.max_tilt)
        azimuth = rng.uniform(0.0, 2 * np.pi)
        t = np.deg2rad(tilt)
        vec = mag * np.array([np.sin(t) * np.cos(azimuth), np.sin(t) * np.sin(azimuth), -np.cos(t)])
        return {"gravity": float(mag), "gravity_tilt": float(tilt), "vector": vec}

    def apply_params(self, params: Params) -> None:
        self.env.unwrapped.model.opt.gravity[:] = params["vector"]
