"""Deep Fourier features as a network option (``network.activation: dff``, Lewandowski et al.
2025): the activation's equations, the networks the spec builds, the walker and the diagnostics,
and the fast path's fallback to autograd (the same updates as SB3's PPO)."""

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from torch import nn

from crl import diagnostics as D
from crl.agents import build_model
from crl.catalog import agent_specs
from crl.errors import ConfigError
from crl.fast.mlp import MlpPlan
from crl.fast.ppo import FastPPO
from crl.plasticity.nets import DFF, activation_name, find_mlps, hidden_layers
from crl.plasticity.policies import ArchActorCriticPolicy

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


def test_dff_is_sine_and_cosine_of_each_unit_and_its_gradient_is_analytic():
    x = torch.tensor([[0.0, math.pi / 2, -1.3], [2.0, -0.4, math.pi]], requires_grad=True)
    out = DFF()(x)
    want = torch.tensor([[math.sin(v) for v in row] + [math.cos(v) for v in row] for row in x.tolist()])
    torch.testing.assert_close(out, want)
    g = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    (out * g).sum().backward()
    # d/dx [g1 sin x + g2 cos x] = g1 cos x - g2 sin x
    with torch.no_grad():
        torch.testing.assert_close(x.grad, g[:, :3] * torch.cos(x) - g[:, 3:] * torch.sin(x))


def test_ppo_dff_builds_doubled_layers_the_walker_sees():
    spec = agent_specs()["ppo-dff"]
    assert spec.network.activation == "dff"
    model, _ = build_model(spec, gym.make("Pendulum-v1"), seed=0)
    assert isinstance(model.policy, ArchActorCriticPolicy)
    for seq, head in (
        (model.policy.mlp_extractor.policy_net, model.policy.action_net),
        (model.policy.mlp_extractor.value_net, model.policy.value_net),
    ):
        assert [type(m).__name__ for m in seq] == ["Linear", "DFF", "Linear", "DFF"]
        assert (seq[0].out_features, seq[2].in_features, seq[2].out_features, head.in_features) == (256, 512, 256, 512)
    views = find_mlps(model)
    assert [v.name for v in views] == ["pi", "vf"]
    for view in views:
        assert [(layer.width, layer.doubled, activation_name(layer.act)) for layer in view.layers] == [
            (256, True, "dff"),
            (256, True, "dff"),
        ]
    x = torch.randn(7, 3)
    with torch.no_grad():
        mean = model.policy.action_net(model.policy.mlp_extractor.forward_actor(x))
        pre = model.policy.mlp_extractor.policy_net[0](x)
        h = torch.cat([pre.sin(), pre.cos()], -1)
        h = model.policy.mlp_extractor.policy_net[2](h)
        torch.testing.assert_close(mean, model.policy.action_net(torch.cat([h.sin(), h.cos()], -1)))


def test_dff_units_are_never_inactive_and_redo_zeroes_both_columns():
    net = nn.Sequential(nn.Linear(2, 3), DFF(), nn.Linear(6, 1))
    (layer,) = hidden_layers(net)
    x = torch.randn(5, 2)
    pre = net[0](x)
    h = net[1](pre)
    torch.testing.assert_close(layer.units(h), pre.sin().abs() + pre.cos().abs())
    assert bool((layer.unit_activity(h) >= 1 - 1e-6).all())  # |sin| + |cos| >= 1
    assert torch.equal(layer.out_columns(torch.tensor([2])), torch.tensor([2, 5]))
    np.testing.assert_allclose(layer.units(h.detach().numpy()), layer.units(h).detach().numpy())


def test_dff_diagnostics_read_both_halves():
    spec = agent_specs()["ppo-dff"]
    model, _ = build_model(spec, gym.make("Pendulum-v1"), seed=0)
    diag = D.Diagnostics(model, probe_size=256)
    diag.add_states(np.random.default_rng(0).uniform(-1, 1, size=(300, 3)))
    diag.after_update()
    row = diag.compute()
    net = model.policy.mlp_extractor.policy_net
    with torch.no_grad():
        h = net[1](net[0](torch.as_tensor(diag.probe, dtype=torch.float32))).double().numpy()
    assert h.shape == (256, 512)
    assert row["plasticity/policy/0/srank"] == D.srank(h)
    assert row["plasticity/policy/0/dormant_tau"] == 0.0  # a DFF unit is never dormant


def test_the_fast_path_leaves_dff_to_autograd():
    body = nn.Sequential(nn.Linear(3, 8), DFF())
    assert MlpPlan.of(body, nn.Linear(16, 1)) is None
    assert "DFF after a Linear layer" in MlpPlan.unsupported(body, nn.Linear(16, 1))


def test_fastppo_with_dff_makes_sb3s_updates():
    torch.set_num_threads(1)
    pk = dict(net_arch=dict(pi=[32, 32], vf=[32, 32]), activation_fn=DFF)
    a = PPO(ArchActorCriticPolicy, gym.make("Pendulum-v1"), policy_kwargs=pk, **KW)
    a.learn(512)
    b = FastPPO(ArchActorCriticPolicy, gym.make("Pendulum-v1"), policy_kwargs=pk, parallel_update=False, **KW)
    b.learn(512)
    assert b.update_paths[0][1] == "autograd"
    params = [torch.cat([p.detach().flatten() for p in m.policy.parameters()]) for m in (a, b)]
    torch.testing.assert_close(params[0], params[1], rtol=0, atol=0)


def test_sac_dff_builds_doubled_actor_and_critics_the_walker_sees():
    spec = agent_specs()["sac-dff"]
    spec = dataclasses.replace(spec, hyperparameters={**spec.hyperparameters, "buffer_size": 100})
    model, _ = build_model(spec, gym.make("Pendulum-v1"), seed=0)
    actor, critic = model.policy.actor, model.policy.critic
    assert [type(m).__name__ for m in actor.latent_pi] == ["Linear", "DFF", "Linear", "DFF"]
    assert (actor.latent_pi[2].in_features, actor.mu.in_features, actor.log_std.in_features) == (512, 512, 512)
    for q, q_target in zip(critic.q_networks, model.policy.critic_target.q_networks, strict=True):
        assert [type(m).__name__ for m in q] == ["Linear", "DFF", "Linear", "DFF", "Linear"]
        assert (q[0].in_features, q[2].in_features, q[4].in_features) == (4, 512, 512)
        assert all(torch.equal(a, b) for a, b in zip(q.parameters(), q_target.parameters(), strict=True))
    views = find_mlps(model)
    assert [v.name for v in views] == ["actor", "qf0", "qf1"]
    assert all(layer.doubled and activation_name(layer.act) == "dff" for v in views for layer in v.layers)
    assert views[0].layers[-1].outs == [actor.mu, actor.log_std]
    obs = torch.randn(5, 3)
    with torch.no_grad():
        pre = actor.latent_pi[0](obs)
        h = actor.latent_pi[2](torch.cat([pre.sin(), pre.cos()], -1))
        torch.testing.assert_close(actor.mu(actor.latent_pi(obs)), actor.mu(torch.cat([h.sin(), h.cos()], -1)))
    # every parameter is updated by its optimizer: the replaced modules are the optimized ones
    assert {id(p) for g in actor.optimizer.param_groups for p in g["params"]} == {id(p) for p in actor.parameters()}
    assert {id(p) for g in critic.optimizer.param_groups for p in g["params"]} == {id(p) for p in critic.parameters()}


def test_td3_and_others_refuse_dff_with_one_line():
    with pytest.raises(ConfigError, match="available for ppo and sac only"):
        dataclasses.replace(agent_specs()["ppo-dff"].network).validate("td3")


def test_an_unknown_activation_lists_dff():
    spec = agent_specs()["ppo-dff"]
    with pytest.raises(ConfigError, match="dff"):
        dataclasses.replace(spec.network, activation="fourier").validate("ppo")
