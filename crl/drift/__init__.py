"""Nonstationarity as Gymnasium wrappers: *when* (schedules) and *what* (drifts).

``crl.drift`` depends on nothing else in crl (but the dependency-free
:mod:`crl.errors`): a drifting env works from any RL code.
"""

import crl.drift.dmc  # noqa: F401  (registers the crl/dmc-<domain>-<task>-v0 ids)
from crl.drift.actuator import ActuatorDrift
from crl.drift.base import DriftWrapper, find_drifts
from crl.drift.damping import DampingDrift
from crl.drift.friction import FrictionDrift
from crl.drift.gravity import GravityDrift
from crl.drift.level_shift import LevelShift
from crl.drift.mass import MassDrift
from crl.drift.permutation import ActionPermutation, ObservationPermutation
from crl.drift.registration import DRIFTS, make_drifting, register_drift, register_drifting, wrap_drifts
from crl.drift.reward import TargetVelocity
from crl.drift.schedules import (
    SCHEDULES,
    Cyclic,
    EveryNSteps,
    Explicit,
    Gradual,
    RandomWalk,
    Schedule,
    make_schedule,
    register_schedule,
)
from crl.drift.task_id import TaskIdObservation
from crl.drift.task_sequence import TaskSequence

__all__ = [
    "DRIFTS",
    "SCHEDULES",
    "ActionPermutation",
    "ActuatorDrift",
    "Cyclic",
    "DampingDrift",
    "DriftWrapper",
    "EveryNSteps",
    "Explicit",
    "FrictionDrift",
    "Gradual",
    "GravityDrift",
    "LevelShift",
    "MassDrift",
    "ObservationPermutation",
    "RandomWalk",
    "Schedule",
    "TargetVelocity",
    "TaskIdObservation",
    "TaskSequence",
    "find_drifts",
    "make_drifting",
    "make_schedule",
    "register_drift",
    "register_drifting",
    "register_schedule",
    "wrap_drifts",
]
