"""A run folder's ``status.json``: what state a run is in, read and written atomically.

``crl train`` writes it; ``crl sweep`` reads it to skip finished runs and resume the others.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> write_status(d, status="running", global_step=0)
    >>> read_status(d)["status"], run_state(d)
    ('running', 'new')
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "STATUS_FILE",
    "CHECKPOINT",
    "PREVIOUS_CHECKPOINT",
    "RUN_STATES",
    "now",
    "read_status",
    "write_status",
    "run_state",
    "checkpoint_step",
    "has_checkpoint",
    "mark_stopped",
]

#: The status file of a run folder.
STATUS_FILE = "status.json"

#: The last checkpoint, relative to the run folder.
CHECKPOINT = "checkpoints/last.pt"

#: The checkpoint before it, kept as a fallback should the last one be damaged.
PREVIOUS_CHECKPOINT = "checkpoints/previous.pt"

#: States of a run before a sweep starts it (what ``crl sweep --dry-run`` prints); ``running``:
#: another process holds the run folder (:mod:`crl.run.lock`).
RUN_STATES = ("new", "finished", "resumable", "failed", "running")


def now() -> str:
    """The current UTC time, ISO 8601 to the second (the timestamps of status.json)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``status.json`` (None if absent or unreadable)."""
    p = Path(run_dir) / STATUS_FILE
    try:
        out = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def write_status(run_dir: str | Path, **fields: Any) -> None:
    """Update ``status.json`` with ``fields`` (and ``updated``), atomically."""
    run_dir = Path(run_dir)
    current = read_status(run_dir) or {}
    current.update(fields, updated=now())
    tmp = run_dir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(current, indent=1))
    os.replace(tmp, run_dir / STATUS_FILE)


def run_state(run_dir: str | Path) -> str:
    """State of a run folder before a sweep starts it: one of :data:`RUN_STATES`.

    ``running`` (another process holds the folder's lock), ``finished`` (skipped),
    ``failed`` (retried; resumes from its checkpoint if any), ``resumable`` (unfinished with a
    checkpoint: interrupted, killed) or ``new`` (nothing there, or started without reaching
    a checkpoint: starts from scratch).

    Example:
        >>> run_state("/nonexistent/run")
        'new'
    """
    from crl.run.lock import holder

    if holder(run_dir) is not None:
        return "running"
    status = (read_status(run_dir) or {}).get("status")
    if status in ("finished", "failed"):
        return status
    return "resumable" if has_checkpoint(run_dir) else "new"


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run folder holds a checkpoint (the last one or the one before it)."""
    return any((Path(run_dir) / c).exists() for c in (CHECKPOINT, PREVIOUS_CHECKPOINT))


def checkpoint_step(run_dir: str | Path) -> int:
    """The step of the run's last checkpoint, read from the checkpoint's own header (so it is
    never stale); ``checkpoint_step`` of ``status.json`` for a file without a header; 0
    without a checkpoint.
    """
    from crl.checkpoint import checkpoint_header

    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = Path(run_dir) / name
        header = checkpoint_header(path)
        if header is not None:
            return int(header["step"])
        if path.exists():
            return int((read_status(run_dir) or {}).get("checkpoint_step", 0))
    return 0


def mark_stopped(run_dir: str | Path, status: str, error: str) -> None:
    """Write ``status`` (``failed``, ``interrupted``) for a run whose process stopped without writing it.

    Only a run still marked ``running`` (or without a status) is changed.
    """
    st = read_status(run_dir)
    if st is not None and st.get("status") in ("running", None):
        write_status(run_dir, status=status, error=error)
