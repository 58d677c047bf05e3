"""The reservoir replay buffer: uniform over the stream, seeded, refused where it can't work."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest

from crl.agents import check
from crl.errors import ConfigError
from crl.plasticity.replay import ReservoirReplayBuffer
from crl.spec import AgentSpec

SPACE = gym.spaces.Box(-1e9, 1e9, (1,))


def _fill(buf: ReservoirReplayBuffer, n: int) -> None:
    for t in range(n):
        x = np.array([[t]], dtype=np.float32)
        buf.add(x, x, np.zeros((1, 1)), np.zeros(1), np.zeros(1), [{}])


def test_every_row_is_kept_with_equal_probability():
    """Over many seeds, each of 100 rows sits in a 10-row reservoir with probability 1/10."""
    counts = np.zeros(100)
    for seed in range(400):
        buf = ReservoirReplayBuffer(10, SPACE, SPACE, seed=seed)
        _fill(buf, 100)
        counts[buf.observations[:, 0, 0].astype(int)] += 1
    p = counts / 400
    assert abs(p.mean() - 0.1) < 1e-9  # exactly 10 rows each time
    assert p[:50].mean() == pytest.approx(p[50:].mean(), abs=0.02)  # old regimes as likely as new
    assert p.std() < 0.03


def test_seeded_and_picklable_mid_stream():
    a = ReservoirReplayBuffer(10, SPACE, SPACE, seed=3)
    _fill(a, 40)
    b = pickle.loads(pickle.dumps(a))
    for buf in (a, b):
        for t in range(40, 80):
            x = np.array([[t]], dtype=np.float32)
            buf.add(x, x, np.zeros((1, 1)), np.zeros(1), np.zeros(1), [{}])
    assert np.array_equal(a.observations, b.observations)
    assert a.seen == b.seen == 80


def test_refusals():
    with pytest.raises(ValueError, match="optimize_memory_usage"):
        ReservoirReplayBuffer(10, SPACE, SPACE, optimize_memory_usage=True)
    with pytest.raises(ConfigError, match="replay buffer 'ring'"):  # a name of the builder's registry
        check(AgentSpec.from_dict({"description": "x", "algo": "sac", "replay_buffer": "ring"}, "a.yaml"))
    with pytest.raises(ConfigError, match="for sac and td3 agents only"):  # the spec alone says so
        AgentSpec.from_dict({"description": "x", "algo": "ppo", "replay_buffer": "reservoir"}, "a.yaml")
    sac = {"description": "x", "algo": "sac", "replay_buffer": "reservoir", "boundary_aware": True}
    for name in ("ewc", "mas"):  # their importances read the most recent transitions
        with pytest.raises(ConfigError, match=f"intervention '{name}' computes its importances"):
            check(AgentSpec.from_dict({**sac, "interventions": [name]}, "a.yaml"))
    check(AgentSpec.from_dict({**sac, "interventions": ["l2_prev"]}, "a.yaml"))  # needs no states


def test_sac_replay_agent_uses_it():
    from crl.agents import build_model
    from crl.catalog import resolve_agent

    spec = resolve_agent("sac-replay")
    spec.hyperparameters.update(buffer_size=100, learning_starts=10, batch_size=8)
    model, _ = build_model(spec, gym.make("Pendulum-v1"), seed=0)
    model.learn(150)
    assert isinstance(model.replay_buffer, ReservoirReplayBuffer) and model.replay_buffer.seen == 150
