"""EWC, MAS and L2-to-previous: importances, penalty gradients, real SB3 models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crl.plasticity.forgetting import EWC, MAS, L2Prev, SynapticIntelligence
from tests._models import tiny_model


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
    interventions = [{name: {"strength": 1.0, "samples": 50}}]
    model, ivs = tiny_model(algo, interventions=interventions, boundary_aware=True)
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


def _quadratic(a: torch.Tensor, w0: torch.Tensor) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(w0)
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net.loss = lambda: 0.5 * (a * net[0].weight ** 2).sum()
    return net


def _sgd_steps(net: nn.Sequential, n: int) -> None:
    for _ in range(n):
        net.optimizer.zero_grad()
        net.loss().backward()
        net.optimizer.step()


def test_si_importance_is_the_hand_computed_path_integral():
    """L = (a1 w1^2 + a2 w2^2) / 2 with SGD: w_t = w0 (1 - lr a)^t, g_t = a w_t,
    delta_t = -lr a w_t, so omega = sum_t lr a^2 w_t^2 and Omega = omega / (Delta^2 + xi)."""
    a, w0, lr, steps, xi = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, -1.0]]), 0.1, 7, 0.05
    net = _quadratic(a, w0)
    iv = SynapticIntelligence(c=1.0, xi=xi)
    iv.attach(net)
    _sgd_steps(net, steps)
    w = [w0 * (1 - lr * a) ** t for t in range(steps + 1)]
    omega = sum(lr * a**2 * wt**2 for wt in w[:-1])
    assert torch.allclose(iv.omega_running["0.weight"], omega, rtol=1e-5)
    assert torch.allclose(net[0].weight.detach(), w[-1], rtol=1e-5)
    iv.consolidate()
    expected = omega / ((w[-1] - w0) ** 2 + xi)
    assert torch.allclose(iv.omega["0.weight"], expected, rtol=1e-5)
    assert torch.equal(iv.anchor["0.weight"], net[0].weight.detach())
    assert torch.count_nonzero(iv.omega_running["0.weight"]) == 0


def test_si_path_integral_ignores_its_own_penalty_and_sums_regimes():
    """In the second regime the loss has no gradient: the penalty alone moves the weights, and
    the path integral (of the unregularised gradient) stays 0; consolidating adds nothing."""
    a = torch.tensor([[1.0, 3.0]])
    net = _quadratic(a, torch.tensor([[2.0, -1.0]]))
    iv = SynapticIntelligence(c=0.5, xi=0.1)
    iv.attach(net)
    _sgd_steps(net, 5)
    iv.consolidate()
    first = iv.omega["0.weight"].clone()
    anchor = iv.anchor["0.weight"].clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)  # away from the anchor
    net.loss = lambda: 0.0 * net[0].weight.sum()
    before = net[0].weight.detach().clone()
    _sgd_steps(net, 1)
    # the penalty c * Omega * (w - w*)^2 has gradient 2 c Omega (w - w*)
    assert torch.allclose(net[0].weight.detach(), before - 0.1 * 2 * 0.5 * first * (before - anchor), rtol=1e-5)
    assert torch.count_nonzero(iv.omega_running["0.weight"]) == 0
    assert torch.allclose(iv.penalty(), 0.5 * (first * (net[0].weight.detach() - anchor) ** 2).sum(), rtol=1e-5)
    iv.consolidate()
    assert torch.allclose(iv.omega["0.weight"], first)  # max(0, Omega + 0)


def test_si_negative_path_integral_is_clipped_at_zero():
    net = _quadratic(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.0]]))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1, maximize=True)  # delta = +lr g
    iv = SynapticIntelligence(c=1.0, xi=0.1)
    iv.attach(net)  # -g * delta = -lr g^2 < 0
    _sgd_steps(net, 3)
    assert (iv.omega_running["0.weight"] < 0).all()
    iv.consolidate()
    assert torch.count_nonzero(iv.omega["0.weight"]) == 0


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_si_on_real_sb3_models(algo):
    model, ivs = tiny_model(algo, interventions=[{"si": {}}], boundary_aware=True)
    model.learn(128)
    iv = ivs.interventions[0]
    assert sum(float(v.abs().sum()) for v in iv.omega_running.values()) > 0  # the hooks saw the steps
    ivs.on_regime_change(1)
    assert iv.consolidations == 1 and sum(float(v.sum()) for v in iv.omega.values()) > 0
    assert all(torch.isfinite(v).all() and (v >= 0).all() for v in iv.omega.values())
    if algo == "sac":
        assert any(n.startswith("critic.qf1") for n in iv.omega) and not any("target" in n for n in iv.omega)
    model.learn(64)  # the penalty now acts; training runs
