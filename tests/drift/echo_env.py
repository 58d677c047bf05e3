"""A tiny env whose step and reset functions are injected (Gymnasium's testing_env style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np


class EchoEnv(gym.Env):
    """Observation = the last action (a 3-d Box); reward = action[0]; episodes of ``length``."""

    def __init__(self, length: int = 5, step_fn: Callable[..., Any] | None = None):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float64)
        self.length, self.t, self.step_fn = length, 0, step_fn

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3), {}

    def step(self, action):
        if self.step_fn is not None:
            return self.step_fn(self, action)
        self.t += 1
        a = np.asarray(action, dtype=np.float64)
        return (
            a.copy(),
            float(a[0]),
            False,
            self.t >= self.length,
            {"x_velocity": float(a[0]), "reward_forward": float(a[0])},
        )
