"""Plasticity diagnostics: the ``plasticity/<net>/<layer>/<metric>`` rows of a run.

* :mod:`crl.diagnostics.registry`: :func:`register_diagnostic` and :data:`DIAGNOSTICS`, the
  one list of metrics;
* :mod:`crl.diagnostics.metrics`: the metric functions (dormant fractions, ranks, norms,
  distances) and the built-in rows;
* :mod:`crl.diagnostics.monitor`: :class:`Diagnostics` (every registered metric for every
  hidden layer of every network of an SB3 model; :class:`crl.run.DiagnosticsCallback` logs
  them during training);
* :mod:`crl.diagnostics.evaluation`: :func:`evaluate_regimes`.

Hidden layers are found by the one MLP walker, :func:`crl.plasticity.nets.hidden_layers`
(``Linear`` [+ ``LayerNorm``] + any activation of :data:`crl.plasticity.nets.ACTIVATIONS`,
CReLU included).

Adding a metric is one function: register it, and every run logs it for every layer
(``on`` says what it receives: ``features``, ``weights``, ``update`` or ``layer``, see
:mod:`crl.diagnostics.registry`).

Example:
    >>> import gymnasium as gym, numpy as np
    >>> from stable_baselines3 import PPO
    >>> from crl.diagnostics import Diagnostics, register_diagnostic, unregister_diagnostic
    >>> @register_diagnostic("max_feature", on="features")
    ... def max_feature(h: np.ndarray) -> float:
    ...     '''The largest post-activation feature on the probe batch.'''
    ...     return float(h.max())
    >>> model = PPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, batch_size=64, seed=0)
    >>> diag = Diagnostics(model)
    >>> diag.add_states(np.random.default_rng(0).normal(size=(256, 3)))  # states seen in training
    >>> row = diag.compute()
    >>> [k for k in row if k.endswith("/max_feature")]
    ['plasticity/policy/0/max_feature', 'plasticity/policy/1/max_feature', \
'plasticity/value/0/max_feature', 'plasticity/value/1/max_feature']
    >>> 0.0 < row["plasticity/policy/0/max_feature"] < 1.0  # SB3's default activation is tanh
    True
    >>> unregister_diagnostic("max_feature")  # the doctest leaves the registry as it found it
"""

from crl.diagnostics.evaluation import evaluate_regimes
from crl.diagnostics.metrics import (
    DormantRecord,
    active_fraction,
    effective_rank,
    feature_norm,
    grad_norm,
    mean_abs_weight,
    param_distance,
    singular_values,
    srank,
    stable_rank,
    tau_dormant_fraction,
)
from crl.diagnostics.monitor import Diagnostics
from crl.diagnostics.registry import (
    DIAGNOSTICS,
    Diagnostic,
    LayerProbe,
    LayerUpdate,
    register_diagnostic,
    unregister_diagnostic,
)
from crl.plasticity.nets import hidden_layers

__all__ = [
    "DIAGNOSTICS",
    "Diagnostic",
    "Diagnostics",
    "DormantRecord",
    "LayerProbe",
    "LayerUpdate",
    "active_fraction",
    "effective_rank",
    "evaluate_regimes",
    "feature_norm",
    "grad_norm",
    "hidden_layers",
    "mean_abs_weight",
    "param_distance",
    "register_diagnostic",
    "singular_values",
    "srank",
    "stable_rank",
    "tau_dormant_fraction",
    "unregister_diagnostic",
]
