"""Envs that break on purpose, for the sweep tests (imported by ``gymnasium.make("tests._sweep_envs:...")``).

``CrashCartPole-v0`` raises a Python error at step ``at``; ``KillCartPole-v0`` kills its own
process with SIGKILL at step ``at`` (a crash no Python code can catch); ``CoresCartPole-v0``
appends the cores its run may use (``crl.system.usable_cores()``) to the file named by
``$CRL_TEST_CORES_FILE`` at every reset (only training resets; the sweep's checks only build it).
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


class _Cores(CartPoleEnv):
    def reset(self, **kwargs: Any) -> Any:
        from crl.system import usable_cores

        with open(os.environ["CRL_TEST_CORES_FILE"], "a") as f:
            f.write(f"{usable_cores()}\n")
        return super().reset(**kwargs)


for _id, _cls in (("CrashCartPole-v0", _Breaking), ("KillCartPole-v0", _Killing), ("CoresCartPole-v0", _Cores)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_cls, max_episode_steps=500)
