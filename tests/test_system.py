"""usable_cores: the CPU affinity, capped by CRL_CORES (a run's share in a sweep)."""

import os

import pytest

from crl.system import CORES_ENV, usable_cores


def test_affinity_and_cap(monkeypatch):
    monkeypatch.delenv(CORES_ENV, raising=False)
    n = usable_cores()
    assert n == len(os.sched_getaffinity(0))
    monkeypatch.setenv(CORES_ENV, "1")
    assert usable_cores() == 1
    monkeypatch.setenv(CORES_ENV, str(n + 5))
    assert usable_cores() == n  # a cap, never more than the process may use
    monkeypatch.setenv(CORES_ENV, "0")
    assert usable_cores() == 1


@pytest.mark.parametrize("bad", ["", "two", "-3", "1.5"])
def test_unreadable_caps_are_ignored(monkeypatch, bad):
    monkeypatch.setenv(CORES_ENV, bad)
    assert usable_cores() == len(os.sched_getaffinity(0))
