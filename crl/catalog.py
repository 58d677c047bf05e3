"""The env and agent catalogs: YAML files found in catalog folders, read into specs.

A catalog folder holds ``envs/*.yaml`` and/or ``agents/*.yaml`` (and ``experiments/``);
the file stem is the catalog name. The built-in catalog ships with crl (the repo's
top-level ``envs/``, ``agents/``, ``experiments/``; inside the wheel as
``crl/_catalog/...``). Users add folders with ``--catalog DIR`` or the environment
variable ``CRL_CATALOG`` (folders separated by ``os.pathsep``).

Env YAML keys: ``description``, ``id`` (the Gymnasium id to register), ``base``,
``base_kwargs``, ``drifts``, ``schedule``, ``max_episode_steps``. Every env file goes
through :func:`crl.drift.register_drifting`. The specs are :mod:`crl.spec`'s dataclasses;
listing and reading them imports neither torch nor stable-baselines3, and only
:func:`resolve_agent` (the agent about to be built) runs the builder's checks.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym

from crl.config import apply_overrides, load_yaml
from crl.drift import register_drifting
from crl.errors import ConfigError, CrlError, UnknownNameError
from crl.spec import AgentSpec, EnvSpec

__all__ = [
    "catalog_dirs",
    "added_catalogs",
    "builtin_dir",
    "env_specs",
    "agent_specs",
    "experiment_files",
    "resolve_env",
    "resolve_agent",
    "add_catalog",
    "extra_catalogs",
    "register_catalog_envs",
    "register_env",
]

_EXTRA_DIRS: list[Path] = []


def register_env(spec: EnvSpec) -> None:
    """Register ``spec.id`` with Gymnasium through :func:`crl.drift.register_drifting`, which
    checks the drifts and the schedule (an env without a ``base`` is registered elsewhere).
    """
    if spec.base is None:
        return
    try:
        register_drifting(
            spec.id,
            base=spec.base,
            drifts=spec.drifts,
            schedule=spec.schedule,
            max_episode_steps=spec.max_episode_steps,
            **spec.base_kwargs,
        )
    except ConfigError as e:
        raise ConfigError(f"{spec.path or spec.name}: {e}") from None


def builtin_dir() -> Path:
    """The built-in catalog folder (source checkout or installed wheel)."""
    here = Path(__file__).resolve().parent
    source = here.parent
    if (source / "envs" / "slippery-ant.yaml").is_file():
        return source
    return Path(str(resources.files("crl._catalog")))


def add_catalog(path: str | Path) -> None:
    """Add a user catalog folder (what ``--catalog DIR`` does) and register its envs."""
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"catalog folder not found: {p}")
    if p not in _EXTRA_DIRS:
        _EXTRA_DIRS.append(p)
    for spec in _load_envs(p).values():
        register_env(spec)


def extra_catalogs() -> list[Path]:
    """The folders added with :func:`add_catalog` (``--catalog``), in order."""
    return list(_EXTRA_DIRS)


def catalog_dirs() -> list[Path]:
    """Built-in folder, then ``CRL_CATALOG`` folders, then ``--catalog`` folders."""
    dirs = [builtin_dir()]
    for entry in os.environ.get("CRL_CATALOG", "").split(os.pathsep):
        if entry.strip():
            dirs.append(Path(entry.strip()))
    dirs.extend(_EXTRA_DIRS)
    return dirs


def added_catalogs() -> list[Path]:
    """The folders added with :func:`add_catalog` (``--catalog``), in order."""
    return list(_EXTRA_DIRS)


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")) if folder.is_dir() else []


def _load_envs(catalog: Path) -> dict[str, EnvSpec]:
    out = {}
    for path in _yaml_files(catalog / "envs"):
        out[path.stem] = EnvSpec.from_dict(load_yaml(path), str(path), name=path.stem, path=str(path))
    return out


def env_specs() -> dict[str, EnvSpec]:
    """All env specs by catalog name (later folders override earlier ones)."""
    out: dict[str, EnvSpec] = {}
    for d in catalog_dirs():
        out.update(_load_envs(d))
    return out


def agent_specs() -> dict[str, AgentSpec]:
    """All agent specs by catalog name (later folders override earlier ones).

    Each is checked as far as the spec alone decides (:meth:`AgentSpec.from_dict`), without
    importing torch or SB3; :func:`resolve_agent` checks the agent to be built in full.
    """
    out: dict[str, AgentSpec] = {}
    for d in catalog_dirs():
        for path in _yaml_files(d / "agents"):
            out[path.stem] = AgentSpec.from_dict(load_yaml(path), str(path), name=path.stem)
    return out


def experiment_files() -> dict[str, Path]:
    """Experiment (sweep) files of the catalogs by name."""
    out: dict[str, Path] = {}
    for d in catalog_dirs():
        for path in _yaml_files(d / "experiments"):
            out[path.stem] = path
    return out


def _looks_like_path(s: str) -> bool:
    return s.endswith((".yaml", ".yml")) or (os.sep in s and not s.startswith("crl/"))


def resolve_env(name: str) -> EnvSpec:
    """An env by catalog name, YAML path or registered Gymnasium id.

    Example:
        >>> resolve_env("slippery-ant").id
        'crl/SlipperyAnt-v0'
        >>> resolve_env("Pendulum-v1").base is None
        True
    """
    specs = env_specs()
    if name in specs:
        return specs[name]
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        spec = EnvSpec.from_dict(load_yaml(path), str(path), name=path.stem, path=str(path))
        register_env(spec)
        return spec
    for spec in specs.values():
        if spec.id == name:
            return spec
    if name in gym.registry:
        return EnvSpec(description=f"Gymnasium env {name}", id=name, name=name.replace("/", "-"))
    raise UnknownNameError("env", name, list(specs))


def resolve_agent(name: str, overrides: dict[str, Any] | None = None) -> AgentSpec:
    """The agent to build, by catalog name or YAML path, checked in full (once).

    Args:
        name: a catalog name (``ppo-cbp``) or the path of an agent YAML file.
        overrides: ``{key: value}`` set in the spec before it is checked; dotted keys reach
            inside (``optimizer.betas``), and a key that is not a field of
            :class:`~crl.spec.AgentSpec` is a hyperparameter (``n_steps`` means
            ``hyperparameters.n_steps``), as ``--agent-kwargs`` writes them.

    Runs :func:`crl.agents.check` (importing torch and SB3), so a bad hyperparameter,
    optimizer value or intervention argument fails here, naming the file.

    Example:
        >>> spec = resolve_agent("ppo", {"n_steps": 64, "network.activation": "tanh"})
        >>> spec.hyperparameters["n_steps"], spec.network.activation
        (64, 'tanh')
    """
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
    else:  # read only this file: a broken file elsewhere in a catalog does not matter here
        files = {p.stem: p for d in catalog_dirs() for p in _yaml_files(d / "agents")}
        if name not in files:
            raise UnknownNameError("agent", name, list(files))
        path = files[name]
    data, where = load_yaml(path), str(path)
    if overrides and isinstance(data, dict):  # not a mapping: from_dict says so
        fields = {f.name for f in dataclasses.fields(AgentSpec)}
        routed = {(k if k.split(".")[0] in fields else f"hyperparameters.{k}"): v for k, v in overrides.items()}
        data = apply_overrides(data, routed)
        where = f"{where} with overrides"
    spec = AgentSpec.from_dict(data, where, name=path.stem)
    from crl.agents import check  # the builder: torch and SB3

    check(spec, where)
    return spec


def register_catalog_envs() -> None:
    """Register the envs of the built-in catalog and of ``CRL_CATALOG`` (import time).

    Errors in the built-in catalog are bugs and raise; errors in a user's catalog
    become warnings here (the command line reports them as errors).
    """
    for d in catalog_dirs():
        try:
            specs = _load_envs(d)
            for spec in specs.values():
                register_env(spec)
        except CrlError as e:
            if d == builtin_dir():
                raise
            warnings.warn(f"crl: catalog {d} not registered: {e}", stacklevel=2)
