"""Argument checks shared by the drift wrappers (specific one-line errors)."""

from __future__ import annotations

import math
from typing import Any

from crl.errors import ConfigError


def positive(name: str, value: Any) -> float:
    """``value`` as a float, or ConfigError if it is not a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def non_negative(name: str, value: Any) -> float:
    """``value`` as a float, or ConfigError if it is not a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def scale_range(low: Any, high: Any) -> tuple[float, float]:
    """A positive ``(low, high)`` range with ``low <= high``."""
    lo, hi = positive("low", low), positive("high", high)
    if hi < lo:
        raise ConfigError(f"high ({hi}) must be >= low ({lo})")
    return lo, hi


def mujoco_model(env: Any, drift: str) -> Any:
    """The MuJoCo model of ``env``, or ConfigError naming the drift."""
    model = getattr(env.unwrapped, "model", None)
    if model is None or not hasattr(model, "body_mass"):
        raise ConfigError(f"{drift} needs a MuJoCo env, got {type(env.unwrapped).__name__}")
    return model
