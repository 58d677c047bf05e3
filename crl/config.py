"""Typed configuration records read from YAML, with one-line errors.

:func:`from_mapping` turns a mapping (parsed with ``yaml.safe_load``) into a dataclass,
checking unknown keys, missing keys and value types against the dataclass's type hints,
so every config error names the file, the key, what was given and what is valid.
:func:`parse_overrides` reads ``k=v`` command-line overrides with dotted keys.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from crl.errors import ConfigError, did_you_mean

__all__ = ["from_mapping", "load_yaml", "parse_overrides", "apply_overrides", "to_plain", "init_keywords", "yaml_load"]

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 does: PyYAML (YAML 1.1) takes ``1e-4``
    and ``1.0e4`` (no sign, or no dot, in the exponent) for strings, the way researchers write
    learning rates and strengths.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: Any) -> Any:
    r"""``yaml.safe_load`` with YAML 1.2 floats (``1e-4`` is a number, not a string).

    Example:
        >>> yaml_load("lr: 1e-4\nstrength: 1.0e4\nsteps: 10\nname: 1e4x")
        {'lr': 0.0001, 'strength': 10000.0, 'steps': 10, 'name': '1e4x'}
    """
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file with the safe loader; a missing or malformed file is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"file not found: {p}")
    try:
        with p.open() as f:
            return yaml_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{p}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _check(value: Any, tp: Any, where: str) -> Any:
    """Check (and lightly coerce: int -> float) ``value`` against type ``tp``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _check(value, arg, where)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not valid; valid: {_type_name(tp)}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_check(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in crl, not a user error


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types.

    Example:
        >>> @dataclasses.dataclass
        ... class Point:
        ...     x: int
        ...     y: float = 0.0
        >>> from_mapping(Point, {"x": 1}, "p.yaml")
        Point(x=1, y=0.0)
        >>> from_mapping(Point, {"x": 1, "z": 2}, "p.yaml")
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: p.yaml: unknown key 'z'; valid: x, y
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(fields)}{did_you_mean(unknown[0], fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _check(data[name], hints[name], f"{where}: {name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}")
    return cls(**kwargs)


def to_plain(obj: Any) -> Any:
    """Dataclasses, tuples and paths to plain YAML-safe values (for config.yaml)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and math.isinf(obj):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def parse_overrides(items: list[str] | None, what: str) -> dict[str, Any]:
    """Parse ``["a=1", "b.c=[1, 2]"]`` into ``{"a": 1, "b.c": [1, 2]}`` (values are YAML).

    Example:
        >>> parse_overrides(["change_every=5000", "optimizer.betas=[0.99, 0.99]"], "--agent-kwargs")
        {'change_every': 5000, 'optimizer.betas': [0.99, 0.99]}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: expected key=value, got {item!r}")
        try:
            out[key.strip()] = yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"{what}: cannot read the value of {key.strip()!r}: {raw!r}") from None
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys of ``overrides`` in a deep copy of ``data``.

    Example:
        >>> apply_overrides({"a": {"b": 1}}, {"a.b": 2, "c": 3})
        {'a': {'b': 2}, 'c': 3}
    """
    import copy

    out = copy.deepcopy(data)
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


def init_keywords(cls: type) -> list[str]:
    """The named keyword arguments ``cls(...)`` accepts, following ``**kwargs`` that a subclass
    passes on to its base class (``self`` and ``*args``/``**kwargs`` left out).

    Example:
        >>> class Base:
        ...     def __init__(self, a: int, b: int = 0) -> None: ...
        >>> class Sub(Base):
        ...     def __init__(self, *args, c: int = 1, **kwargs) -> None: ...
        >>> init_keywords(Sub)
        ['c', 'a', 'b']
    """
    names: list[str] = []
    for klass in cls.__mro__:
        params = inspect.signature(klass.__init__).parameters.values()  # type: ignore[misc]
        names += [
            p.name
            for p in params
            if p.name != "self" and p.name not in names and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names
