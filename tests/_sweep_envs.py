"""Envs that break on purpose, for the sweep tests (imported by ``gymnasium.make("tests._sweep_envs:...")``).

``CrashCartPole-v0`` raises a Python error at step ``at``; ``KillCartPole-v0`` kills its own
process with SIGKILL at step ``at`` (a crash no Python code can catch).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class _Breaking(CartPoleEnv):
    mode = "raise"

    def __init__(self, at: int = 300, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.at, self.n = at, 0

    def step(self, action: Any) -> Any:
        self.n += 1
        if self.n >= self.at:
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"boom at step {self.n}")
        return super().step(action)


class _Killing(_Breaking):
    mode = "kill"


for _id, _cls in (("CrashCartPole-v0", _Breaking), ("KillCartPole-v0", _Killing)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_cls, max_episode_steps=500)
