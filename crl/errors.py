"""Exceptions raised by crl.

Every error that a user can cause (a bad name, a bad YAML key or value, a missing
file) is a :class:`CrlError`; the command line prints its message on one line and
exits with status 2, so nothing else needs to catch them.

The two argument checks of crl live here too, beside the error they raise:
:func:`check_int` (every count, step, seed and size) and :func:`check_non_negative`
(every rate, strength, scale and range). Both name the parameter, the value and what is
valid, on one line.
"""

from __future__ import annotations

import difflib
import math
from numbers import Integral, Real
from typing import Any

__all__ = [
    "CrlError",
    "ConfigError",
    "UnknownNameError",
    "NonFiniteLossError",
    "check_int",
    "check_non_negative",
    "check_number",
    "did_you_mean",
]


def did_you_mean(name: Any, valid: Any) -> str:
    """``" (did you mean 'x'?)"`` for the valid name closest to ``name`` (difflib), or ``""``.

    Put at the end of a message (after the list of valid names).

    Example:
        >>> did_you_mean("slipery-hopper", ["slippery-hopper", "slippery-ant"])
        " (did you mean 'slippery-hopper'?)"
        >>> did_you_mean("zzz", ["ppo", "sac"])
        ''
    """
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class CrlError(Exception):
    """Base class of the errors that crl reports to users as one line."""


class ConfigError(CrlError, ValueError):
    """A configuration (YAML file, keyword override, argument) is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A name (env, agent, drift, schedule, intervention, optimizer) is not known.

    The message lists the valid names.
    """

    def __init__(self, kind: str, name: str, valid: list[str] | tuple[str, ...]) -> None:
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        hint = did_you_mean(name, self.valid)
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(self.valid) or '(none)'}{hint}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class NonFiniteLossError(CrlError, FloatingPointError):
    """A loss or a parameter became NaN or infinite during training."""

    def __init__(self, step: int, what: str, detail: str = "") -> None:
        self.step = step
        self.what = what
        super().__init__(f"non-finite {what} at global step {step}" + (f"; {detail}" if detail else ""))


def check_non_negative(name: str, value: Any, strict: bool = False) -> float:
    """``value`` as a float if it is a finite number ``>= 0`` (``> 0`` with ``strict``).

    Otherwise a one-line :class:`ConfigError` naming the parameter, the value and what is
    valid. NaN, infinities, booleans and strings are refused (crl reads YAML with 1.2 floats,
    :func:`crl.config.yaml_load`, so ``1e-3`` in a config is a number). The check of every
    plasticity hyperparameter and of the drifts' scales, offsets and ranges.

    Example:
        >>> check_non_negative("strength", 1.0e-3)
        0.001
        >>> check_non_negative("strength", float("inf"))
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: strength must be >= 0 and finite, got inf
        >>> check_non_negative("eps", 0, strict=True)
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: eps must be > 0 and finite, got 0
    """
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value > 0 if strict else value >= 0)):
        raise ConfigError(f"{name} must be {'> 0' if strict else '>= 0'} and finite, got {value!r}")
    return float(value)


def check_int(name: str, value: Any, minimum: int | None = 0, maximum: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer in ``[minimum, maximum]`` (``None``: unbounded).

    Otherwise a one-line :class:`ConfigError` naming the parameter, the value and what is
    valid. Booleans, floats (even ``2.0``) and strings are refused; numpy integers are
    accepted. The check of every count, step, seed and layer size in crl.

    Example:
        >>> check_int("change_every", 500, minimum=1)
        500
        >>> check_int("change_every", 0, minimum=1)
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: change_every must be a positive integer, got 0
        >>> check_int("maturity", 2.0)
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: maturity must be a non-negative integer, got 2.0
        >>> check_int("window", 300, minimum=1, maximum=200)
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: window must be an integer in [1, 200], got 300
    """
    ok = isinstance(value, Integral) and not isinstance(value, bool)
    if ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)
    raise ConfigError(f"{name} must be {_integer_range(minimum, maximum)}, got {value!r}")


def _integer_range(minimum: int | None, maximum: int | None) -> str:
    """``'a positive integer'``, ``'an integer in [1, 5]'``, ... (what :func:`check_int` accepts)."""
    if maximum is not None:
        top = f"{maximum:_}" if maximum >= 10**5 else str(maximum)
        return f"an integer <= {top}" if minimum is None else f"an integer in [{minimum}, {top}]"
    return {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}"
    )


def check_number(
    name: str, value: Any, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> float:
    """``value`` as a float if it is a finite number in the interval from ``low`` to ``high``.

    ``low_open``/``high_open`` leave the bound out (``(0, 1]``: ``low_open=True``). Otherwise a
    one-line :class:`ConfigError` naming the parameter, the interval and the value; strings,
    booleans, NaN and infinities are refused.

    Example:
        >>> check_number("gamma", 0.99, 0, 1, low_open=True)
        0.99
        >>> check_number("gamma", 5, 0, 1, low_open=True)
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: gamma must be a number in (0, 1], got 5
        >>> check_number("learning_rate", "abc", 0, 1, low_open=True)
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: learning_rate must be a number in (0, 1], got 'abc'
    """
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high):
        return float(value)
    interval = f"{'(' if low_open else '['}{_short(low)}, {_short(high)}{')' if high_open else ']'}"
    return _refuse(f"{name} must be a number in {interval}, got {value!r}")


def _short(x: float) -> str:
    """``1000``, ``0.5``, ``1e9``: a bound as people write it."""
    return f"{x:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _refuse(message: str) -> float:
    raise ConfigError(message)
