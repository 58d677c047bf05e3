"""A run folder: created, or checked against the config of the run it already holds."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from crl.config import yaml_load
from crl.errors import ConfigError
from crl.run.status import CHECKPOINT, read_status
from crl.spec import AgentSpec
from crl.track import flatten

__all__ = ["RunFolder", "config_difference"]

#: Config keys that may change between a run and its resumption: the command line, the
#: version, the step budget (a run can be extended) and how it is executed and tracked.
VOLATILE = ("command", "crl_version", "created", "steps", "progress", "wandb", "vec_env", "train_threads")


def _added_default(key: str, value: Any) -> bool:
    """Whether ``key`` is an agent-spec field that a newer crl added, at its default value
    (a run started before the field existed resumes).
    """
    parts = key.split(".")
    if len(parts) != 2 or parts[0] != "agent":
        return False
    field_ = {f.name: f for f in dataclasses.fields(AgentSpec)}.get(parts[1])
    return field_ is not None and field_.default is not dataclasses.MISSING and value == field_.default


def config_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first key (dotted) whose value differs between two resolved configs, volatile keys
    left out; None if they describe the same run.

    Example:
        >>> config_difference({"seed": 0, "steps": 10}, {"seed": 0, "steps": 20}) is None
        True
        >>> config_difference({"seed": 0}, {"seed": 1})
        'seed'
    """
    a = flatten({k: v for k, v in old.items() if k not in VOLATILE})
    b = flatten({k: v for k, v in new.items() if k not in VOLATILE})
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not (k not in a and _added_default(k, b[k])))
    return diff[0] if diff else None


class RunFolder:
    """``<run_dir>/<experiment>/<name>/`` and the files crl keeps in it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def prepare(self, resolved: dict[str, Any], overwrite: bool) -> tuple[bool, dict[str, Any]]:
        """Create the folder, or check that the run it holds has the same config.

        Returns (whether a checkpoint can be resumed, the current status).
        """
        cfg_path = self.path / "config.yaml"
        status = read_status(self.path) or {}
        if cfg_path.exists() and not overwrite:
            old = yaml_load(cfg_path.read_text()) or {}
            key = config_difference(old, resolved)
            if key is not None:
                a, b = flatten(old).get(key), flatten(resolved).get(key)
                raise ConfigError(
                    f"{self.path} holds a run with a different config ({key}: {a!r} vs {b!r}); "
                    "use another --experiment or --overwrite"
                )
            return self.checkpoint.exists(), status
        if overwrite and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        return False, {}

    def write_config(self, resolved: dict[str, Any]) -> None:
        """Write ``config.yaml`` atomically."""
        tmp = self.path / "config.yaml.tmp"
        tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
        os.replace(tmp, self.path / "config.yaml")

    def remove_stale_rows(self) -> None:
        """Delete ``metrics.csv`` and ``regimes.csv`` of a run that restarts from scratch."""
        for stale in ("metrics.csv", "regimes.csv"):
            (self.path / stale).unlink(missing_ok=True)
