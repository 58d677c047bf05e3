"""Build and register drifting environments under ordinary Gymnasium ids.

:func:`register_drifting` is the one way crl registers a drifting env: the YAML
catalog (``envs/*.yaml``) calls it too. Once registered, ``gymnasium.make(id)`` works
from any code (SB3 scripts, CleanRL) in the same process.

Keyword arguments of ``gymnasium.make`` are routed by name:

* ``drift_seed`` and ``num_envs`` go to every drift wrapper;
* a name that is an argument of the schedule (``change_every``, ``align``, ...)
  overrides the schedule;
* ``<drift>_<argument>`` (``friction_low``, ...) overrides that drift's argument;
* ``drifts=[...]`` / ``schedule={...}`` replace the lists wholesale;
* ``task_id`` (``True`` or a number of tasks) appends the one-hot task id to the observation
  (:class:`~crl.drift.task_id.TaskIdObservation`);
* ``episode_steps`` sets the base env's episode limit (``gymnasium.make(base,
  max_episode_steps=...)``), inside the drifts so they see truncations. (A plain
  ``max_episode_steps=`` of ``gymnasium.make`` adds its ``TimeLimit`` *outside* every
  wrapper, where an episode-aligned schedule cannot see it);
* anything else goes to the base environment (``gymnasium.make(base, **rest)``).

Example:
    >>> import gymnasium as gym
    >>> import crl
    >>> crl.register_drifting(
    ...     "mine/SlipperyHopper-v0", base="Hopper-v5",
    ...     drifts=[{"friction": {"low": 0.1, "high": 1.0}}],
    ...     schedule={"every_n_steps": {"change_every": 100}},
    ... )
    >>> env = gym.make("mine/SlipperyHopper-v0", change_every=50, drift_seed=3)
    >>> _, info = env.reset(seed=0)
    >>> info["regime"], round(info["drift/friction"], 3)
    (0, 0.531)
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import gymnasium as gym

from crl.drift.actuator import ActuatorDrift
from crl.drift.base import DriftWrapper
from crl.drift.damping import DampingDrift
from crl.drift.friction import FrictionDrift
from crl.drift.gravity import GravityDrift
from crl.drift.level_shift import LevelShift
from crl.drift.mass import MassDrift
from crl.drift.metaworld import ContinualWorldTask
from crl.drift.permutation import ActionPermutation, ObservationPermutation
from crl.drift.reward import TargetVelocity
from crl.drift.schedules import SCHEDULES, Schedule, make_schedule
from crl.drift.task_id import task_id_wrapper
from crl.drift.task_sequence import TaskSequence
from crl.errors import ConfigError
from crl.named import check_arguments, parse_named_list

__all__ = ["DRIFTS", "register_drift", "wrap_drifts", "make_drifting", "register_drifting", "split_make_kwargs"]

#: Registry of drift wrappers by name; :func:`register_drift` adds to it.
DRIFTS: dict[str, type[DriftWrapper]] = {
    c.name: c
    for c in (
        FrictionDrift,
        LevelShift,
        GravityDrift,
        MassDrift,
        ActuatorDrift,
        DampingDrift,
        ObservationPermutation,
        ActionPermutation,
        TargetVelocity,
        TaskSequence,
        ContinualWorldTask,
    )
}


def register_drift(cls: type[DriftWrapper]) -> type[DriftWrapper]:
    """Class decorator: make a drift wrapper available by ``cls.name`` in YAML and kwargs."""
    DRIFTS[cls.name] = cls
    return cls


def _drift_items(drifts: Any) -> list[tuple[str, dict[str, Any]]]:
    return parse_named_list(drifts, "drift", DRIFTS)


def _drift_arguments(cls: type[DriftWrapper]) -> list[str]:
    """The arguments a drift's spec may set (those shared by all drifts are set once)."""
    shared = ("self", "env", "schedule", "drift_seed", "num_envs")
    return [k for k in inspect.signature(cls.__init__).parameters if k not in shared]


def wrap_drifts(
    env: gym.Env,
    drifts: list[Any],
    schedule: Schedule | dict[str, Any] | str | None = None,
    drift_seed: int = 0,
    num_envs: int = 1,
) -> gym.Env:
    """Wrap ``env`` in each drift of ``drifts`` (innermost first), each owning a copy of
    ``schedule``; they see the same steps, so they change regime together.
    """
    for name, args in _drift_items(drifts):
        cls = DRIFTS[name]
        for reserved in ("schedule", "drift_seed", "num_envs"):
            if reserved in args:
                raise ConfigError(f"drift {name!r}: {reserved!r} is set once for all drifts, not per drift")
        env = _make_drift(cls, env, args, make_schedule(schedule), drift_seed, num_envs)
    return env


def _make_drift(
    cls: type[DriftWrapper], env: gym.Env, args: dict[str, Any], schedule: Schedule, drift_seed: int, num_envs: int
) -> DriftWrapper:
    check_arguments(f"drift {cls.name!r}", args, _drift_arguments(cls))
    try:
        return cls(env, schedule=schedule, drift_seed=drift_seed, num_envs=num_envs, **args)
    except ConfigError as e:
        raise ConfigError(f"drift {cls.name!r}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"drift {cls.name!r}: {e}") from None


def split_make_kwargs(
    drifts: list[Any], schedule: dict[str, Any] | str | None, kwargs: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    """Route ``gymnasium.make`` keyword arguments (see the module docstring).

    Returns ``(drifts, schedule, wrapper_kwargs, base_kwargs)`` with the overrides applied.
    """
    kwargs = dict(kwargs)
    drifts = copy.deepcopy(kwargs.pop("drifts", drifts))
    schedule = copy.deepcopy(kwargs.pop("schedule", schedule))
    wrapper_kwargs = {k: kwargs.pop(k) for k in ("drift_seed", "num_envs") if k in kwargs}
    items = [{n: a} for n, a in _drift_items(drifts)]
    # schedule overrides
    sched_spec = make_schedule(schedule).config() if schedule is not None else None
    if sched_spec is not None:
        ((sname, sargs),) = sched_spec.items()
        sparams = inspect.signature(SCHEDULES[sname].__init__).parameters
        for k in list(kwargs):
            if k in sparams and k != "self":
                sargs[k] = kwargs.pop(k)
        schedule = {sname: sargs}
    # per-drift overrides: <drift>_<arg>
    for item in items:
        ((dname, dargs),) = item.items()
        dparams = _drift_arguments(DRIFTS[dname])
        for k in list(kwargs):
            prefix = f"{dname}_"
            if k.startswith(prefix) and k[len(prefix) :] in dparams:
                dargs[k[len(prefix) :]] = kwargs.pop(k)
    return items, schedule, wrapper_kwargs, kwargs


def make_drifting(
    base: str,
    drifts: list[Any] | None = None,
    schedule: dict[str, Any] | str | None = None,
    **kwargs: Any,
) -> gym.Env:
    """Entry point of every registered drifting env: ``gymnasium.make(base)`` wrapped in
    the drifts. Keyword arguments are routed as the module docstring says.
    """
    task_id = kwargs.pop("task_id", False)
    items, schedule, wkw, base_kwargs = split_make_kwargs(drifts or [], schedule, kwargs)
    if base_kwargs.get("episode_steps") is not None:
        base_kwargs["max_episode_steps"] = base_kwargs.pop("episode_steps")
    base_kwargs.pop("episode_steps", None)
    try:
        env = gym.make(base, **base_kwargs)
    except gym.error.Error as e:
        raise ConfigError(f"cannot make base env {base!r}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"base env {base!r} rejected its arguments: {e}") from None
    return task_id_wrapper(wrap_drifts(env, items, schedule, **wkw), task_id)


def register_drifting(
    id: str,
    base: str,
    drifts: list[Any] | None = None,
    schedule: dict[str, Any] | str | None = None,
    max_episode_steps: int | None = None,
    **make_kwargs: Any,
) -> None:
    """Register a drifting environment under the Gymnasium id ``id``.

    Args:
        id: the new Gymnasium id, e.g. ``"mine/SlipperyAnt-v0"``.
        base: the id of the environment to wrap, e.g. ``"Ant-v5"``.
        drifts: drift specs, ``[{"friction": {"low": 0.02, "high": 2.0}}, ...]``.
        schedule: when regimes change, e.g. ``{"every_n_steps": {"change_every": 2_000_000}}``.
        max_episode_steps: episode limit of the base env (default: the base env's own).
        **make_kwargs: default keyword arguments of ``gymnasium.make(id)``.

    The specs are checked now (unknown drift, schedule or argument raise
    :class:`~crl.errors.ConfigError`), not at the first ``make``.
    """
    items = _drift_items(drifts or [])
    sched = make_schedule(schedule) if schedule is not None else None
    for name, args in items:  # check arguments now; values are checked by the wrappers at make
        check_arguments(f"drift {name!r}", args, _drift_arguments(DRIFTS[name]))
    base_kwargs = dict(make_kwargs)
    if max_episode_steps is not None:
        base_kwargs["episode_steps"] = max_episode_steps
    gym.register(
        id=id,
        entry_point="crl.drift.registration:make_drifting",
        kwargs={
            "base": base,
            "drifts": [{n: a} for n, a in items],
            "schedule": sched.config() if sched is not None else None,
            **base_kwargs,
        },
        disable_env_checker=True,
        order_enforce=False,
    )
