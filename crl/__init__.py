"""crl: continual reinforcement learning on drifting MuJoCo tasks.

Importing crl registers the catalog's drifting environments with Gymnasium, so
``gymnasium.make("crl/SlipperyAnt-v0")`` works from any RL code.

Example:
    >>> import gymnasium as gym
    >>> import crl
    >>> env = gym.make("crl/SlipperyAnt-v0", change_every=1000, drift_seed=0)
    >>> _, info = env.reset(seed=0)
    >>> info["regime"], 0.02 <= info["drift/friction"] <= 2.0
    (0, True)
"""

from crl.catalog import register_catalog_envs
from crl.drift import register_drifting
from crl.errors import ConfigError, CrlError, UnknownNameError

__version__ = "0.1.0"

__all__ = ["ConfigError", "CrlError", "UnknownNameError", "__version__", "register_drifting"]

register_catalog_envs()
