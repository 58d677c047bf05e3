"""The registry of diagnostic metrics: a registered function becomes a row of every layer."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from crl import diagnostics as D
from crl.errors import ConfigError, UnknownNameError

BUILTIN = [
    "mean_abs_weight",
    "dist_from_init",
    "weight_change",
    "grad_norm",
    "dormant_tau",
    "dormant_dohare",
    "active_fraction",
    "srank",
    "effective_rank",
    "stable_rank",
    "feature_norm",
]


@pytest.fixture
def registered():
    """Names registered by a test, unregistered after it (the registry is global)."""
    names: list[str] = []
    yield names
    for name in names:
        if name in D.DIAGNOSTICS:
            D.unregister_diagnostic(name)


def _model() -> PPO:
    return PPO(
        "MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, batch_size=64, seed=0, policy_kwargs={"net_arch": [8, 8]}
    )


def test_builtin_rows_in_the_order_of_todays_columns():
    assert list(D.DIAGNOSTICS)[: len(BUILTIN)] == BUILTIN


def test_a_user_metric_of_each_kind_appears_in_the_row_and_goes_away(registered):
    @D.register_diagnostic("test_max_feature", on="features")
    def max_feature(h: np.ndarray) -> float:
        return float(h.max())

    @D.register_diagnostic("test_rows", on="weights")
    def rows(w: torch.Tensor) -> float:
        return float(w.shape[0])

    @D.register_diagnostic("test_units_seen", on="layer")
    def units_seen(layer: D.LayerProbe) -> float:
        return float(layer.units.shape[1] + 1000 * layer.index)

    @D.register_diagnostic("test_bias_change", on="update")
    def bias_change(update: D.LayerUpdate) -> float:
        return float((update.current[1] - update.previous[1]).abs().sum())

    registered += ["test_max_feature", "test_rows", "test_units_seen", "test_bias_change"]
    model = _model()
    diag = D.Diagnostics(model)
    states = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    diag.add_states(states)
    row = diag.compute()
    assert "plasticity/policy/0/test_bias_change" not in row  # no update yet
    with torch.no_grad():
        model.policy.mlp_extractor.value_net[2].bias += 0.5
    diag.after_update()
    row = diag.compute()
    net = model.policy.mlp_extractor.policy_net
    with torch.no_grad():
        h = net(torch.as_tensor(diag.probe))
    assert row["plasticity/policy/1/test_max_feature"] == pytest.approx(float(h.max()))
    assert row["plasticity/value/0/test_rows"] == 8.0
    assert row["plasticity/policy/1/test_units_seen"] == 1008.0
    assert row["plasticity/value/1/test_bias_change"] == pytest.approx(8 * 0.5)
    assert row["plasticity/value/0/test_bias_change"] == 0.0
    for name in registered:
        D.unregister_diagnostic(name)
    assert not any(k.endswith(tuple(registered)) for k in diag.compute())


def test_a_metric_returning_none_leaves_no_row(registered):
    D.register_diagnostic("test_nothing", on="layer")(lambda layer: None)
    registered.append("test_nothing")
    diag = D.Diagnostics(_model())
    diag.add_states(np.zeros((10, 3)))
    row = diag.compute()
    assert row and not any(k.endswith("/test_nothing") for k in row)


def test_registry_errors(registered):
    D.register_diagnostic("test_twice")(lambda h: 0.0)
    registered.append("test_twice")
    with pytest.raises(ConfigError, match="diagnostic 'test_twice' is already registered"):
        D.register_diagnostic("test_twice")(lambda h: 1.0)
    with pytest.raises(ConfigError, match="already registered"):
        D.register_diagnostic("srank", on="layer")(lambda layer: 0.0)
    with pytest.raises(UnknownNameError, match="unknown diagnostic input 'grads'; valid: features, layer"):
        D.register_diagnostic("test_bad_kind", on="grads")
    with pytest.raises(ConfigError, match="without '/'"):
        D.register_diagnostic("a/b")
    with pytest.raises(UnknownNameError, match="unknown diagnostic 'test_missing'"):
        D.unregister_diagnostic("test_missing")
    assert "test_bad_kind" not in D.DIAGNOSTICS and "a/b" not in D.DIAGNOSTICS
