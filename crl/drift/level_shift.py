"""Level shift: a per-level observation offset (TRAC, Muppidi et al., NeurIPS 2024)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from crl.drift.base import DriftWrapper, Params
from crl.drift.schedules import Schedule
from crl.errors import ConfigError, check_non_negative

__all__ = ["LevelShift"]


class LevelShift(DriftWrapper):
    """Add a fixed seeded offset to every observation dimension, one offset per level.

    Level 0 is unperturbed; level ``k > 0`` adds ``delta_k ~ N(0, scale^2)`` (one draw per
    dimension, fixed by the drift seed) to every observation, as in TRAC's "level shift"
    tasks. The observation space becomes unbounded (shifted observations leave the
    original box). ``info["drift/level"]`` reports the level.

    Args:
        env: an env with a ``Box`` observation space.
        scale: standard deviation of the offsets (TRAC: 2).
        schedule, drift_seed, num_envs: see :class:`~crl.drift.base.DriftWrapper`.

    Example:
        >>> import gymnasium as gym
        >>> env = LevelShift(gym.make("CartPole-v1"), scale=2.0,
        ...                  schedule={"every_n_steps": {"change_every": 1, "align": "exact"}})
        >>> obs0, _ = env.reset(seed=0)
        >>> obs1, *_, info = env.step(0)
        >>> info["drift/level"], bool(np.allclose(env.params["offset"], 0))
        (0.0, False)
        >>> env.unwrapped.state is not None and bool(np.allclose(env.step(0)[0] - env.params["offset"],
        ...                                                      env.unwrapped.state, atol=1e-5))
        True
    """

    name = "level_shift"

    def __init__(
        self,
        env: gym.Env,
        scale: float = 2.0,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        self.scale = check_non_negative("scale", scale)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(f"level_shift needs a Box observation space, got {space}")
        super().__init__(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs)
        self._record(scale=scale)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, space.shape, space.dtype)

    def sample_params(self, rng: np.random.Generator, regime: int) -> Params:
        shape = self.env.observation_space.shape
        offset = np.zeros(shape) if regime == 0 else rng.normal(0.0, self.scale, shape)
        return {"level": float(regime), "offset": offset}

    def interpolate(self, a: Params, b: Params, alpha: float) -> Params:
        return {
            "level": (1 - alpha) * a["level"] + alpha * b["level"],
            "offset": (1 - alpha) * a["offset"] + alpha * b["offset"],
        }

    def transform_observation(self, obs: Any) -> Any:
        return (obs + self._params.get("offset", 0.0)).astype(self.observation_space.dtype)
