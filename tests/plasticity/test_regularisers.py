"""L2 Init, Parseval, weight clipping and the optimizer reset: analytic checks."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from crl.errors import ConfigError
from crl.plasticity.base import attach, build
from crl.plasticity.regularisers import INIT_BOUNDS, L2Init, OptimizerReset, Parseval, WeightClip


def _net(seed: int = 0, norm: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(3, 5)]
    if norm:
        layers.append(nn.LayerNorm(5))
    layers += [nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)]
    net = nn.Sequential(*layers)
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    return net


def _loss(net: nn.Module) -> torch.Tensor:
    x = torch.linspace(-1, 1, 12).reshape(4, 3)
    return (net(x) ** 2).mean()


@pytest.mark.parametrize("cls", [L2Init, Parseval])
def test_penalty_gradient_is_added_before_the_step(cls):
    """The step with the intervention equals plain SGD on loss + penalty (autograd)."""
    a, b = _net(), _net()
    iv = cls(strength=0.3)
    iv.attach(a)
    with torch.no_grad():  # move away from theta_0 so L2 Init has something to pull
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            p.add_(0.1)
            q.add_(0.1)
    for _ in range(3):
        a.optimizer.zero_grad()
        _loss(a).backward()
        a.optimizer.step()
        b.optimizer.zero_grad()
        if cls is L2Init:  # theta_0 of a is the init of b too (same seed)
            pen = 0.3 * sum(((p - t0) ** 2).sum() for p, t0 in zip(b.parameters(), iv.theta0.values(), strict=True))
        else:
            pen = sum(
                0.3 * ((w @ w.T - torch.eye(w.shape[0])) ** 2).sum() for w in (b[0].weight, b[2].weight)
            )  # hidden layers only
        (_loss(b) + pen).backward()
        b.optimizer.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_l2_init_gradient_is_2_lambda_delta():
    net = _net()
    iv = L2Init(strength=0.25)
    iv.attach(net)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.optimizer.zero_grad(set_to_none=False)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    iv._before_step(net.optimizer)
    assert torch.allclose(net[0].weight.grad, torch.full_like(net[0].weight, 0.5))  # 2 * 0.25 * 1
    assert torch.count_nonzero(net[2].weight.grad) == 0


def test_parseval_skips_output_layer_and_layernorm():
    net = _net(norm=True)
    iv = Parseval(strength=1.0)
    iv.attach(net)
    assert [w.shape for w, _ in iv.weights] == [torch.Size([5, 3]), torch.Size([4, 5])]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    iv._before_step(net.optimizer)
    assert torch.count_nonzero(net[5].weight.grad) == 0  # output layer
    assert torch.count_nonzero(net[1].weight.grad) == 0  # LayerNorm
    assert torch.count_nonzero(net[0].weight.grad) > 0


def test_parseval_orthogonal_rows_feel_no_pull():
    w = torch.linalg.qr(torch.randn(6, 6))[0][:4]  # 4 orthonormal rows
    assert Parseval.gradient(w, strength=1.0, scale=1.0).abs().max() < 1e-5
    assert Parseval.gradient(2 * w, strength=1.0, scale=4.0).abs().max() < 1e-4  # rows of norm^2 = 4


def test_weight_clip_bounds_every_linear_but_not_norms():
    net = _net(norm=True)
    iv = WeightClip(kappa=2.0)
    iv.attach(net)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(100.0)
    (_loss(net) * 0).backward()
    net.optimizer.step()
    for i, fan_in in ((0, 3), (3, 5), (5, 4)):
        bound = 2.0 * math.sqrt(3.0 / fan_in)
        assert torch.allclose(net[i].weight, torch.full_like(net[i].weight, bound))
        assert torch.allclose(net[i].bias, torch.full_like(net[i].bias, bound))
    assert torch.all(net[1].weight == 100.0)  # LayerNorm untouched


def test_weight_clip_bounds_match_the_init_distributions():
    from crl.plasticity.nets import INIT_FNS

    w = torch.empty(2000, 50)
    for name in INIT_BOUNDS:
        draw = INIT_FNS[name](w, torch.Generator().manual_seed(0))
        assert draw.abs().max() <= INIT_BOUNDS[name](50) < draw.abs().max() * 1.01


def test_optimizer_reset_clears_moments_only_at_regime_changes():
    net = _net()
    net.optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    ivs = attach(net, ["reset_optimizer"], boundary_aware=True)
    _loss(net).backward()
    net.optimizer.step()
    assert net.optimizer.state
    ivs.on_regime_change(1)
    assert not net.optimizer.state
    ivs.interventions[0].load_state_dict(ivs.interventions[0].state_dict())
    assert ivs.interventions[0].resets == 1


@pytest.mark.parametrize("name", ["reset_optimizer", "ewc", "mas", "l2_prev"])
def test_boundary_methods_refuse_unaware_agents(name):
    with pytest.raises(ConfigError, match="needs boundary_aware: true"):
        attach(_net(), [name], boundary_aware=False)


@pytest.mark.parametrize(
    "spec",
    [
        {"l2_init": {"strength": -1.0}},
        {"parseval": {"scale": 0.0}},
        {"weight_clip": {"kappa": -2.0}},
        {"weight_clip": {"init": "orthogonal"}},
        {"ewc": {"decay": 1.5}},
        {"mas": {"samples": 0}},
        {"l2_prev": {"strength": float("nan")}},
    ],
)
def test_bad_hyperparameters(spec):
    with pytest.raises(ConfigError):
        build([spec])


def test_state_round_trip_l2_init():
    a = _net()
    iv = L2Init(strength=0.1)
    iv.attach(a)
    b = _net(seed=1)
    iv2 = L2Init(strength=0.1)
    iv2.attach(b)
    iv2.load_state_dict(copy.deepcopy(iv.state_dict()))
    assert all(torch.equal(iv.theta0[k], iv2.theta0[k]) for k in iv.theta0)
    assert OptimizerReset.needs_boundaries and not L2Init.needs_boundaries
