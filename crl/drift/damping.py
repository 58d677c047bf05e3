"""Joint damping drift: every joint's damping scaled per regime."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from crl.drift._checks import mujoco_model, scale_range
from crl.drift.base import DriftWrapper, Params, log_uniform
from crl.drift.schedules import Schedule
from crl.errors import check_non_negative

__all__ = ["DampingDrift"]


class DampingDrift(DriftWrapper):
    """Set joint damping to ``scale * original + offset`` per regime.

    ``scale ~ logU(low, high)``; ``offset`` (default 0) adds damping to joints that have
    none in the original model. ``info["drift/damping_scale"]``.

    Args:
        env: a MuJoCo env.
        low, high: range of the factor.
        offset: damping added to every degree of freedom but the free joint's.
        schedule, drift_seed, num_envs: see :class:`~crl.drift.base.DriftWrapper`.

    Example:
        >>> import gymnasium as gym
        >>> base = gym.make("HalfCheetah-v5")
        >>> d0 = base.unwrapped.model.dof_damping.copy()
        >>> env = DampingDrift(base, low=2.0, high=2.0)
        >>> _ = env.reset(seed=0)
        >>> bool(np.allclose(env.unwrapped.model.dof_damping, 2.0 * d0))
        True
    """

    name = "damping"

    def __init__(
        self,
        env: gym.Env,
        low: float = 0.5,
        high: float = 2.0,
        offset: float = 0.0,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        self.low, self.high = scale_range(low, high)
        self.offset = check_non_negative("offset", offset)
        model = mujoco_model(env, "damping")
        self._damping0 = model.dof_damping.copy()
        free = np.zeros(model.nv, bool)
        for j in range(model.njnt):
            if model.jnt_type[j] == 0:  # mjJNT_FREE: 6 dofs of the floating base
                free[model.jnt_dofadr[j] : model.jnt_dofadr[j] + 6] = True
        self._actuated = ~free
        super().__init__(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs)
        self._record(low=low, high=high, offset=offset)

    def sample_params(self, rng: np.random.Generator, regime: int) -> Params:
        return {"damping_scale": float(log_uniform(rng, self.low, self.high))}

    def apply_params(self, params: Params) -> None:
        self.env.unwrapped.model.dof_damping[:] = (
            self._damping0 * params["damping_scale"] + self.offset * self._actuated
        )
