"""Facts about the machine that several parts of crl need."""

from __future__ import annotations

import os

__all__ = ["usable_cores", "CORES_ENV"]

#: Environment variable capping :func:`usable_cores`: the share of the machine one run may use.
#: ``crl sweep`` sets it for its runs (cores / runs at a time locally, ``n_envs`` on Ray), so a
#: run among others does not start worker processes for cores the other runs hold.
CORES_ENV = "CRL_CORES"


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity (a container's share or ``taskset``), else
    the machine's count, capped by :data:`CORES_ENV` when set.

    Example:
        >>> usable_cores() >= 1
        True
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    cap = os.environ.get(CORES_ENV, "")
    return max(1, min(n, int(cap))) if cap.strip().isdigit() else n
