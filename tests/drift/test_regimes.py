"""Regimes of a stacked env (several drifts): ``set_regime`` / ``release`` reach every drift,
cyclic schedules move to the right segment, and evaluation on a regime pins every drift.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import crl
from crl.api import make_agent
from crl.diagnostics import evaluate_regimes
from crl.drift import GravityDrift, MassDrift, find_drifts
from crl.errors import ConfigError
from crl.seeding import derive

crl.register_drifting("test/GM-v0", base="Walker2d-v5", drifts=[{"gravity": {}}, {"mass": {}}])
MASS0 = gym.make("Walker2d-v5").unwrapped.model.body_mass.copy()
CYCLE = {"cyclic": {"change_every": 3, "align": "exact", "cycle": [0, 4, 2]}}


def _physics(env: gym.Env) -> tuple[np.ndarray, np.ndarray]:
    model = env.unwrapped.model
    return model.opt.gravity.copy(), model.body_mass.copy()


def _expected(env: gym.Env, regime: int) -> tuple[np.ndarray, np.ndarray]:
    """Gravity and body masses of ``regime`` according to each drift's own parameters."""
    mass, gravity = find_drifts(env)
    assert isinstance(mass, MassDrift) and isinstance(gravity, GravityDrift)
    return gravity.regime_params(regime)["vector"], MASS0 * mass.regime_params(regime)["scales"]


def _assert_physics_of(env: gym.Env, regime: int) -> None:
    g, m = _physics(env)
    g_want, m_want = _expected(env, regime)
    np.testing.assert_allclose(g, g_want)
    np.testing.assert_allclose(m, m_want)


def test_find_drifts_sees_every_drift_through_other_wrappers():
    env = gym.wrappers.TimeLimit(gym.make("test/GM-v0"), 50)
    assert [d.name for d in find_drifts(env)] == ["mass", "gravity"]
    assert find_drifts(gym.make("Walker2d-v5")) == []


def test_set_regime_pins_every_drift_of_a_stacked_env():
    """The issue's reproduction: gravity (inner drift) used to stay at regime 0's."""
    env = gym.make("test/GM-v0", schedule={"every_n_steps": {"change_every": 2, "align": "exact"}})
    env.set_regime(3)
    _, info = env.reset(seed=0)
    assert [d.regime for d in find_drifts(env)] == [3, 3] and info["regime"] == 3
    _assert_physics_of(env, 3)
    assert not np.allclose(_expected(env, 3)[0], _expected(env, 0)[0])  # the check can fail
    for _ in range(6):  # past several changes the schedules would make: still pinned
        assert env.step(np.zeros(6))[-1]["regime"] == 3
    _assert_physics_of(env, 3)
    env.release()
    assert [d.regime for d in find_drifts(env)] == [0, 0]
    _assert_physics_of(env, 0)
    env.step(np.zeros(6))
    env.step(np.zeros(6))  # the schedules (not advanced while pinned) change together again
    assert [d.regime for d in find_drifts(env)] == [1, 1]
    _assert_physics_of(env, 1)


def test_set_regime_without_hold_moves_every_schedule_in_the_current_cycle():
    env = gym.make("test/GM-v0", schedule=CYCLE)
    env.reset(seed=0)
    for _ in range(12):  # 4 segments: the second pass through the cycle, at regime 4
        env.step(np.zeros(6))
    assert [d.schedule.segment for d in find_drifts(env)] == [4, 4] and env.regime == 4
    env.set_regime(2, hold=False)
    assert [(d.regime, d.schedule.segment, d.schedule.since_change) for d in find_drifts(env)] == [(2, 5, 0)] * 2
    _assert_physics_of(env, 2)
    seen = [env.step(np.zeros(6))[-1]["regime"] for _ in range(7)]
    assert seen == [2, 2, 2, 0, 0, 0, 4]  # the cycle goes on from regime 2: 0 then 4
    _assert_physics_of(env, 4)
    assert [d.schedule.segment for d in find_drifts(env)] == [7, 7]


def test_a_refused_regime_changes_no_drift():
    env = gym.make("test/GM-v0", schedule=CYCLE)
    env.reset(seed=0)
    env.set_regime(4, hold=False)
    with pytest.raises(ConfigError, match=r"regime 9 is not in the cycle \[0, 4, 2\]"):
        env.set_regime(9, hold=False)
    assert [(d.regime, d.schedule.segment) for d in find_drifts(env)] == [(4, 1)] * 2
    _assert_physics_of(env, 4)


def test_evaluation_on_a_regime_pins_every_drift_and_uses_derived_episode_seeds():
    """``eval/regime_3/return`` equals episodes run where both drifts are at regime 3 from the
    start (an explicit schedule), reset with ``derive(seed, "evaluation", 3, j)``.
    """
    policy = make_agent("ppo", "Walker2d-v5", seed=0, n_steps=64, batch_size=64)
    row = evaluate_regimes(policy, gym.make("test/GM-v0"), [0, 3], episodes=2, seed=7)
    assert set(row) == {"eval/regime_0/return", "eval/regime_3/return"}
    for k in (0, 3):
        env = gym.make("test/GM-v0", schedule={"explicit": {"changes": [], "initial": k}})
        returns = []
        for j in range(2):
            obs, _ = env.reset(seed=derive(7, "evaluation", k, j))
            _assert_physics_of(env, k)
            done, ret = False, 0.0
            while not done:
                obs, r, term, trunc, _ = env.step(policy.predict(obs, deterministic=True)[0])
                ret, done = ret + float(r), term or trunc
            returns.append(ret)
        assert row[f"eval/regime_{k}/return"] == pytest.approx(np.mean(returns), rel=1e-12)
    assert row["eval/regime_0/return"] != row["eval/regime_3/return"]


def test_callbacks_evaluate_a_stacked_env_with_the_models_seed(tmp_path):
    """End to end through ``crl.callbacks``: a frozen policy (learning rate 0) evaluated during
    training on the regimes seen gives what :func:`evaluate_regimes` gives with the model's seed.
    """
    import pandas as pd

    env = gym.make("test/GM-v0", schedule={"every_n_steps": {"change_every": 64, "align": "exact"}})
    model = make_agent("ppo", env, seed=5, n_steps=64, batch_size=64, n_epochs=1, learning_rate=0.0)
    model.learn(64 * 4, callback=crl.callbacks(tmp_path, diagnostics_every=0, eval_every=64, eval_episodes=1))
    rows = pd.read_csv(tmp_path / "metrics.csv")
    last = rows.dropna(subset=["eval/regime_2/return"]).iloc[-1]
    want = evaluate_regimes(model, gym.make("test/GM-v0"), [0, 1, 2], episodes=1, seed=5)
    assert {k: last[k] for k in want} == pytest.approx(want, rel=1e-9)
    other = evaluate_regimes(model, gym.make("test/GM-v0"), [0, 1, 2], episodes=1, seed=6)
    assert other != pytest.approx(want, rel=1e-9)  # the seed matters: the check can fail
