"""The base class of every drift wrapper.

A drift wrapper changes *what* the task is (friction, an observation offset, ...);
its :class:`~crl.drift.schedules.Schedule` decides *when*. The base class does all the
bookkeeping once, so a concrete drift only says how to draw the parameters of regime
``k`` (:meth:`DriftWrapper.sample_params`) and how to apply them
(:meth:`DriftWrapper.apply_params`), plus optional observation/action/reward hooks.

Guarantees that every drift inherits:

* parameters of regime ``k`` depend only on ``(drift_seed, drift class, k)``: every
  agent run with the same drift seed faces the same regimes, and the drift seed is
  separate from the ``reset(seed=...)`` seed, so Gymnasium's determinism checks pass;
* ``info["regime"]`` and ``info["drift/<param>"]`` on every step (the values in force
  during that step), and ``info["regime_change"] = True`` on the step after which a new
  regime starts; the observation returned by that step is already transformed by the
  new regime (it is what the agent acts on next);
* :meth:`DriftWrapper.set_regime` pins a chosen regime (evaluation on past regimes) in this
  drift and every drift inside it, so a stacked env is pinned whole;
* :meth:`DriftWrapper.get_state` / :meth:`DriftWrapper.set_state` for checkpoints.
"""

from __future__ import annotations

from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np

from crl.drift.schedules import Schedule, make_schedule
from crl.errors import ConfigError, check_int
from crl.seeding import generator

__all__ = ["DriftWrapper", "find_drifts", "log_uniform"]

Params = dict[str, Any]


def log_uniform(rng: np.random.Generator, low: float, high: float, size: int | None = None) -> Any:
    """Draw log-uniformly from ``[low, high]`` (``0 < low <= high``): ``exp(U(log low, log high))``.

    One ``rng.uniform`` call, so a drift's regime factors stay draw for draw what they were
    when every drift wrote the formula out. ``size=None`` gives a scalar, an int an array.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = log_uniform(rng, 0.1, 10.0, 10_000)
        >>> bool(0.1 <= x.min() and x.max() <= 10.0), round(float(np.mean(x < 1.0)), 2)  # half below sqrt(0.1 * 10)
        (True, 0.5)
        >>> float(log_uniform(rng, 2.0, 2.0))
        2.0
    """
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def find_drifts(env: gym.Env) -> list[DriftWrapper]:
    """Every :class:`DriftWrapper` in ``env``'s wrapper stack, outermost first.

    Walks ``.env`` from ``env`` inwards through any wrapper (``TimeLimit``, ``RecordEpisodeStatistics``,
    ...), so it works on what ``gymnasium.make`` returns. Empty for an env without drift.

    Example:
        >>> import gymnasium as gym
        >>> import crl
        >>> crl.register_drifting("doc/GM-v0", base="Walker2d-v5", drifts=[{"gravity": {}}, {"mass": {}}])
        >>> [d.name for d in find_drifts(gym.make("doc/GM-v0"))]
        ['mass', 'gravity']
    """
    out: list[DriftWrapper] = []
    e: Any = env
    while e is not None:
        if isinstance(e, DriftWrapper):
            out.append(e)
        e = getattr(e, "env", None)
    return out


class DriftWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Base class of drift wrappers (a drift that never changes anything by itself).

    Args:
        env: the environment to wrap.
        schedule: when regimes change: a :class:`Schedule` or a spec such as
            ``{"every_n_steps": {"change_every": 1000}}``. Default: never.
        drift_seed: seed of the regime parameters (not of the episodes).
        num_envs: number of parallel copies of this env that share one step budget;
            each step counts ``num_envs`` steps towards the schedule.
    """

    #: Short name used in YAML (``drifts: [{<name>: {...}}]``) and in the registry.
    name: ClassVar[str] = "none"

    def __init__(
        self,
        env: gym.Env,
        schedule: Schedule | dict[str, Any] | str | None = None,
        drift_seed: int = 0,
        num_envs: int = 1,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self,
            schedule=schedule.config() if isinstance(schedule, Schedule) else schedule,
            drift_seed=drift_seed,
            num_envs=num_envs,
        )
        gym.Wrapper.__init__(self, env)
        self.drift_seed = check_int("drift_seed", drift_seed)
        self.num_envs = check_int("num_envs", num_envs, minimum=1)
        self.schedule = make_schedule(schedule)
        self.schedule.seed(self.drift_seed)
        self._held: int | None = None
        self._params_cache: dict[int, Params] = {}
        self._params: Params = {}
        self._applied_key: tuple[int, int, float] | None = None

    def _record(self, **kwargs: Any) -> None:
        """Add a subclass's own constructor arguments to ``env.spec`` (RecordConstructorArgs)."""
        self._saved_kwargs = {**kwargs, **self._saved_kwargs}

    # -- what subclasses provide ---------------------------------------------
    def sample_params(self, rng: np.random.Generator, regime: int) -> Params:
        """Parameters of ``regime``, drawn from ``rng`` (seeded by drift seed and regime)."""
        return {}

    def apply_params(self, params: Params) -> None:
        """Make ``params`` take effect in the wrapped env (e.g. write MuJoCo fields)."""

    def info_values(self, params: Params) -> dict[str, Any]:
        """What goes into ``info`` as ``drift/<key>``; scalars by default."""
        return {k: v for k, v in params.items() if np.ndim(v) == 0}

    def interpolate(self, a: Params, b: Params, alpha: float) -> Params:
        """Parameters a fraction ``alpha`` of the way from ``a`` to ``b`` (gradual drift)."""
        return {k: (1.0 - alpha) * np.asarray(a[k]) + alpha * np.asarray(b[k]) for k in a}

    # -- regime parameters ---------------------------------------------------
    def regime_params(self, regime: int) -> Params:
        """The (cached) parameters of regime id ``regime``: a pure function of the drift seed, drawn
        from ``crl.seeding.generator(drift_seed, <class name>, regime)``.
        """
        if regime not in self._params_cache:
            rng = generator(self.drift_seed, type(self).__name__, int(regime))
            self._params_cache[regime] = self.sample_params(rng, int(regime))
        return self._params_cache[regime]

    @property
    def regime(self) -> int:
        """The regime id in force now."""
        return self._held if self._held is not None else self.schedule.regime()

    @property
    def params(self) -> Params:
        """The parameters in force now."""
        return self._params

    def _refresh(self) -> None:
        """Apply the parameters of the current regime (or mixture) if they changed."""
        mix = None if self._held is not None else self.schedule.mix()
        key = (mix[0], mix[1], mix[2]) if mix else (self.regime, self.regime, 0.0)
        if key == self._applied_key:
            return
        if mix and mix[2] > 0.0:
            params = self.interpolate(self.regime_params(mix[0]), self.regime_params(mix[1]), mix[2])
        else:
            params = self.regime_params(key[0])
        self.apply_params(params)
        self._params = params
        self._applied_key = key

    # -- task identity -------------------------------------------------------
    @property
    def n_tasks(self) -> int | None:
        """How many distinct tasks this env shows (the schedule's distinct regimes), or None when
        every segment may be a new one (then an agent must be told how many to expect).
        """
        ids = self.schedule.regime_ids()
        return None if ids is None else len(ids)

    def task_index(self, regime: int | None = None) -> int:
        """The task identity of ``regime`` (default: the regime in force): its position among the
        schedule's distinct regimes, so a revisited regime has the id it had the first time
        (cycle ``[3, 5]``: tasks 0 and 1); the regime id itself when the set is unbounded.
        """
        regime = self.regime if regime is None else regime
        ids = self.schedule.regime_ids()
        if ids is None:
            return int(regime)
        if regime not in ids:
            raise ConfigError(f"regime {regime} is not one of this schedule's regimes {ids}")
        return ids.index(regime)

    def drifts(self) -> list[DriftWrapper]:
        """The drift wrappers from this one inwards, outermost first (other wrappers
        between them are looked through).
        """
        return find_drifts(self)

    def set_regime(self, regime: int, hold: bool = True) -> None:
        """Switch to regime id ``regime`` now, in this drift and every drift inside it.

        With ``hold=True`` (the default) the regime stays pinned and the schedules are
        ignored until :meth:`release` (use it to evaluate a policy on a past regime). With
        ``hold=False`` each schedule moves to a segment whose regime id is ``regime``
        (:meth:`Schedule.segment_of <crl.drift.schedules.Schedule.segment_of>`: for a cyclic
        schedule, the one in the current pass through the cycle) and goes on from there.
        A stacked env (``drifts: [gravity, mass]``) thus changes all its drifts together, as
        its schedules do; nothing changes if any schedule refuses ``regime``.
        """
        regime = check_int("regime", regime)
        stack = self.drifts()
        segments = [None if hold else d.schedule.segment_of(regime) for d in stack]  # may refuse: before any change
        for drift, segment in zip(stack, segments, strict=True):
            drift._pin(regime, segment)

    def _pin(self, regime: int, segment: int | None) -> None:
        """Hold ``regime`` (``segment`` None) or move this drift's schedule to ``segment``."""
        self._held = regime if segment is None else None
        if segment is not None:
            self.schedule.segment = segment
            self.schedule.since_change = 0
        self._refresh()

    def release(self) -> None:
        """Let the schedules drive the regime again after :meth:`set_regime` (this drift and
        every drift inside it).
        """
        for drift in self.drifts():
            drift._held = None
            drift._refresh()

    # -- gymnasium API -------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._refresh()
        obs, info = self.env.reset(seed=seed, options=options)
        obs = self.transform_observation(obs)
        self._write_info(info)
        return obs, info

    def step(self, action):
        if not self._applied_key:
            self._refresh()
        obs, reward, terminated, truncated, info = self.env.step(self.transform_action(action))
        reward = self.transform_reward(reward, info)
        self._write_info(info)  # the regime in force during this transition
        if self._held is None:
            changed = self.schedule.advance(self.num_envs, bool(terminated or truncated))
            if changed:
                info["regime_change"] = True
            if changed or self.schedule.mix() is not None:
                self._refresh()
        # the observation is what the agent acts on next: under the regime now in force
        return self.transform_observation(obs), reward, terminated, truncated, info

    def transform_observation(self, obs: Any) -> Any:
        """Hook: change the observation (identity by default)."""
        return obs

    def transform_action(self, action: Any) -> Any:
        """Hook: change the action before the wrapped env sees it (identity by default)."""
        return action

    def transform_reward(self, reward: SupportsFloat, info: dict[str, Any]) -> SupportsFloat:
        """Hook: change the reward (identity by default)."""
        return reward

    def _write_info(self, info: dict[str, Any]) -> None:
        info["regime"] = self.regime
        for k, v in self.info_values(self._params).items():
            info[f"drift/{k}"] = float(v) if np.ndim(v) == 0 else v

    # -- checkpoints ---------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The drift's whole state (schedule, pinned regime): JSON-compatible."""
        return {"schedule": self.schedule.get_state(), "held": self._held}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` and re-apply the parameters of that regime."""
        self.schedule.set_state(state["schedule"])
        self._held = state["held"]
        self._applied_key = None
        self._refresh()
