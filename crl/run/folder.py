"""A run folder: created, or checked against the config of the run it already holds; its
checkpoint read back verified (falling back to the previous one), with the rows that belong
to it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import zlib
from pathlib import Path
from typing import Any

import yaml

from crl.config import yaml_load
from crl.errors import ConfigError
from crl.run.lock import LOCK_FILE
from crl.run.status import CHECKPOINT, PREVIOUS_CHECKPOINT, has_checkpoint, read_status
from crl.spec import AgentSpec, NetworkSpec
from crl.track import flatten

__all__ = ["RunFolder", "config_difference", "ROW_FILES", "damaged_rows"]

#: The row files of a run folder whose content at a checkpoint is kept in the checkpoint, and
#: whether rows are only ever appended to them (``regimes.csv`` fills in a segment's summary
#: columns when the segment ends).
ROW_FILES = {"metrics.csv": True, "regimes.csv": False}

#: Config keys that may change between a run and its resumption: the command line, the
#: version, the step budget (a run can be extended) and how it is executed and tracked.
VOLATILE = ("command", "crl_version", "created", "steps", "progress", "wandb", "vec_env", "train_threads")


def _added_default(key: str, value: Any) -> bool:
    """Whether ``key`` is an agent-spec or network-spec field that a newer crl added, at its
    default value (a run started before the field existed resumes).

    Example:
        >>> _added_default("agent.network.tasks", 0), _added_default("agent.network.tasks", 2)
        (True, False)
        >>> _added_default("agent.task_id", False), _added_default("env.task_id", False)
        (True, False)
    """
    parts = key.split(".")
    if parts[:2] == ["agent", "network"] and len(parts) == 3:
        spec, name = NetworkSpec, parts[2]
    elif len(parts) == 2 and parts[0] == "agent":
        spec, name = AgentSpec, parts[1]
    else:
        return False
    field_ = {f.name: f for f in dataclasses.fields(spec)}.get(name)
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

    @property
    def previous_checkpoint(self) -> Path:
        return self.path / PREVIOUS_CHECKPOINT

    def read_config(self) -> dict[str, Any]:
        """The run's ``config.yaml``; a damaged one is a one-line :class:`ConfigError`."""
        cfg_path = self.path / "config.yaml"
        try:
            old = yaml_load(cfg_path.read_bytes().decode())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"{cfg_path} is damaged ({why}); restore it or start again with --overwrite") from None
        if old is None:
            return {}
        if not isinstance(old, dict):
            raise ConfigError(f"{cfg_path} is damaged (not a mapping); restore it or start again with --overwrite")
        return old

    def prepare(self, resolved: dict[str, Any], overwrite: bool) -> tuple[bool, dict[str, Any]]:
        """Create the folder, or check that the run it holds has the same config.

        Returns (whether a checkpoint can be resumed, the current status).
        """
        cfg_path = self.path / "config.yaml"
        status = read_status(self.path) or {}
        if cfg_path.exists() and not overwrite:
            old = self.read_config()
            key = config_difference(old, resolved)
            if key is not None:
                a, b = flatten(old).get(key), flatten(resolved).get(key)
                raise ConfigError(
                    f"{self.path} holds a run with a different config ({key}: {a!r} vs {b!r}); "
                    "use another --experiment or --overwrite"
                )
            return has_checkpoint(self.path), status
        if overwrite and self.path.exists():
            self.clear()
        self.path.mkdir(parents=True, exist_ok=True)
        return False, {}

    def clear(self) -> None:
        """Delete everything in the folder but its lock file (held by this process)."""
        for p in self.path.iterdir():
            if p.name == LOCK_FILE:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def write_config(self, resolved: dict[str, Any]) -> None:
        """Write ``config.yaml`` atomically."""
        tmp = self.path / "config.yaml.tmp"
        tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
        os.replace(tmp, self.path / "config.yaml")

    def remove_stale_rows(self) -> None:
        """Delete ``metrics.csv`` and ``regimes.csv`` of a run that restarts from scratch."""
        for stale in ("metrics.csv", "regimes.csv"):
            (self.path / stale).unlink(missing_ok=True)

    # -- checkpoints -----------------------------------------------------------------
    def load_checkpoint(self) -> tuple[dict[str, Any], int]:
        """The last good checkpoint and its step: the last one, else (with a warning on
        stderr) the one before it; the damaged one is set aside as ``checkpoints/damaged.pt``.

        Raises:
            DamagedCheckpoint: no good checkpoint is left (one line saying what to do).
        """
        from crl.checkpoint import DamagedCheckpoint, read_checkpoint

        damaged: list[DamagedCheckpoint] = []
        for path in (self.checkpoint, self.previous_checkpoint):
            if not path.exists():
                continue
            try:
                state, step = read_checkpoint(path)
            except DamagedCheckpoint as e:
                damaged.append(e)
                continue
            if not isinstance(state, dict):
                damaged.append(DamagedCheckpoint(path, "not a crl checkpoint"))
                continue
            for e in damaged:
                os.replace(e.path, e.path.with_name("damaged.pt"))
                print(f"crl: warning: {e}; resuming from {path.name} at step {step:,}", file=sys.stderr, flush=True)
            return state, step
        why = "; ".join(f"{e.path.name}: {e.why}" for e in damaged) or "no checkpoint"
        raise DamagedCheckpoint(
            self.path / "checkpoints", f"{why}; no good checkpoint is left, start again with --overwrite"
        )

    def snapshot_rows(self) -> dict[str, bytes]:
        """The row files as they are now, compressed (kept in the checkpoint taken now)."""
        out = {}
        for name in ROW_FILES:
            try:
                out[name] = zlib.compress((self.path / name).read_bytes(), 1)
            except FileNotFoundError:
                continue
        return out

    def restore_rows(self, snapshot: dict[str, bytes], step: int) -> None:
        """Put back the row files of a checkpoint (what the files held when it was taken).

        Rows logged after the checkpoint go (the resumed run logs them again); a file that
        lost rows of the checkpoint, or was altered, is repaired with a warning on stderr.
        """
        for name in ROW_FILES:
            path = self.path / name
            if name not in snapshot:
                path.unlink(missing_ok=True)
                continue
            rows = zlib.decompress(snapshot[name])
            why = damaged_rows(path, rows, append_only=ROW_FILES[name])
            if why is not None:
                print(
                    f"crl: warning: {path} {why}; restored its rows up to the checkpoint at step {step:,}",
                    file=sys.stderr,
                    flush=True,
                )
            tmp = path.with_suffix(".csv.tmp")
            tmp.write_bytes(rows)
            os.replace(tmp, path)


def damaged_rows(path: Path, expected: bytes, append_only: bool = True) -> str | None:
    """Why the CSV file ``path`` does not hold the rows ``expected`` (at its start); None if it does.

    The rows logged after them may follow. Rows are compared only in an ``append_only``
    file whose header has not grown since (columns added after the checkpoint rewrite every
    row); otherwise only their number.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "is missing"
    if data.startswith(expected):
        return None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return "is not text"
    want = expected.decode().splitlines()
    have = text.splitlines()
    if not have or len(have) < len(want):
        return f"has {max(len(have) - 1, 0)} of its {len(want) - 1} rows"
    if append_only and (have[0] == want[0] or not have[0].startswith(want[0])):
        return "was altered"
    return None
