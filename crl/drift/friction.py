"""Friction drift: the Slippery Ant of Dohare et al., "Loss of plasticity in deep
continual learning", Nature 632 (2024).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from crl.drift._checks import scale_range
from crl.drift.base import DriftWrapper, Params, log_uniform
from crl.drift.schedules import Schedule
from crl.errors import ConfigError

__all__ = ["FrictionDrift"]


class FrictionDrift(DriftWrapper):
    """Set the sliding friction of every MuJoCo geom to a coefficient drawn per regime.

    Regime ``k`` has friction ``f_k`` drawn log-uniformly from ``[low, high]`` (Dohare et
    al. use ``[0.02, 2.0]``); all geoms, the floor included, get ``geom_friction[:, 0] =
    f_k`` while torsional and rolling friction keep their model values. The agent is
    never told the friction; ``info["drift/friction"]`` reports it for logging.

    Args:
        env: a MuJoCo environment (``env.unwrapped.model`` must exist).
        low: smallest friction coefficient (> 0).
        high: largest friction coefficient (>= low).
        schedule: when the friction changes (see :class:`DriftWrapper`).
        drift_seed: seed of the friction sequence.
        num_envs: parallel copies sharing the step budget.

    Example:
        >>> import gymnasium as gym
        >>> from crl.drift import FrictionDrift
        >>> env = FrictionDrift(gym.make("Ant-v5"), schedule={"every_n_steps": {"change_every": 5, "align": "exact"}})
        >>> _ = env.reset(seed=0)
        >>> f0 = env.unwrapped.model.geom_friction[0, 0]
        >>> infos = [env.step(env.action_space.sample())[-1] for _ in range(6)]
        >>> [i["regime"] for i in infos]
        [0, 0, 0, 0, 0, 1]
        >>> bool(env.unwrapped.model.geom_friction[0, 0] != f0)
        True
        >>> 0.02 <= infos[-1]["drift/friction"] <= 2.0
        True
    """

    name = "friction"

    def __init__(
        self,
        env: gym.Env,
        low: float = 0.02,
        high: float = 2.0,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        self.low, self.high = scale_range(low, high, what="friction ")
        model = getattr(env.unwrapped, "model", None)
        if model is None or not hasattr(model, "geom_friction"):
            raise ConfigError(f"FrictionDrift needs a MuJoCo env, got {env.unwrapped!r}")
        super().__init__(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs)
        self._record(low=low, high=high)

    def sample_params(self, rng: np.random.Generator, regime: int) -> Params:
        return {"friction": float(log_uniform(rng, self.low, self.high))}

    def apply_params(self, params: Params) -> None:
        self.env.unwrapped.model.geom_friction[:, 0] = params["friction"]
