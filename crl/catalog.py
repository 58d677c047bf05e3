"""The env and agent catalogs: YAML files found in catalog folders.

A catalog folder holds ``envs/*.yaml`` and/or ``agents/*.yaml`` (and ``experiments/``);
the file stem is the catalog name. The built-in catalog ships with crl (the repo's
top-level ``envs/``, ``agents/``, ``experiments/``; inside the wheel as
``crl/_catalog/...``). Users add folders with ``--catalog DIR`` or the environment
variable ``CRL_CATALOG`` (folders separated by ``os.pathsep``).

Env YAML keys: ``description``, ``id`` (the Gymnasium id to register), ``base``,
``base_kwargs``, ``drifts``, ``schedule``, ``max_episode_steps``. Every env file goes
through :func:`crl.drift.register_drifting`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from crl.config import from_mapping, load_yaml
from crl.drift import register_drifting
from crl.errors import ConfigError, CrlError, UnknownNameError

if TYPE_CHECKING:  # agents pull in torch and SB3; `import crl` must not (drifts work from any RL code)
    from crl.agents import AgentSpec

__all__ = [
    "EnvSpec",
    "catalog_dirs",
    "builtin_dir",
    "env_specs",
    "agent_specs",
    "experiment_files",
    "resolve_env",
    "resolve_agent",
    "add_catalog",
    "register_catalog_envs",
]

_EXTRA_DIRS: list[Path] = []


@dataclass
class EnvSpec:
    """A drifting environment of the catalog (``envs/<name>.yaml``)."""

    description: str
    """Where the environment comes from and what drifts."""
    id: str
    """The Gymnasium id registered for it (``gymnasium.make(id)``)."""
    base: str | None = None
    """The wrapped environment's id; None for an env registered elsewhere."""
    base_kwargs: dict[str, Any] = field(default_factory=dict)
    """Default keyword arguments of the base env."""
    drifts: list[Any] = field(default_factory=list)
    """Drift specs, ``[{name: {arguments}}, ...]``."""
    schedule: dict[str, Any] | None = None
    """When regimes change, ``{name: {arguments}}``."""
    max_episode_steps: int | None = None
    """Episode limit (default: the base env's)."""
    name: str = ""
    """Catalog name (the file stem)."""
    path: str = ""
    """The YAML file it was read from."""

    def register(self) -> None:
        """Register :attr:`id` with Gymnasium (through :func:`crl.drift.register_drifting`)."""
        if self.base is None:
            return
        try:
            register_drifting(
                self.id,
                base=self.base,
                drifts=self.drifts,
                schedule=self.schedule,
                max_episode_steps=self.max_episode_steps,
                **self.base_kwargs,
            )
        except ConfigError as e:
            raise ConfigError(f"{self.path or self.name}: {e}") from None

    def make_kwargs(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The fully resolved keyword arguments of ``gymnasium.make(self.id, ...)``."""
        registered = gym.spec(self.id).kwargs if self.id in gym.registry else {}
        out = {k: v for k, v in registered.items() if k not in ("base", "drifts", "schedule")}
        if self.base is not None:
            from crl.drift.registration import split_make_kwargs

            drifts, schedule, wkw, base_kw = split_make_kwargs(
                registered.get("drifts", self.drifts), registered.get("schedule", self.schedule), overrides or {}
            )
            out = {**{k: v for k, v in out.items() if k not in base_kw}, **base_kw}
            out.update({"drifts": drifts, "schedule": schedule, "drift_seed": 0, "num_envs": 1, **wkw})
        else:
            out.update(overrides or {})
        return out


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
        spec.register()


def catalog_dirs() -> list[Path]:
    """Built-in folder, then ``CRL_CATALOG`` folders, then ``--catalog`` folders."""
    dirs = [builtin_dir()]
    for entry in os.environ.get("CRL_CATALOG", "").split(os.pathsep):
        if entry.strip():
            dirs.append(Path(entry.strip()))
    dirs.extend(_EXTRA_DIRS)
    return dirs


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")) if folder.is_dir() else []


def _load_envs(catalog: Path) -> dict[str, EnvSpec]:
    out = {}
    for path in _yaml_files(catalog / "envs"):
        spec = from_mapping(EnvSpec, load_yaml(path), str(path))
        spec.name, spec.path = path.stem, str(path)
        out[spec.name] = spec
    return out


def env_specs() -> dict[str, EnvSpec]:
    """All env specs by catalog name (later folders override earlier ones)."""
    out: dict[str, EnvSpec] = {}
    for d in catalog_dirs():
        out.update(_load_envs(d))
    return out


def agent_specs() -> dict[str, AgentSpec]:
    """All agent specs by catalog name (later folders override earlier ones)."""
    from crl.agents import AgentSpec

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
        spec = from_mapping(EnvSpec, load_yaml(path), str(path))
        spec.name, spec.path = path.stem, str(path)
        spec.register()
        return spec
    for spec in specs.values():
        if spec.id == name:
            return spec
    if name in gym.registry:
        return EnvSpec(description=f"Gymnasium env {name}", id=name, name=name.replace("/", "-"))
    raise UnknownNameError("env", name, list(specs))


def resolve_agent(name: str) -> AgentSpec:
    """An agent by catalog name or YAML path."""
    from crl.agents import AgentSpec

    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        return AgentSpec.from_dict(load_yaml(path), str(path), name=path.stem)
    files = {p.stem: p for d in catalog_dirs() for p in _yaml_files(d / "agents")}
    if name in files:  # read only this file: a broken file elsewhere in a catalog does not matter here
        return AgentSpec.from_dict(load_yaml(files[name]), str(files[name]), name=name)
    raise UnknownNameError("agent", name, list(files))


def register_catalog_envs() -> None:
    """Register the envs of the built-in catalog and of ``CRL_CATALOG`` (import time).

    Errors in the built-in catalog are bugs and raise; errors in a user's catalog
    become warnings here (the command line reports them as errors).
    """
    for d in catalog_dirs():
        try:
            specs = _load_envs(d)
            for spec in specs.values():
                spec.register()
        except CrlError as e:
            if d == builtin_dir():
                raise
            warnings.warn(f"crl: catalog {d} not registered: {e}", stacklevel=2)
