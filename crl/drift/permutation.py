"""Observation and action permutations / sign flips per regime."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from crl.drift.base import DriftWrapper, Params
from crl.drift.schedules import Schedule
from crl.errors import ConfigError

__all__ = ["ObservationPermutation", "ActionPermutation"]


def _box_1d(space: gym.Space, what: str) -> int:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ConfigError(f"{what} needs a 1-d Box space, got {space}")
    return space.shape[0]


def _draw(rng: np.random.Generator, n: int, regime: int, permute: bool, flip: bool) -> Params:
    perm = rng.permutation(n) if permute and regime > 0 else np.arange(n)
    signs = rng.choice([-1.0, 1.0], n) if flip and regime > 0 else np.ones(n)
    return {"perm": perm, "signs": signs, "moved": float(np.mean((perm != np.arange(n)) | (signs < 0)))}


class _Permutation(DriftWrapper):
    """What both permutation drifts share: the permute/flip switches, the seeded draw, and
    the refusal to change gradually.
    """

    def _setup(self, space: gym.Space, permute: bool, flip_signs: bool) -> None:
        if not (permute or flip_signs):
            raise ConfigError(f"{self.name}: set permute and/or flip_signs")
        self._n = _box_1d(space, self.name)
        self.permute, self.flip_signs = bool(permute), bool(flip_signs)

    def sample_params(self, rng: np.random.Generator, regime: int) -> Params:
        return _draw(rng, self._n, regime, self.permute, self.flip_signs)

    def interpolate(self, a: Params, b: Params, alpha: float) -> Params:
        raise ConfigError(f"{self.name} cannot change gradually; use a step schedule")


class ObservationPermutation(_Permutation):
    """Shuffle (and optionally flip the signs of) observation dimensions per regime.

    Regime 0 is the identity; regime ``k > 0`` applies a seeded permutation ``perm_k``
    and signs ``s_k``: ``obs'[i] = s_k[i] * obs[perm_k[i]]``. The observation space is
    permuted accordingly (bounds flipped where signs are negative).
    ``info["drift/moved"]`` is the fraction of dimensions moved or flipped.

    Args:
        env: an env with a 1-d Box observation space.
        permute: shuffle dimensions.
        flip_signs: flip signs at random.
        schedule, drift_seed, num_envs: see :class:`~crl.drift.base.DriftWrapper`.

    Example:
        >>> import gymnasium as gym
        >>> env = ObservationPermutation(gym.make("CartPole-v1"), schedule={"explicit": {"changes": [[1, 1]]}})
        >>> obs, _ = env.reset(seed=0)
        >>> obs2, *_ = env.step(0)
        >>> p = env.params["perm"]
        >>> bool(np.allclose(obs2, env.unwrapped.state[p] * env.params["signs"]))
        True
    """

    name = "obs_permutation"

    def __init__(
        self,
        env: gym.Env,
        permute: bool = True,
        flip_signs: bool = False,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        self._setup(env.observation_space, permute, flip_signs)
        super().__init__(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs)
        self._record(permute=permute, flip_signs=flip_signs)
        space = env.observation_space
        if flip_signs:
            bound = np.maximum(np.abs(space.low), np.abs(space.high))
            self.observation_space = gym.spaces.Box(-bound, bound, space.shape, space.dtype)

    def apply_params(self, params: Params) -> None:
        if not self.flip_signs:
            space = self.env.observation_space
            p = params["perm"]
            self.observation_space = gym.spaces.Box(space.low[p], space.high[p], space.shape, space.dtype)

    def transform_observation(self, obs: Any) -> Any:
        return (obs[self._params["perm"]] * self._params["signs"]).astype(self.observation_space.dtype)


class ActionPermutation(_Permutation):
    """Shuffle (and optionally flip the signs of) action dimensions per regime.

    Regime 0 is the identity; regime ``k > 0`` sends ``a'[perm_k[i]] = s_k[i] * a[i]`` to
    the wrapped env, so the same policy output drives different motors.
    ``info["drift/moved"]`` is the fraction of dimensions moved or flipped.

    Args:
        env: an env with a 1-d Box action space symmetric around 0.
        permute: shuffle dimensions.
        flip_signs: flip signs at random.
        schedule, drift_seed, num_envs: see :class:`~crl.drift.base.DriftWrapper`.

    Example:
        >>> import gymnasium as gym
        >>> env = ActionPermutation(gym.make("HalfCheetah-v5"), flip_signs=True,
        ...                         schedule={"explicit": {"changes": [[0, 3]]}})
        >>> _ = env.reset(seed=0)
        >>> a = np.arange(6, dtype=np.float32) / 10
        >>> sent = env.transform_action(a)
        >>> bool(np.allclose(sent[env.params["perm"]], a * env.params["signs"]))
        True
    """

    name = "action_permutation"

    def __init__(
        self,
        env: gym.Env,
        permute: bool = True,
        flip_signs: bool = False,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        self._setup(env.action_space, permute, flip_signs)
        space = env.action_space
        if not (np.allclose(space.low, space.low[0]) and np.allclose(space.high, -space.low)):
            raise ConfigError("action_permutation needs an action box symmetric around 0 with equal bounds")
        super().__init__(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs)
        self._record(permute=permute, flip_signs=flip_signs)

    def transform_action(self, action: Any) -> Any:
        a = np.asarray(action)
        out = np.empty_like(a)
        out[self._params["perm"]] = a * self._params["signs"]
        return out
