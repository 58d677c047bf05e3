"""Argument checks shared by the drift wrappers (specific one-line errors)."""

from __future__ import annotations

from typing import Any

from crl.errors import ConfigError, check_non_negative


def scale_range(low: Any, high: Any, what: str = "") -> tuple[float, float]:
    """A positive ``(low, high)`` range with ``low <= high`` (``what``: a prefix for the errors,
    e.g. ``"friction "``).
    """
    lo, hi = check_non_negative(f"{what}low", low, strict=True), check_non_negative(f"{what}high", high, strict=True)
    if hi < lo:
        raise ConfigError(f"{what}high ({hi}) must be >= low ({lo})")
    return lo, hi


def mujoco_model(env: Any, drift: str) -> Any:
    """The MuJoCo model of ``env``, or ConfigError naming the drift."""
    model = getattr(env.unwrapped, "model", None)
    if model is None or not hasattr(model, "body_mass"):
        raise ConfigError(f"{drift} needs a MuJoCo env, got {type(env.unwrapped).__name__}")
    return model
