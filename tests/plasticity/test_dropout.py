"""Dropout as a network option (``network.dropout``): the layers, the walker, what PPO's rollouts
and updates see, and the fast path's fallback to autograd (the same updates as SB3's PPO).
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from torch import nn

from crl.agents import build_model
from crl.diagnostics.monitor import Diagnostics
from crl.errors import ConfigError
from crl.fast.critic_worker import CriticWorker
from crl.fast.mlp import MlpPlan
from crl.fast.ppo import FastPPO
from crl.plasticity.nets import find_mlps, hidden_layers
from crl.plasticity.policies import ArchActorCriticPolicy, ArchMlpExtractor
from crl.spec import AgentSpec

KW = dict(
    n_steps=256,
    batch_size=64,
    n_epochs=3,
    learning_rate=1e-3,
    ent_coef=0.0,
    vf_coef=1.0,
    max_grad_norm=float("inf"),
    seed=3,
)


def _pk(dropout):
    return dict(net_arch=dict(pi=[32, 32], vf=[32, 32]), dropout=dropout)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


def test_spec_builds_dropout_after_every_hidden_activation_of_ppo_only():
    spec = AgentSpec.from_dict(
        {"description": "x", "hyperparameters": {"n_steps": 64}, "network": {"pi": [8, 8], "vf": [4], "dropout": 0.25}},
        "a.yaml",
    )
    model, _ = build_model(spec, gym.make("Pendulum-v1"), seed=0)
    assert isinstance(model.policy, ArchActorCriticPolicy)
    kinds = [type(m).__name__ for m in model.policy.mlp_extractor.policy_net]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout"]
    assert [type(m).__name__ for m in model.policy.mlp_extractor.value_net] == ["Linear", "ReLU", "Dropout"]
    assert all(m.p == 0.25 for m in model.policy.modules() if isinstance(m, nn.Dropout))
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match=r"network\.dropout must be a number in \[0, 1\)"):
            AgentSpec.from_dict({"description": "x", "network": {"dropout": bad}}, "a.yaml")
    with pytest.raises(ConfigError, match="dropout: expected a number"):
        AgentSpec.from_dict({"description": "x", "network": {"dropout": "0.5"}}, "a.yaml")
    with pytest.raises(ConfigError, match=r"a\.yaml: network: dropout is available for ppo only"):
        AgentSpec.from_dict({"description": "x", "algo": "sac", "network": {"dropout": 0.1}}, "a.yaml")


def test_the_walker_sees_through_dropout():
    """The same hidden layers as without dropout: each Linear's activation, and the next Linear
    as its outgoing layer (the Dropout between them is skipped); the diagnostics give the same
    rows as the same weights without dropout (they run in eval mode, like rollouts)."""
    torch.manual_seed(0)
    plain = ArchMlpExtractor(3, {"pi": [8, 8], "vf": [8]}, nn.ReLU)
    drop = ArchMlpExtractor(3, {"pi": [8, 8], "vf": [8]}, nn.ReLU, dropout=0.5)
    a, b = hidden_layers(plain.policy_net), hidden_layers(drop.policy_net)
    assert [layer.path for layer in b] == ["0", "3"]
    assert [layer.width for layer in a] == [layer.width for layer in b] == [8, 8]
    assert b[0].outs == [drop.policy_net[3]] and isinstance(b[0].act, nn.ReLU)

    models = []
    for dropout in (0.0, 0.5):
        m = PPO(ArchActorCriticPolicy, gym.make("Pendulum-v1"), n_steps=64, seed=0, policy_kwargs=_pk(dropout))
        models.append(m)
    views = [find_mlps(m) for m in models]
    assert [[len(v.layers) for v in vs] for vs in views] == [[2, 2], [2, 2]]
    with torch.no_grad():  # the same weights in both
        for va, vb in zip(*views, strict=True):
            for la, lb in zip(va.layers, vb.layers, strict=True):
                lb.inp.load_state_dict(la.inp.state_dict())
            for oa, ob in zip(va.output, vb.output, strict=True):
                ob.load_state_dict(oa.state_dict())
    rows = []
    states = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    for m in models:
        m.policy.set_training_mode(False)
        diag = Diagnostics(m, probe_size=64)
        diag.add_states(states)
        rows.append(diag.compute())
    assert rows[0] and rows[0].keys() == rows[1].keys()
    assert rows[0] == rows[1]


def test_rollouts_act_without_dropout_and_the_update_ratio_sees_it():
    """crl's choice (SB3's): the rollout's log-probabilities come from the full network (eval
    mode), the update's from a dropped-out one (training mode). With a zero learning rate the
    ratio is exactly 1 without dropout; with dropout it is not, from the first minibatch on."""
    stats = {}
    for dropout in (0.0, 0.3):
        kw = {**KW, "learning_rate": 0.0, "n_epochs": 1}
        model = FastPPO(ArchActorCriticPolicy, gym.make("Pendulum-v1"), policy_kwargs=_pk(dropout), **kw)
        model.set_logger(Logger(folder=None, output_formats=[]))
        model.learn(256)
        buf = model.rollout_buffer
        obs, actions = torch.as_tensor(buf.observations), torch.as_tensor(buf.actions)
        model.policy.set_training_mode(False)
        with torch.no_grad():
            values, log_prob, _ = model.policy.evaluate_actions(obs.reshape(-1, 3), actions.reshape(-1, 1))
        torch.testing.assert_close(log_prob, torch.as_tensor(buf.log_probs).flatten(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(values.flatten(), torch.as_tensor(buf.values).flatten(), rtol=1e-5, atol=1e-5)
        model.policy.set_training_mode(True)
        with torch.no_grad():
            _, dropped, _ = model.policy.evaluate_actions(obs.reshape(-1, 3), actions.reshape(-1, 1))
        stats[dropout] = (dict(model.logger.name_to_value), (dropped - log_prob).abs().max().item())
    assert abs(stats[0.0][0]["train/approx_kl"]) < 1e-8 and stats[0.0][0]["train/clip_fraction"] == 0.0
    assert stats[0.0][1] == 0.0  # no dropout: training mode changes nothing
    assert stats[0.3][0]["train/approx_kl"] > 1e-6 and stats[0.3][1] > 1e-3


def test_fast_paths_refuse_dropout():
    body = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Dropout(0.1))
    assert MlpPlan.of(body, nn.Linear(8, 1)) is None
    assert "Dropout" in MlpPlan.unsupported(body, nn.Linear(8, 1))
    assert MlpPlan.of(nn.Sequential(nn.Linear(3, 8), nn.ReLU()), nn.Linear(8, 1)) is not None
    policy = PPO(ArchActorCriticPolicy, gym.make("Pendulum-v1"), n_steps=64, policy_kwargs=_pk(0.1)).policy
    assert "Dropout" in CriticWorker.unsupported(policy)


@pytest.mark.parametrize("parallel", [False, True])
def test_fastppo_with_dropout_makes_sb3s_updates(parallel):
    """FastPPO leaves dropout networks to autograd (no hand-written pass, no critic worker, whose
    masks would come from other random streams) and makes exactly SB3's updates: the same masks,
    drawn from torch's stream in the same order."""
    torch.set_num_threads(1)
    a = PPO(ArchActorCriticPolicy, gym.make("Pendulum-v1"), policy_kwargs=_pk(0.2), **KW)
    a.learn(512)
    b = FastPPO(ArchActorCriticPolicy, gym.make("Pendulum-v1"), policy_kwargs=_pk(0.2), parallel_update=parallel, **KW)
    b.learn(512)
    b.close_workers()
    assert b.update_paths == [(0, "autograd", "autograd")]
    assert a._n_updates == b._n_updates == 6
    torch.testing.assert_close(_params(a), _params(b), rtol=0, atol=0)
    c = PPO(ArchActorCriticPolicy, gym.make("Pendulum-v1"), policy_kwargs=_pk(0.0), **KW)
    c.learn(512)
    assert not torch.equal(_params(a), _params(c))  # dropout changed the updates
