"""Nonstationarity as Gymnasium wrappers: *when* (schedules) and *what* (drifts).

``crl.drift`` depends on nothing else in crl (but the dependency-free
:mod:`crl.errors`): a drifting env works from any RL code.
"""

from crl.drift.base import DriftWrapper
from crl.drift.friction import FrictionDrift
from crl.drift.registration import DRIFTS, make_drifting, register_drift, register_drifting, wrap_drifts
from crl.drift.schedules import SCHEDULES, EveryNSteps, Schedule, make_schedule, register_schedule

__all__ = [
    "DRIFTS",
    "SCHEDULES",
    "DriftWrapper",
    "EveryNSteps",
    "FrictionDrift",
    "Schedule",
    "make_drifting",
    "make_schedule",
    "register_drift",
    "register_drifting",
    "register_schedule",
    "wrap_drifts",
]
