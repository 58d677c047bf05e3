"""Continual World (Wolczyk et al., NeurIPS 2021): Meta-World tasks in sequence.

Continual World's CW10 is ten Meta-World robot-arm tasks learned one after the other (1M
steps each in the paper), CW20 is CW10 twice. crl builds it from two parts:

* :class:`ContinualWorldEnv`, the Gymnasium id ``crl/ContinualWorld-v0``: one env holding
  every task of the sequence (one Meta-World env per distinct task), running the selected
  one. As in Continual World's code (``continualworld/envs.py``): goal-observable
  observations (39 numbers), the one-hot task id appended (``one_hot=True``, its length the
  sequence's), object and goal positions drawn anew at every reset (``random_init_all``), and
  ``info["success"]`` from Meta-World. The episode limit (200 steps) is the catalog's
  ``max_episode_steps``.
* :class:`ContinualWorldTask`, the drift ``cw_task``: regime ``k`` runs task
  ``k % len(tasks)``; the switch takes effect at the next reset. Boundary-aware agents learn
  the regime (hence the task) at every change; ``info["drift/task"]`` holds it on every step.

``metaworld`` is an optional dependency (``pip install "crl[cw]"``, or ``--no-deps``: see
docs/envs.md); it is imported when the env is made, not when crl is imported. On
mujoco >= 3.17 (``mjNEQDATA == 12``) metaworld 3.1.1's mocap welds are written the way
mujoco now expects (:func:`weld_fix`); docs/envs.md has the comparison with mujoco 3.3.0.

Example:
    >>> CW10[:3], len(CW20), CW20[10] == CW10[0]
    (('hammer-v3', 'push-wall-v3', 'faucet-close-v3'), 20, True)
    >>> task_names("CW10") == CW10, task_names(["push-v3"])
    (True, ('push-v3',))
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import gymnasium as gym
import numpy as np

from crl.drift.base import DriftWrapper, Params
from crl.drift.schedules import Schedule
from crl.errors import ConfigError
from crl.seeding import derive

__all__ = [
    "CW10",
    "CW20",
    "EPISODE_STEPS",
    "SEQUENCES",
    "ContinualWorldEnv",
    "ContinualWorldTask",
    "metaworld_missing",
    "task_names",
    "weld_fix",
]

#: CW10, Continual World's ten tasks in its order (``continualworld/tasks.py``), as Meta-World v3 ids.
CW10: tuple[str, ...] = (
    "hammer-v3",
    "push-wall-v3",
    "faucet-close-v3",
    "push-back-v3",
    "stick-pull-v3",
    "handle-press-side-v3",
    "push-v3",
    "shelf-place-v3",
    "window-close-v3",
    "peg-unplug-side-v3",
)
#: CW20: CW10 twice.
CW20: tuple[str, ...] = CW10 + CW10
#: The named sequences.
SEQUENCES: dict[str, tuple[str, ...]] = {"CW10": CW10, "CW20": CW20}
#: Continual World's episode length (``META_WORLD_TIME_HORIZON``); Meta-World's own is 500.
EPISODE_STEPS = 200

# metaworld's weld row for its mocap (SawyerMocapBase.reset_mocap_welds): anchor, relative
# position, relative quaternion, torque scale.
_WELD = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)
# Model fields metaworld's reset_model writes (object and goal placement), kept in the state.
_MODEL_FIELDS = ("body_pos", "body_quat", "site_pos", "site_quat", "geom_pos", "eq_data")
# Attributes of a Meta-World env that are not its state.
_SKIP = {"model", "data", "spec", "renderer", "mujoco_renderer", "viewer", "_np_random", "np_random"}


def task_names(tasks: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The Meta-World ids of ``tasks``: a sequence name (``"CW10"``, ``"CW20"``) or a list of ids."""
    if isinstance(tasks, str):
        if tasks not in SEQUENCES:
            raise ConfigError(f"tasks: unknown sequence {tasks!r}; choose from {sorted(SEQUENCES)} or list task ids")
        return SEQUENCES[tasks]
    if not tasks or not all(isinstance(t, str) for t in tasks):
        raise ConfigError(f"tasks must be a sequence name or a non-empty list of Meta-World ids, got {tasks!r}")
    return tuple(tasks)


def metaworld_missing() -> str | None:
    """Why Continual World cannot run here (``metaworld`` not importable), or ``None`` if it can.

    Example:
        >>> metaworld_missing() is None or "metaworld" in metaworld_missing()
        True
    """
    try:
        import metaworld  # noqa: F401
    except ImportError as e:
        return f"metaworld is not installed ({e}); pip install 'crl[cw]' or see docs/envs.md"
    return None


def weld_fix(env: Any) -> None:
    """Write metaworld's mocap welds for any mujoco: on mujoco >= 3.17 ``eq_data`` has 12 slots;
    metaworld's 11 numbers go into the first 11, and slot 11 is 0 ("relative pose given, do not
    recompute it"). The replacement of ``SawyerMocapBase.reset_mocap_welds``.
    """
    import mujoco

    model = env.model
    if model.nmocap > 0 and model.eq_data is not None:
        for i in range(model.eq_data.shape[0]):
            if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                model.eq_data[i, : len(_WELD)] = _WELD
                model.eq_data[i, len(_WELD) :] = 0.0


def _make_task(name: str) -> Any:
    """One Meta-World env set up as Continual World's ``random_init_all``, goal observable."""
    import metaworld
    import mujoco

    if name not in metaworld.ALL_V3_ENVIRONMENTS:
        raise ConfigError(f"unknown Meta-World task {name!r}; e.g. {', '.join(CW10[:3])}")
    cls = metaworld.ALL_V3_ENVIRONMENTS[name]
    if mujoco.mjNEQDATA != len(_WELD):
        cls = type(cls.__name__, (cls,), {"reset_mocap_welds": weld_fix})
    env = cls()
    env._partially_observable = False  # what set_task does for the MT benchmarks
    env.__dict__.pop("sawyer_observation_space", None)  # a cached property: recomputed with the goal bounds
    env._freeze_rand_vec = False  # Continual World's random_init_all: new positions at every reset
    env.seeded_rand_vec = True  # drawn from the env's np_random, not numpy's global generator
    env._set_task_called = True
    env._set_task_inner()
    return env


class ContinualWorldEnv(gym.Env):
    """Every task of a Continual World sequence in one env; :meth:`select` picks the one the
    next :meth:`reset` starts.

    Args:
        tasks: ``"CW10"``, ``"CW20"`` or a list of Meta-World v3 ids.
        one_hot: append the one-hot id of the task's place in the sequence (Continual World
            does; ``False`` hides the task from the observation).
        task: the task selected at the start.

    Observations are Meta-World's 39 numbers (hand, gripper, two objects, the previous frame,
    the goal; the goal's bounds are left open, as Continual World does, since they differ
    between tasks) and the one-hot id. :meth:`get_state` / :meth:`set_state` hold every task's
    physics, placement and generator, for exact checkpoints.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, tasks: str | list[str] = "CW10", one_hot: bool = True, task: int = 0) -> None:
        self.tasks = task_names(tasks)
        self.one_hot = bool(one_hot)
        names = list(dict.fromkeys(self.tasks))
        self._envs = [_make_task(n) for n in names]
        self._slot = [names.index(n) for n in self.tasks]  # task index -> env
        for j, e in enumerate(self._envs):
            e.seed(derive(0, "metaworld", j))
        space = self._envs[0].sawyer_observation_space
        low, high = space.low.copy(), space.high.copy()
        low[36:39], high[36:39] = -np.inf, np.inf
        n = len(self.tasks) if self.one_hot else 0
        self.observation_space = gym.spaces.Box(
            np.concatenate([low, np.zeros(n)]), np.concatenate([high, np.ones(n)]), dtype=np.float64
        )
        self.action_space = copy.deepcopy(self._envs[0].action_space)
        self._active = self._pending = self._check(task)

    @property
    def num_tasks(self) -> int:
        """The length of the sequence."""
        return len(self.tasks)

    @property
    def active(self) -> int:
        """The index of the task running now."""
        return self._active

    def _check(self, task: int) -> int:
        if not 0 <= int(task) < len(self.tasks):
            raise ConfigError(f"task must be in [0, {len(self.tasks)}), got {task!r}")
        return int(task)

    def select(self, task: int) -> None:
        """Run task ``task`` (its place in the sequence) from the next :meth:`reset` on."""
        self._pending = self._check(task)

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        if not self.one_hot:
            return np.asarray(obs, dtype=np.float64)
        hot = np.zeros(len(self.tasks))
        hot[self._active] = 1.0
        return np.concatenate([np.asarray(obs, dtype=np.float64), hot])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:  # every task's generator, so any task's next episode is reproducible
            for j, e in enumerate(self._envs):
                e.seed(derive(int(seed), "metaworld", j))
        self._active = self._pending
        obs, _ = self._envs[self._slot[self._active]].reset()
        return self._obs(obs), {"task": self._active}

    def step(self, action):
        env = self._envs[self._slot[self._active]]
        obs, reward, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float64))
        info = {**info, "success": float(info.get("success", 0.0)), "task": self._active}
        return self._obs(obs), float(reward), bool(terminated), bool(truncated), info

    def get_state(self) -> dict[str, Any]:
        """The whole state: the selection and, for every task's env, its ``MjData``, the model
        fields its resets write, its Python attributes and its generator.
        """
        return {"active": self._active, "pending": self._pending, "envs": [_task_state(e) for e in self._envs]}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` into an env made with the same arguments."""
        if len(state["envs"]) != len(self._envs):
            raise ValueError(f"state of {len(state['envs'])} task envs, this env has {len(self._envs)}")
        for e, s in zip(self._envs, state["envs"], strict=True):
            _set_task_state(e, s)
        self._active, self._pending = int(state["active"]), int(state["pending"])

    def close(self) -> None:
        for e in self._envs:
            e.close()


def _plain(value: Any) -> bool:
    """A Python attribute that is state (numbers, arrays, flags), not a handle."""
    if isinstance(value, (bool, int, float, np.ndarray, np.generic, type(None))):
        return True
    return isinstance(value, (tuple, list)) and all(isinstance(v, (int, float, np.ndarray, np.generic)) for v in value)


def _task_state(env: Any) -> dict[str, Any]:
    return {
        "mujoco": pickle.dumps(env.data),
        "model": {f: np.array(getattr(env.model, f)) for f in _MODEL_FIELDS},
        "attrs": {k: copy.deepcopy(v) for k, v in vars(env).items() if k not in _SKIP and _plain(v)},
        "np_random": copy.deepcopy(env.np_random.bit_generator.state),
    }


def _set_task_state(env: Any, s: dict[str, Any]) -> None:
    import mujoco

    for f, v in s["model"].items():
        getattr(env.model, f)[...] = v
    mujoco.mj_copyData(env.data, env.model, pickle.loads(s["mujoco"]))
    for k, v in s["attrs"].items():
        setattr(env, k, copy.deepcopy(v))
    env.np_random.bit_generator.state = copy.deepcopy(s["np_random"])


class ContinualWorldTask(DriftWrapper):
    """The drift ``cw_task``: regime ``k`` runs task ``k % len(tasks)`` of the
    :class:`ContinualWorldEnv` inside (from the next reset on, so an episode never mixes two
    tasks: pair it with an episode-aligned schedule). ``info["drift/task"]`` is the task.

    Args:
        env: a :class:`ContinualWorldEnv`, possibly wrapped (``TimeLimit``, ...).
        schedule, drift_seed, num_envs: see :class:`~crl.drift.base.DriftWrapper`.
    """

    name = "cw_task"

    def __init__(
        self,
        env: gym.Env,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        if not isinstance(env.unwrapped, ContinualWorldEnv):
            raise ConfigError(f"cw_task needs a ContinualWorldEnv (crl/ContinualWorld-v0), got {env.unwrapped!r}")
        super().__init__(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs)

    def sample_params(self, rng: np.random.Generator, regime: int) -> Params:
        return {"task": float(regime % self.env.unwrapped.num_tasks)}

    @property
    def n_tasks(self) -> int:
        """The number of tasks in the sequence (the task id ``task_id`` observes, as CW's one-hot)."""
        return int(self.env.unwrapped.num_tasks)

    def task_index(self, regime: int | None = None) -> int:
        """The place in the sequence of the task that ``regime`` runs (default: the one in force)."""
        return int(self.regime if regime is None else regime) % self.n_tasks

    def apply_params(self, params: Params) -> None:
        self.env.unwrapped.select(int(params["task"]))

    def interpolate(self, a: Params, b: Params, alpha: float) -> Params:
        raise ConfigError("cw_task cannot change gradually; use a step schedule")


gym.register(
    id="crl/ContinualWorld-v0",
    entry_point="crl.drift.metaworld:ContinualWorldEnv",
    disable_env_checker=True,
    order_enforce=False,
)
