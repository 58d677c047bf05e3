"""A task sequence for the tests (imported by ``gymnasium.make("tests._task_envs:...")`` and
``crl train --env tests._task_envs:...``): ``test/PendulumPair-v0`` runs Pendulum with gravity 10,
then with gravity 4, cycling every 400 steps (two task ids)."""

from __future__ import annotations

import gymnasium as gym

import crl

if "test/LightPendulum-v0" not in gym.registry:
    gym.register("test/LightPendulum-v0", entry_point="gymnasium.envs.classic_control:PendulumEnv", kwargs={"g": 4.0},
                 max_episode_steps=200)  # fmt: skip
    crl.register_drifting(
        "test/PendulumPair-v0",
        base="Pendulum-v1",
        drifts=[{"task_sequence": {"tasks": ["test/LightPendulum-v0"]}}],
        schedule={"every_n_steps": {"change_every": 400, "align": "episode_end"}},
    )
