"""crl: continual reinforcement learning on drifting MuJoCo tasks.

Importing crl registers the catalog's drifting environments with Gymnasium, so
``gymnasium.make("crl/SlipperyAnt-v0")`` works from any RL code. The training API
(:func:`make_agent`, :func:`train`, :func:`callbacks`, :class:`RunConfig`) is loaded on
first use, so ``import crl`` alone loads neither torch nor stable-baselines3.

Example:
    >>> import gymnasium as gym
    >>> import crl
    >>> env = gym.make("crl/SlipperyAnt-v0", change_every=1000, drift_seed=0)
    >>> _, info = env.reset(seed=0)
    >>> info["regime"], 0.02 <= info["drift/friction"] <= 2.0
    (0, True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from crl.catalog import register_catalog_envs
from crl.drift import register_drifting
from crl.errors import ConfigError, CrlError, UnknownNameError

if TYPE_CHECKING:
    from crl.api import make_agent
    from crl.run import RunConfig, callbacks, train

__version__ = "0.2.0"

__all__ = [
    "ConfigError",
    "CrlError",
    "RunConfig",
    "UnknownNameError",
    "__version__",
    "callbacks",
    "make_agent",
    "register_drifting",
    "train",
]

#: Public names loaded on first use: name -> module.
_LAZY = {"make_agent": "crl.api", "train": "crl.run", "callbacks": "crl.run", "RunConfig": "crl.run"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'crl' has no attribute {name!r}")


register_catalog_envs()
