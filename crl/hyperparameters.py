"""The valid values of the SB3 hyperparameters an agent spec may set, checked before anything runs.

stable-baselines3 checks few of its arguments, and late: ``learning_rate: fast`` or
``clip_range: wide`` fail inside the first update, ``batch_size: 0`` and ``n_steps: 1`` in
an ``assert`` while the model is built, and ``gamma: 5`` is accepted (the returns then grow
without bound). :data:`CHECKS` holds one check per keyword of ``PPO``, ``SAC`` and ``TD3`` (and
crl's :class:`~crl.fast.FastPPO`), each naming what is valid, so a bad value is a one-line
:class:`~crl.errors.ConfigError` when the spec is read (:meth:`crl.spec.AgentSpec.validate`),
before a run folder exists. A keyword without an entry (one a newer SB3 added) only has to
be a non-negative number if it is a number. Pure data: no torch, no SB3.

Example:
    >>> check_hyperparameters("ppo", {"learning_rate": 3e-4, "n_steps": 64, "gamma": 0.99})
    >>> check_hyperparameters("ppo", {"clip_range": "wide"})
    Traceback (most recent call last):
    ...
    crl.errors.ConfigError: clip_range must be a number in (0, 1], got 'wide'
    >>> check_hyperparameters("ppo", {"batch_size": 1})
    Traceback (most recent call last):
    ...
    crl.errors.ConfigError: batch_size must be an integer in [2, 100_000_000] with normalize_advantage, got 1
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any

from crl.errors import ConfigError, check_int, check_number

__all__ = ["ACTION_NOISES", "CHECKS", "MAX_COUNT", "check_hyperparameters", "check_rollout_size"]

#: The largest count (steps, sizes, epochs) crl accepts anywhere: a larger one is a typo.
MAX_COUNT = 10**10

Check = Callable[[str, Any], object]


def _number(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Check:
    return lambda k, v: check_number(k, v, low, high, low_open, high_open)


def _count(low: int, high: int = MAX_COUNT) -> Check:
    return lambda k, v: check_int(k, v, minimum=low, maximum=high)


def _bool(k: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise ConfigError(f"{k} must be true or false, got {v!r}")


def _optional(check: Check) -> Check:
    def inner(k: str, v: Any) -> None:
        if v is not None:
            check(k, v)

    return inner


def _null_only(k: str, v: Any) -> None:
    if v is not None:
        raise ConfigError(f"{k} cannot be set in an agent spec (it takes a Python object), got {v!r}")


def _mapping(k: str, v: Any) -> None:
    if v is not None and not isinstance(v, dict):
        raise ConfigError(f"{k} must be a mapping of keyword arguments or null, got {v!r}")


def _sde_freq(k: str, v: Any) -> None:
    check_int(k, v, minimum=-1, maximum=MAX_COUNT)


def _gradient_steps(k: str, v: Any) -> None:
    if v != -1 or isinstance(v, bool):
        check_int(k, v, minimum=1, maximum=MAX_COUNT)


def _train_freq(k: str, v: Any) -> None:
    if isinstance(v, list) and len(v) == 2 and v[1] in ("step", "episode"):
        check_int(f"{k}[0]", v[0], minimum=1, maximum=MAX_COUNT)
    elif not isinstance(v, list):
        check_int(k, v, minimum=1, maximum=MAX_COUNT)
    else:
        raise ConfigError(f"{k} must be a positive integer or [n, step|episode], got {v!r}")


#: The exploration noises an off-policy agent's ``action_noise`` may name, with their arguments
#: (``{normal: {sigma: 0.1}}``: SB3's ``NormalActionNoise``, zero mean, ``sigma`` on every
#: action dimension, in the policy's [-1, 1] action scale; built by :func:`crl.agents.build_model`).
ACTION_NOISES: dict[str, tuple[str, ...]] = {"normal": ("sigma",)}


def _action_noise(k: str, v: Any) -> None:
    if v is None:
        return
    if not (isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ACTION_NOISES):
        raise ConfigError(f"{k} must be null or {{normal: {{sigma: <number>}}}}, got {v!r}")
    ((name, args),) = v.items()
    if not isinstance(args, dict) or set(args) != set(ACTION_NOISES[name]):
        raise ConfigError(f"{k}.{name} takes exactly {', '.join(ACTION_NOISES[name])}, got {args!r}")
    check_number(f"{k}.{name}.sigma", args["sigma"], 0, 1e3)


def _auto_or(check: Check, what: str) -> Check:
    def inner(k: str, v: Any) -> None:
        if v == "auto" or (isinstance(v, str) and v.startswith("auto_") and _is_positive(v[5:])):
            return
        if isinstance(v, str):
            raise ConfigError(f"{k} must be 'auto', 'auto_<initial value>' or {what}, got {v!r}")
        check(k, v)

    return inner


def _no_clipping_or(check: Check) -> Check:
    def inner(k: str, v: Any) -> None:
        if not (isinstance(v, float) and v == math.inf):  # .inf: no clipping
            check(k, v)

    return inner


def _is_positive(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


_COMMON: dict[str, Check] = {
    "learning_rate": _number(0, 1),
    "gamma": _number(0, 1, low_open=True),
    "use_sde": _bool,
    "sde_sample_freq": _sde_freq,
    "stats_window_size": _count(1, 10**7),
}

#: The replay-buffer algorithms' keywords (SAC and TD3).
_OFF_POLICY: dict[str, Check] = {
    "buffer_size": _count(1, 10**9),
    "learning_starts": _count(0),
    "batch_size": _count(1, 10**8),
    "tau": _number(0, 1, low_open=True),
    "train_freq": _train_freq,
    "gradient_steps": _gradient_steps,
    "n_steps": _count(1, 10**4),
    "replay_buffer_kwargs": _mapping,
    "optimize_memory_usage": _bool,
}

#: The check of every hyperparameter keyword, by algorithm.
CHECKS: dict[str, dict[str, Check]] = {
    "ppo": {
        **_COMMON,
        "n_steps": _count(1, 10**8),
        "batch_size": _count(1, 10**8),  # >= 2 with normalize_advantage: in check_hyperparameters
        "n_epochs": _count(1, 10**5),
        "gae_lambda": _number(0, 1),
        "clip_range": _number(0, 1, low_open=True),
        "clip_range_vf": _optional(_number(0, 1e9, low_open=True)),
        "normalize_advantage": _bool,
        "ent_coef": _number(0, 1e3),
        "vf_coef": _number(0, 1e3),
        "max_grad_norm": _no_clipping_or(_number(0, 1e9, low_open=True)),
        "target_kl": _optional(_number(0, 1e3, low_open=True)),
        "rollout_buffer_class": _null_only,
        "rollout_buffer_kwargs": _mapping,
        "parallel_update": _optional(_bool),
        "hand_gradients": _bool,
    },
    "sac": {
        **_COMMON,
        **_OFF_POLICY,
        "action_noise": _null_only,
        "ent_coef": _auto_or(_number(0, 1e3), "a number in [0, 1000]"),
        "target_update_interval": _count(1),
        "target_entropy": _auto_or(_number(-1e6, 1e6), "a number"),
        "use_sde_at_warmup": _bool,
        "parallel_update": _optional(_bool),
    },
    "td3": {
        **{k: v for k, v in _COMMON.items() if k not in ("use_sde", "sde_sample_freq")},  # no gSDE
        **_OFF_POLICY,
        "action_noise": _action_noise,
        "policy_delay": _count(1, 10**6),
        "target_policy_noise": _number(0, 1e3),
        "target_noise_clip": _number(0, 1e3),
    },
}


def check_hyperparameters(algo: str, hyperparameters: dict[str, Any]) -> None:
    """Check the values of ``hyperparameters`` of an ``algo`` agent; one-line :class:`ConfigError`.

    Names are checked against SB3's signature elsewhere (:func:`crl.agents.check`); a name
    without an entry in :data:`CHECKS` only has to be a non-negative number if it is a number.
    """
    checks = CHECKS.get(algo, {})
    if algo == "ppo" and hyperparameters.get("normalize_advantage", True) and "batch_size" in hyperparameters:
        try:
            check_int("batch_size", hyperparameters["batch_size"], minimum=2, maximum=10**8)
        except ConfigError as e:
            raise ConfigError(str(e).replace(", got", " with normalize_advantage, got")) from None
    for k, v in hyperparameters.items():
        if k in checks:
            checks[k](k, v)
        elif isinstance(v, Real) and not isinstance(v, bool) and v < 0:
            raise ConfigError(f"{k} must not be negative, got {v!r}")


def check_rollout_size(algo: str, hyperparameters: dict[str, Any], n_envs: int) -> None:
    """PPO: a rollout (``n_steps * n_envs`` transitions) must hold at least 2 with advantage
    normalisation, as SB3 asserts when the model is built.

    Example:
        >>> check_rollout_size("ppo", {"n_steps": 1}, n_envs=1)
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: n_steps * n_envs must be >= 2 with normalize_advantage (SB3), got 1 * 1
        >>> check_rollout_size("ppo", {"n_steps": 1}, n_envs=2)
    """
    if algo != "ppo" or not hyperparameters.get("normalize_advantage", True):
        return
    n_steps = hyperparameters.get("n_steps", 2048)
    if n_steps * n_envs < 2:
        raise ConfigError(f"n_steps * n_envs must be >= 2 with normalize_advantage (SB3), got {n_steps} * {n_envs}")
