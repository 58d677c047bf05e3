"""Read an offline wandb run folder back, without wandb's servers: what ``wandb sync`` would upload.

An offline run (``wandb/offline-run-<time>-<id>/run-<id>.wandb``) is a LevelDB-style log of
protobuf ``Record`` messages (wandb's ``wandb_internal.proto``): a 7-byte header
(``:W&B``, magic ``0xBEE1``, version 0), then 32 KiB blocks of chunks, each a 7-byte
header (CRC32C, length, type: full, first, middle or last) and its bytes; a record that
does not fit a block is split into first/middle/last chunks. wandb 0.31 ships no reader of
this format in Python, so this module reads it (the checksum is not verified: the lengths
and the protobuf parse are).

:func:`offline_runs` lists a run folder's offline wandb runs; :func:`read_offline_run`
returns a run's history rows, summary, config, group and tags. crl's tests use it to check
that a resumed run leaves one offline history holding exactly the rows of ``metrics.csv``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crl.errors import ConfigError

__all__ = ["OfflineRun", "offline_runs", "read_offline_run", "records"]

_HEADER = b":W&B\xe1\xbe\x00"
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What an offline wandb run holds."""

    path: Path
    """The ``run-<id>.wandb`` file."""
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    """The run's config, key -> value (decoded from JSON)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """The history rows in order, each with ``_step`` and the logged keys."""
    summary: dict[str, Any] = field(default_factory=dict)
    """The last value of each summary key."""
    exit_code: int | None = None


def records(path: str | Path) -> list[bytes]:
    """The serialized records of a ``.wandb`` file, in order.

    Raises :class:`~crl.errors.ConfigError` naming the file when it is not a wandb log.
    """
    data = Path(path).read_bytes()
    if not data.startswith(_HEADER):
        raise ConfigError(f"{path} is not a wandb offline log (header {data[:7]!r})")
    out: list[bytes] = []
    pos, pending = len(_HEADER), b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            out.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            out.append(pending + chunk)
            pending = b""
        elif kind != 0 or length:
            raise ConfigError(f"{path}: unknown chunk type {kind} at byte {pos - 7 - length}")
    return out


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(path: str | Path) -> OfflineRun:
    """Read an offline run: a ``run-<id>.wandb`` file or the ``offline-run-*`` folder holding it."""
    from wandb.proto import wandb_internal_pb2 as pb

    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("run-*.wandb"))
        if not files:
            raise ConfigError(f"{p} holds no run-*.wandb file")
        p = files[0]
    run = OfflineRun(p)
    for raw in records(p):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.run_id, run.project, run.group, run.job_type = r.run_id, r.project, r.run_group, r.job_type
            run.tags = list(r.tags)
            run.config.update({_key(u): json.loads(u.value_json) for u in r.config.update})
        elif kind == "config":
            run.config.update({_key(u): json.loads(u.value_json) for u in rec.config.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            run.summary.update({_key(u): json.loads(u.value_json) for u in rec.summary.update})
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
    return run


def offline_runs(run_dir: str | Path) -> list[Path]:
    """The offline wandb run folders of a crl run folder (``<run_dir>/wandb/offline-run-*``), oldest first."""
    return sorted(p for p in (Path(run_dir) / "wandb").glob("offline-run-*") if p.is_dir())
