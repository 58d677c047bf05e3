"""A second Pendulum for task-sequence tests: ``test/LightPendulum-v0`` (gravity 4 instead of 10,
same spaces), registered on import, so ``gymnasium.make("tests._task_envs:test/LightPendulum-v0")``
works in any process (a ``task_sequence`` drift's ``tasks`` may name it so)."""

from __future__ import annotations

import gymnasium as gym

if "test/LightPendulum-v0" not in gym.registry:
    gym.register(
        "test/LightPendulum-v0",
        entry_point="gymnasium.envs.classic_control:PendulumEnv",
        kwargs={"g": 4.0},
        max_episode_steps=200,
    )
