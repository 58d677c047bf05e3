"""Process checks shared by the tests of worker processes."""

from __future__ import annotations


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting to be reaped counts as gone).

    >>> import os
    >>> process_alive(os.getpid())
    True
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
