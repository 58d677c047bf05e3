"""Slippery Ant (Dohare et al. 2024) as registered by the catalog."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import crl
from crl.drift import FrictionDrift


def test_check_env_passes():
    env = gym.make("crl/SlipperyAnt-v0", change_every=50)
    check_env(env, skip_render_check=True)
    check_env(env.unwrapped, skip_render_check=True)


def test_defaults_follow_dohare():
    env = gym.make("crl/SlipperyAnt-v0")
    drift = env
    assert isinstance(drift, FrictionDrift)
    assert (drift.low, drift.high) == (0.02, 2.0)
    assert drift.schedule.change_every == 2_000_000
    assert drift.schedule.align == "episode_end"
    assert env.unwrapped.frame_skip == 5
    assert env.unwrapped._healthy_z_range == (0.2, 1.0)
    assert env.spec is not None and env.spec.id == "crl/SlipperyAnt-v0"


def test_friction_sequence_log_uniform_and_seed_fixed():
    env = gym.make("crl/SlipperyAnt-v0", drift_seed=7).unwrapped
    wrapper = gym.make("crl/SlipperyAnt-v0", drift_seed=7)
    seq = np.array([wrapper.regime_params(k)["friction"] for k in range(2000)])
    assert seq.min() >= 0.02 and seq.max() <= 2.0
    # log-uniform: log f uniform on [log .02, log 2] -> mean of log f at the midpoint, quartiles evenly spaced
    logs = np.log(seq)
    mid = (np.log(0.02) + np.log(2.0)) / 2
    assert abs(logs.mean() - mid) < 0.1
    q = np.quantile(logs, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(np.diff(q), (np.log(2.0) - np.log(0.02)) / 4, rtol=0.1)
    # same drift seed -> same sequence, whatever the reset seed or the agent; other seed -> different
    other = gym.make("crl/SlipperyAnt-v0", drift_seed=7)
    other.reset(seed=123)
    assert [other.regime_params(k)["friction"] for k in range(20)] == list(seq[:20])
    third = gym.make("crl/SlipperyAnt-v0", drift_seed=8)
    assert [third.regime_params(k)["friction"] for k in range(20)] != list(seq[:20])
    del env


def test_friction_applied_to_every_geom_sliding_only():
    env = gym.make("crl/SlipperyAnt-v0", drift_seed=1)
    before = env.unwrapped.model.geom_friction.copy()
    env.reset(seed=0)
    f = env.unwrapped.model.geom_friction
    np.testing.assert_array_equal(f[:, 0], env.regime_params(0)["friction"])
    np.testing.assert_array_equal(f[:, 1:], before[:, 1:])


def test_change_exactly_at_first_episode_end_after_threshold():
    change_every = 60
    env = gym.make("crl/SlipperyAnt-v0", change_every=change_every, episode_steps=25, drift_seed=3)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    since, regime, ends_seen = 0, 0, 0
    for steps in range(1, 401):
        _, _, term, trunc, info = env.step(rng.uniform(-1, 1, 8).astype(np.float32))
        since += 1
        assert info["regime"] == regime
        assert info["drift/friction"] == env.regime_params(regime)["friction"]
        expected_change = (term or trunc) and since >= change_every
        assert bool(info.get("regime_change")) == expected_change, (steps, since, term, trunc)
        if expected_change:
            regime += 1
            since = 0
            assert env.unwrapped.model.geom_friction[0, 0] == env.regime_params(regime)["friction"]
        if term or trunc:
            ends_seen += 1
            env.reset()
    assert regime >= 3 and ends_seen > regime


def test_num_envs_counts_steps_of_all_envs():
    env = gym.make("crl/SlipperyAnt-v0", change_every=40, align="exact", num_envs=4)
    env.reset(seed=0)
    changes = [bool(env.step(env.action_space.sample())[-1].get("regime_change")) for _ in range(30)]
    assert [i for i, c in enumerate(changes) if c] == [9, 19, 29]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"friction_low": -1.0}, "friction low must be > 0"),
        ({"friction_low": 1.0, "friction_high": 0.5}, ">= low"),
        ({"change_every": 0}, "positive integer"),
        ({"align": "sometimes"}, "align"),
        ({"drift_seed": -3}, "drift_seed"),
    ],
)
def test_invalid_arguments_raise_config_error(kwargs, message):
    with pytest.raises(crl.ConfigError, match=message):
        gym.make("crl/SlipperyAnt-v0", **kwargs)
