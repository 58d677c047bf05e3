"""Body mass drift: every body's mass (and inertia) scaled per regime."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from crl.drift._checks import mujoco_model, scale_range
from crl.drift.base import DriftWrapper, Params, log_uniform
from crl.drift.schedules import Schedule

__all__ = ["MassDrift"]


class MassDrift(DriftWrapper):
    """Scale the mass and inertia of the bodies by a log-uniform factor per regime.

    With ``per_body=False`` one factor ``s ~ logU(low, high)`` scales every body; with
    ``per_body=True`` each body draws its own. After writing the masses,
    ``mujoco.mj_setConst`` recomputes the model's derived constants; it runs kinematics on
    ``MjData``, so the data are saved before and restored after: the simulation state
    (positions, velocities, contacts, time) is not disturbed by a change.
    ``info["drift/mass_scale"]`` is the (mean) factor.

    Args:
        env: a MuJoCo env.
        low, high: range of the factor.
        per_body: one factor per body instead of one for all.
        schedule, drift_seed, num_envs: see :class:`~crl.drift.base.DriftWrapper`.

    Example:
        >>> import gymnasium as gym
        >>> base = gym.make("Hopper-v5")
        >>> m0 = base.unwrapped.model.body_mass.copy()
        >>> env = MassDrift(base, low=0.5, high=2.0)
        >>> _, info = env.reset(seed=0)
        >>> bool(np.allclose(env.unwrapped.model.body_mass, m0 * info["drift/mass_scale"]))
        True
    """

    name = "mass"

    def __init__(
        self,
        env: gym.Env,
        low: float = 0.5,
        high: float = 2.0,
        per_body: bool = False,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        self.low, self.high = scale_range(low, high)
        self.per_body = bool(per_body)
        model = mujoco_model(env, "mass")
        self._mass0 = model.body_mass.copy()
        self._inertia0 = model.body_inertia.copy()
        super().__init__(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs)
        self._record(low=low, high=high, per_body=per_body)

    def sample_params(self, rng: np.random.Generator, regime: int) -> Params:
        n = len(self._mass0) if self.per_body else 1
        s = log_uniform(rng, self.low, self.high, n)
        return {"mass_scale": float(s.mean()), "scales": s}

    def apply_params(self, params: Params) -> None:
        u = self.env.unwrapped
        s = np.broadcast_to(params["scales"], self._mass0.shape)
        u.model.body_mass[:] = self._mass0 * s
        u.model.body_inertia[:] = self._inertia0 * s[:, None]
        saved = mujoco.MjData(u.model)
        mujoco.mj_copyData(saved, u.model, u.data)
        mujoco.mj_setConst(u.model, u.data)
        mujoco.mj_copyData(u.data, u.model, saved)
