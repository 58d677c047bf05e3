"""The one parser of ``{name: {arguments}}`` specs (drifts, schedules, interventions).

Every plug-in that a YAML file or a keyword argument selects is written the same way:
a bare ``name``, or a one-key mapping ``{name: {argument: value, ...}}``. This module
reads that shape and checks argument names against a signature; it imports nothing but
:mod:`crl.errors`, so the drift package, the plasticity package and :mod:`crl.spec` can
all use it. Building the plug-in (calling its class) stays with the registry that owns it.

Example:
    >>> parse_named({"friction": {"low": 0.1}}, "drift")
    ('friction', {'low': 0.1})
    >>> parse_named("cbp", "intervention")
    ('cbp', {})
    >>> parse_named_list(["ewc", {"l2_init": None}], "intervention")
    [('ewc', {}), ('l2_init', {})]
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from crl.errors import ConfigError, UnknownNameError, did_you_mean

__all__ = ["parse_named", "parse_named_list", "check_arguments"]


def parse_named(item: Any, what: str, valid: Collection[str] | None = None) -> tuple[str, dict[str, Any]]:
    """``(name, arguments)`` of ``item``: ``"name"``, ``{name: None}`` or ``{name: {arguments}}``.

    Args:
        item: the spec as read from YAML or given in Python.
        what: the kind of plug-in, for the errors (``"drift"``, ``"schedule"``, ...).
        valid: the known names; an unknown name raises :class:`~crl.errors.UnknownNameError`
            listing them. ``None`` leaves the name to the caller.

    The arguments come back as a new dict (the spec is not modified). Errors are one
    line naming what was given:

    Example:
        >>> parse_named({"friction": {"low": 0.1}, "gravity": {}}, "drift")
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: a drift is written {name: {arguments}}, got {'friction': {'low': 0.1}, 'gravity': {}}
        >>> parse_named({"ewc": 3}, "intervention")
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: intervention 'ewc': arguments must be a mapping, got 3
        >>> parse_named("slippery", "drift", valid=["friction", "gravity"])
        Traceback (most recent call last):
        ...
        crl.errors.UnknownNameError: unknown drift 'slippery'; valid: friction, gravity
    """
    if isinstance(item, str):
        item = {item: None}
    if not isinstance(item, dict) or len(item) != 1 or not isinstance(next(iter(item)), str):
        article = "an" if what[:1] in "aeiou" else "a"
        raise ConfigError(f"{article} {what} is written {{name: {{arguments}}}}, got {item!r}")
    ((name, args),) = item.items()
    if valid is not None and name not in valid:
        raise UnknownNameError(what, name, list(valid))
    if args is not None and not isinstance(args, dict):
        raise ConfigError(f"{what} {name!r}: arguments must be a mapping, got {args!r}")
    return name, dict(args or {})


def parse_named_list(items: Any, what: str, valid: Collection[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """:func:`parse_named` of every item of a list (``None`` is the empty list).

    Example:
        >>> parse_named_list({"friction": {}}, "drift")
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: drifts must be a list of {name: {arguments}}, got {'friction': {}}
    """
    if items is None:
        return []
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{what}s must be a list of {{name: {{arguments}}}}, got {items!r}")
    return [parse_named(item, what, valid) for item in items]


def check_arguments(what: str, args: Iterable[str], valid: Iterable[str]) -> None:
    """Refuse an argument name that is not in ``valid`` (one line, listing the valid ones).

    Example:
        >>> check_arguments("drift 'friction'", {"low": 0.1, "heavy": 1}, ["low", "high"])
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: drift 'friction': unknown argument 'heavy'; valid: low, high
    """
    valid = list(valid)
    unknown = sorted(set(args) - set(valid))
    if unknown:
        hint = did_you_mean(unknown[0], valid)
        raise ConfigError(f"{what}: unknown argument {unknown[0]!r}; valid: {', '.join(valid) or '(none)'}{hint}")
