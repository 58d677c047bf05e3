"""Exceptions raised by crl.

Every error that a user can cause (a bad name, a bad YAML key or value, a missing
file) is a :class:`CrlError`; the command line prints its message on one line and
exits with status 2, so nothing else needs to catch them.
"""

from __future__ import annotations

__all__ = ["CrlError", "ConfigError", "UnknownNameError", "NonFiniteLossError"]


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
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(self.valid) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class NonFiniteLossError(CrlError, FloatingPointError):
    """A loss or a parameter became NaN or infinite during training."""

    def __init__(self, step: int, what: str) -> None:
        self.step = step
        super().__init__(f"non-finite {what} at global step {step}; the last good checkpoint was kept")
