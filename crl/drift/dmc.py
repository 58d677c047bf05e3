"""DeepMind Control Suite tasks as flat Gymnasium envs, for Plasticine's Continual DMC.

Plasticine (RLE-Foundation/Plasticine, ``plasticine_envs/dmc_wrappers.py``) trains one agent
on DeepMind Control tasks of one body in sequence, 1M steps per task, reaching them through
``dm_control`` and ``shimmy`` (``gym.make("dm_control/walker-stand-v0")``) and flattening
their dict observations (gymnasium's ``FlattenObservation``). Its sequences, cycles of one
domain's tasks:

* walker: stand, walk, run, twice (6 tasks);
* quadruped: walk, run, three times (6 tasks);
* dog: stand, walk, run, trot, twice (8 tasks).

crl builds the same from two parts: :class:`DMCEnv`, one DMC task under the Gymnasium id
``crl/dmc-<domain>-<task>-v0`` (shimmy's env inside, observations flattened in the order of
shimmy's ``Dict`` space and cast to float32, the action space float32), and the drift
``task_sequence`` over a domain's ids with a ``cyclic`` schedule (``envs/cdmc-*.yaml``).
Episodes are DMC's own: 1000 steps, truncated (DMC's tasks never terminate). Within a domain
every task has the same body, hence identical spaces.

``dm_control`` and ``shimmy`` are an optional dependency (``pip install "crl[dmc]"``,
docs/envs.md); they are imported when an env is made, not when crl is imported.

Example:
    >>> SEQUENCES["walker"], PASSES["walker"], dmc_id("walker", "run")
    (('stand', 'walk', 'run'), 2, 'crl/dmc-walker-run-v0')
    >>> dmc_missing() is None or "dm_control" in dmc_missing()
    True
"""

from __future__ import annotations

import pickle
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from crl.errors import ConfigError

__all__ = ["EPISODE_STEPS", "PASSES", "SEQUENCES", "DMCEnv", "dmc_id", "dmc_missing"]

#: Plasticine's Continual DMC cycles (``ContinualDMC.ENV_NAME_DICT``), domain -> tasks in order.
SEQUENCES: dict[str, tuple[str, ...]] = {
    "walker": ("stand", "walk", "run"),
    "quadruped": ("walk", "run"),
    "dog": ("stand", "walk", "run", "trot"),
}
#: How many times Plasticine runs through each cycle (its lists hold the cycle that many times).
PASSES: dict[str, int] = {"walker": 2, "quadruped": 3, "dog": 2}
#: DMC's episode length (every suite task: its time limit over its control step).
EPISODE_STEPS = 1000


def dmc_id(domain: str, task: str) -> str:
    """The Gymnasium id crl gives the DMC task ``domain``-``task``."""
    return f"crl/dmc-{domain}-{task}-v0"


def dmc_missing() -> str | None:
    """Why DMC tasks cannot run here (``dm_control`` or ``shimmy`` not importable), or ``None``."""
    try:
        with warnings.catch_warnings():  # glfw warns that there is no display; crl never renders DMC
            warnings.simplefilter("ignore")
            import dm_control.suite  # noqa: F401
            import shimmy  # noqa: F401
    except ImportError as e:
        return f"dm_control/shimmy are not installed ({e}); pip install 'crl[dmc]' (docs/envs.md)"
    return None


def _load(domain: str, task: str, seed: int) -> Any:
    """The DMC task as shimmy's env (``DmControlCompatibilityV0``), its task generator seeded."""
    missing = dmc_missing()
    if missing is not None:
        raise ConfigError(missing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import shimmy  # noqa: F401  (registers the dm_control/ ids)
    name = f"dm_control/{domain}-{task}-v0"
    if name not in gym.registry:
        raise ConfigError(f"unknown DMC task {domain}-{task}; e.g. walker-stand, quadruped-run, dog-trot")
    return gym.make(name, task_kwargs={"random": seed}).unwrapped


class DMCEnv(gym.Env):
    """One DeepMind Control Suite task, flat float32 observations.

    Args:
        domain: the DMC domain (``walker``, ``quadruped``, ``dog``, ...).
        task: the domain's task (``stand``, ``walk``, ``run``, ...).
        seed: the seed of DMC's own generator (initial states) until a ``reset(seed=...)``.

    ``reset(seed=s)`` reseeds DMC's generator (shimmy's rule; DMC's generator is a
    ``RandomState``, so with a 32-bit seed drawn from ``s`` by numpy's ``SeedSequence``). :meth:`get_state` /
    :meth:`set_state` hold the whole ``MjData``, DMC's step counter and its generator, so a
    checkpointed env continues bit for bit.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, domain: str = "walker", task: str = "stand", seed: int = 0) -> None:
        self.domain, self.task = str(domain), str(task)
        self._dmc = _load(self.domain, self.task, int(seed))
        self._dict_space = self._dmc.observation_space
        size = gym.spaces.flatdim(self._dict_space)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), dtype=np.float32)
        low, high = self._dmc.action_space.low, self._dmc.action_space.high
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)

    def _obs(self, obs: dict[str, Any]) -> np.ndarray:
        return gym.spaces.flatten(self._dict_space, obs).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:  # DMC's generator is a RandomState: a 32-bit seed, drawn from the whole seed
            seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
        obs, _ = self._dmc.reset(seed=seed)
        return self._obs(obs), {}

    def step(self, action):
        obs, reward, terminated, truncated, info = self._dmc.step(np.asarray(action, dtype=np.float64))
        return (
            self._obs(obs),
            float(reward),
            bool(terminated),
            bool(truncated),
            {"discount": float(info["timestep.discount"])},
        )

    @property
    def physics(self) -> Any:
        """dm_control's ``Physics`` of the task."""
        return self._dmc._env.physics

    def get_state(self) -> dict[str, Any]:
        """The whole state: ``MjData``, DMC's step counter and episode flag, its generator."""
        env = self._dmc._env
        return {
            "mujoco": pickle.dumps(env.physics.data.ptr),
            "step_count": env._step_count,
            "reset_next_step": env._reset_next_step,
            "random": env.task.random.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` into an env of the same task."""
        import mujoco

        env = self._dmc._env
        mujoco.mj_copyData(env.physics.data.ptr, env.physics.model.ptr, pickle.loads(state["mujoco"]))
        env._step_count = state["step_count"]
        env._reset_next_step = state["reset_next_step"]
        env.task.random.set_state(state["random"])

    def close(self) -> None:
        self._dmc.close()


for _domain, _tasks in SEQUENCES.items():
    for _task in _tasks:
        gym.register(
            id=dmc_id(_domain, _task),
            entry_point="crl.drift.dmc:DMCEnv",
            kwargs={"domain": _domain, "task": _task},
            max_episode_steps=EPISODE_STEPS,
        )
