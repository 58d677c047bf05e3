"""EWC, MAS and L2-to-previous: importances, penalty gradients, real SB3 models."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest
import torch
from torch import nn

from crl.plasticity.forgetting import EWC, MAS, L2Prev


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    return net


def test_ewc_penalty_gradient_is_fisher_times_distance():
    """d/dtheta (1/2) sum F (theta - theta*)^2 = F * (theta - theta*) with lambda = 1."""
    net = _net()
    iv = EWC(strength=1.0)
    iv.attach(net)
    iv.consolidate(torch.randn(16, 3))
    fisher = {k: v.clone() for k, v in iv.omega.items()}
    anchor = {k: v.clone() for k, v in iv.anchor.items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    expected = {n: fisher[n] * (p.detach() - anchor[n]) for n, p in net.named_parameters()}
    iv.penalty().backward()  # autograd of the penalty
    for n, p in net.named_parameters():
        assert torch.allclose(p.grad, expected[n], atol=1e-6)
    for p in net.parameters():  # the step hook adds exactly the same
        p.grad = torch.zeros_like(p)
    iv._before_step(net.optimizer)
    for n, p in net.named_parameters():
        assert torch.allclose(p.grad, expected[n], atol=1e-6)


def test_ewc_fisher_of_a_linear_gaussian_policy_by_hand():
    """mu = W x with sigma = 1: F_W[j, i] = mean_b x_bi^2 for every output j."""
    net = nn.Sequential(nn.Linear(2, 3, bias=False))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    iv = EWC(strength=1.0)
    iv.attach(net)
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    iv.consolidate(x)
    assert torch.allclose(iv.omega["0.weight"], (x**2).mean(0).expand(3, 2))


def test_importances_accumulate_with_decay():
    net = _net()
    iv = EWC(strength=1.0, decay=0.5)
    iv.attach(net)
    x = torch.randn(8, 3)
    iv.consolidate(x)
    first = {k: v.clone() for k, v in iv.omega.items()}
    iv.consolidate(x)  # same params, same states: same new Fisher
    for k in first:
        assert torch.allclose(iv.omega[k], 1.5 * first[k])
    assert iv.consolidations == 2


def test_mas_importance_by_hand():
    net = nn.Sequential(nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0]]))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    iv = MAS(strength=1.0)
    iv.attach(net)
    x = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    iv.consolidate(x)
    # f = w.x, d f^2 / dw = 2 f x: sample 1: 2 * -1 * [1, 1]; sample 2: 2 * 2 * [2, 0]
    assert torch.allclose(iv.omega["0.weight"], torch.tensor([[(2 + 8) / 2, (2 + 0) / 2]]))


def test_l2_prev_pulls_to_the_last_anchor_only():
    net = _net()
    iv = L2Prev(strength=2.0)
    iv.attach(net)
    iv.consolidate()  # no states needed
    with torch.no_grad():
        net[0].bias.add_(1.0)
    iv.consolidate()  # the new anchor
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    iv._before_step(net.optimizer)
    assert all(torch.count_nonzero(p.grad) == 0 for p in net.parameters())


def test_no_penalty_before_the_first_regime_ends():
    net = _net()
    iv = EWC()
    iv.attach(net)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    iv._before_step(net.optimizer)
    assert all(torch.count_nonzero(p.grad) == 0 for p in net.parameters())


@pytest.mark.parametrize("algo", ["ppo", "sac"])
@pytest.mark.parametrize("name", ["ewc", "mas"])
def test_importances_on_real_sb3_models(algo, name):
    from crl.agents import build_model
    from crl.spec import AgentSpec

    hp = (
        {"n_steps": 64, "batch_size": 32, "n_epochs": 1}
        if algo == "ppo"
        else {"learning_starts": 32, "buffer_size": 500, "batch_size": 16}
    )
    spec = AgentSpec.from_dict(
        {
            "description": "t",
            "algo": algo,
            "hyperparameters": hp,
            "interventions": [{name: {"strength": 1.0, "samples": 50}}],
            "boundary_aware": True,
        },
        "t",
    )
    model, ivs = build_model(spec, gym.make("Pendulum-v1"), seed=0)
    model.learn(128)
    ivs.on_rollout_end()
    iv = ivs.interventions[0]
    ivs.on_regime_change(1)
    assert iv.consolidations == 1
    names = set(iv.omega)
    if algo == "ppo":
        assert {"log_std", "action_net.weight", "value_net.weight", "mlp_extractor.value_net.0.weight"} <= names
        if name == "ewc":  # the Fisher of log sigma is exactly 2 (Gaussian, log-std parameter)
            assert torch.allclose(iv.omega["log_std"], torch.full_like(iv.omega["log_std"], 2.0))
    else:
        assert any(n.startswith("actor.") for n in names) and any(n.startswith("critic.qf1") for n in names)
        assert not any(n.startswith("critic_target") for n in names)
    assert all(torch.isfinite(v).all() and (v >= 0).all() for v in iv.omega.values())
    assert sum(float(v.sum()) for v in iv.omega.values()) > 0
    saved = copy.deepcopy(iv.state_dict())
    model.learn(64)  # the penalty now acts; training runs
    iv.load_state_dict(saved)
    assert iv.consolidations == 1


def test_a_regime_without_states_leaves_importances_alone():
    net = _net()
    iv = EWC(strength=1.0)
    iv.attach(net)
    iv.consolidate(torch.zeros(0, 3))
    assert iv.omega == {} and iv.consolidations == 1 and set(iv.anchor) == {n for n, _ in net.named_parameters()}
