"""Batched networks: the plug-ins treat each network of a BatchedLinear on its own, exactly as
they treat a plain network."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crl.errors import ConfigError
from crl.plasticity import attach
from crl.plasticity.nets import BatchedLinear, find_mlps
from crl.plasticity.upgd import UPGD

B = 3


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    batched = nn.Sequential(BatchedLinear(B, 4, 6), nn.ReLU(), BatchedLinear(B, 6, 1))
    singles = []
    for b in range(B):
        net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
        with torch.no_grad():
            for i in (0, 2):
                net[i].weight.copy_(batched[i].weight[b])
                net[i].bias.copy_(batched[i].bias[b])
        singles.append(net)
    return batched, singles


@pytest.mark.parametrize("utility", ["contribution", "adaptable_contribution"])
def test_batched_cbp_equals_cbp_on_each_network(utility):
    batched, singles = _pair()
    spec = [{"cbp": {"replacement_rate": 0.5, "maturity": 3, "utility": utility, "seed": 0}}]
    batched.optimizer = torch.optim.SGD(batched.parameters(), lr=0.05)
    ivb = attach(batched, spec).interventions[0]
    ivs = []
    for net in singles:
        net.optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
        ivs.append(attach(net, spec).interventions[0])
    gen = torch.Generator().manual_seed(1)
    for step in range(4):  # replacements start at step 3; afterwards fresh weights differ (own draws)
        x = torch.randn(B, 8, 4, generator=gen)
        y = torch.randn(B, 8, 1, generator=gen)
        batched.optimizer.zero_grad()
        ((batched(x) - y) ** 2).mean(dim=(1, 2)).sum().backward()
        batched.optimizer.step()
        for b, (net, iv) in enumerate(zip(singles, ivs, strict=True)):
            net.optimizer.zero_grad()
            ((net(x[b]) - y[b]) ** 2).mean().backward()
            net.optimizer.step()
            assert torch.equal(ivb.age["net/0"][b], iv.age["net/0"])
            assert torch.allclose(ivb.util["net/0"][b], iv.util["net/0"], atol=1e-6)
            replaced = iv.age["net/0"] == 0
            # the same units were replaced, with zero outgoing weights in both
            assert torch.equal(batched[2].weight[b][:, replaced], net[2].weight[:, replaced])
            kept = ~replaced  # every other unit: identical networks
            assert torch.allclose(batched[0].weight[b][kept], net[0].weight[kept], atol=1e-6)
        if step == 3:  # age 4 > maturity 3: r = 0.5 * 6 = 3 units per network and step
            assert ivb.replaced == sum(iv.replaced for iv in ivs) == 3 * B


def test_batched_shrink_perturb_draws_fresh_noise_per_network():
    batched, _ = _pair()
    batched.optimizer = torch.optim.SGD(batched.parameters(), lr=0.0)
    attach(batched, [{"shrink_perturb": {"shrink": 0.5, "sigma": 0.0}}])
    before = batched[0].weight.detach().clone()
    batched(torch.zeros(B, 1, 4)).sum().backward()
    batched.optimizer.step()
    assert torch.allclose(batched[0].weight, 0.5 * before)
    batched.optimizer = torch.optim.SGD(batched.parameters(), lr=0.0)
    iv = attach(batched, [{"shrink_perturb": {"shrink": 1.0, "sigma": 1.0, "init": "lecun_uniform"}}])
    iv.interventions[0].apply()
    noise = batched[0].weight.detach() - 0.5 * before
    assert noise.abs().max() <= (3 / 4) ** 0.5 + 1e-6  # the init bound of fan-in 4, not of the batch size
    assert not torch.allclose(noise[0], noise[1])


def test_find_mlps_sees_batched_layers():
    batched, _ = _pair()
    (view,) = find_mlps(batched, torch.optim.SGD(batched.parameters(), lr=0.1))
    layer = view.layers[0]
    assert layer.batched and layer.width == 6
    assert layer.outgoing_magnitude().shape == (B, 6)


def test_upgd_first_order_step_by_hand():
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = UPGD([w], lr=0.1, weight_decay=0.0, sigma=0.0, adaptive=False)
    w.grad = torch.tensor([0.5, 0.5])
    opt.step()  # s = sigmoid(-/+1000): the useful weight is frozen, the other takes lr * g
    assert w.detach().tolist() == pytest.approx([1.0 - 0.05, -1.0])


@pytest.mark.parametrize(("rate", "maturity"), [(0.05, 5), (0.5, 3)])  # r < 1: Bernoulli draws; r >= 1: floor(r)
def test_batched_cbp_is_seed_b_cbp_on_network_b_draw_for_draw(rate, maturity):
    """Network b of a batched CBP(seed=s) evolves as a single network under CBP(seed=s + b):
    the same Bernoulli outcomes, the same units replaced, the same fresh weights, for many steps."""
    batched, singles = _pair(seed=2)
    spec = {"replacement_rate": rate, "maturity": maturity, "utility": "adaptable_contribution"}
    batched.optimizer = torch.optim.SGD(batched.parameters(), lr=0.05)
    ivb = attach(batched, [{"cbp": {**spec, "seed": 10}}]).interventions[0]
    ivs = []
    for b, net in enumerate(singles):
        net.optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
        ivs.append(attach(net, [{"cbp": {**spec, "seed": 10 + b}}]).interventions[0])
    gen = torch.Generator().manual_seed(3)
    for _ in range(300):  # crosses NetworkDraws' block of 256 uniforms
        x = torch.rand(B, 1, 4, generator=gen)
        y = torch.randn(B, 1, 1, generator=gen)
        batched.optimizer.zero_grad()
        ((batched(x) - y) ** 2).sum().backward()
        batched.optimizer.step()
        for b, net in enumerate(singles):
            net.optimizer.zero_grad()
            ((net(x[b]) - y[b]) ** 2).sum().backward()
            net.optimizer.step()
    for b, (net, iv) in enumerate(zip(singles, ivs, strict=True)):
        assert torch.equal(ivb.age["net/0"][b], iv.age["net/0"])  # same replacements at the same steps
        for i in (0, 2):
            torch.testing.assert_close(batched[i].weight[b], net[i].weight, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(batched[i].bias[b], net[i].bias, rtol=1e-5, atol=1e-5)
    assert ivb.replaced == sum(iv.replaced for iv in ivs) > 3 * B


def test_batched_cbp_resumes_exactly():
    batched, _ = _pair(seed=4)
    spec = [{"cbp": {"replacement_rate": 0.05, "maturity": 2, "utility": "adaptable_contribution", "seed": 1}}]
    batched.optimizer = torch.optim.SGD(batched.parameters(), lr=0.05)
    iv = attach(batched, spec).interventions[0]
    gen = torch.Generator().manual_seed(0)
    data = [(torch.rand(B, 1, 4, generator=gen), torch.randn(B, 1, 1, generator=gen)) for _ in range(120)]

    def run(net, steps):
        for x, y in steps:
            net.optimizer.zero_grad()
            ((net(x) - y) ** 2).sum().backward()
            net.optimizer.step()

    run(batched, data[:60])
    saved_net, saved_iv = copy.deepcopy(batched.state_dict()), copy.deepcopy(iv.state_dict())
    run(batched, data[60:])
    resumed, _ = _pair(seed=4)
    resumed.load_state_dict(saved_net)
    resumed.optimizer = torch.optim.SGD(resumed.parameters(), lr=0.05)
    iv2 = attach(resumed, spec).interventions[0]
    iv2.load_state_dict(saved_iv)
    run(resumed, data[60:])
    assert iv2.replaced == iv.replaced > 0
    for i in (0, 2):
        assert torch.equal(resumed[i].weight, batched[i].weight)


def test_batched_cbp_with_adam_and_moment_resets_matches_single_networks():
    """The replacement bookkeeping of a batched network (fresh weights, zero outgoing weights,
    zero Adam moments, age, utility and running mean 0) is that of network b alone."""
    batched, singles = _pair(seed=5)
    spec = {"replacement_rate": 0.5, "maturity": 3, "utility": "adaptable_contribution", "reset_optimizer_state": True}
    batched.optimizer = torch.optim.Adam(batched.parameters(), lr=0.01)
    ivb = attach(batched, [{"cbp": {**spec, "seed": 20}}]).interventions[0]
    ivs = []
    for b, net in enumerate(singles):
        net.optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
        ivs.append(attach(net, [{"cbp": {**spec, "seed": 20 + b}}]).interventions[0])
    gen = torch.Generator().manual_seed(6)
    for step in range(8):
        x = torch.rand(B, 4, 4, generator=gen)
        y = torch.randn(B, 4, 1, generator=gen)
        batched.optimizer.zero_grad()
        ((batched(x) - y) ** 2).sum().backward()
        batched.optimizer.step()
        for b, (net, iv) in enumerate(zip(singles, ivs, strict=True)):
            net.optimizer.zero_grad()
            ((net(x[b]) - y[b]) ** 2).sum().backward()
            net.optimizer.step()
            assert torch.equal(ivb.age["net/0"][b], iv.age["net/0"])
            for state in ("util", "mean"):
                torch.testing.assert_close(getattr(ivb, state)["net/0"][b], getattr(iv, state)["net/0"])
            replaced = iv.age["net/0"] == 0
            if step == 3:  # age 4 > maturity 3: r = 0.5 * 6 = 3 units of every network
                assert int(replaced.sum()) == 3
            for i in (0, 2):
                torch.testing.assert_close(batched[i].weight[b], net[i].weight, rtol=1e-5, atol=1e-5)
                for moment in ("exp_avg", "exp_avg_sq"):
                    # batched and single matmuls sum in different orders: after 8 steps the moments
                    # differ by up to ~2e-5 relative on AVX2 machines (a missed reset differs by 100 %)
                    mb = batched.optimizer.state[batched[i].weight][moment][b]
                    torch.testing.assert_close(mb, net.optimizer.state[net[i].weight][moment], rtol=1e-4, atol=1e-8)
            assert torch.all(batched.optimizer.state[batched[0].weight]["exp_avg"][b][replaced] == 0)
            assert torch.all(batched.optimizer.state[batched[2].weight]["exp_avg"][b][:, replaced] == 0)
    assert ivb.replaced == sum(iv.replaced for iv in ivs) > 3 * B


@pytest.mark.parametrize("spec", ["redo", "reset", "injection"])
def test_interventions_without_batched_support_refuse_batched_networks(spec):
    batched, _ = _pair()
    batched.optimizer = torch.optim.SGD(batched.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=f"intervention '{spec}' does not handle batched networks"):
        attach(batched, [spec])


def _two_layer_cbp_run(steps: int = 400):
    torch.manual_seed(7)
    net = nn.Sequential(BatchedLinear(B, 4, 6), nn.ReLU(), BatchedLinear(B, 6, 5), nn.ReLU(), BatchedLinear(B, 5, 1))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    spec = {"replacement_rate": 0.03, "maturity": 5, "utility": "adaptable_contribution", "seed": 3}
    iv = attach(net, [{"cbp": spec}]).interventions[0]
    gen = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x, y = torch.rand(B, 1, 4, generator=gen), torch.randn(B, 1, 1, generator=gen)
        net.optimizer.zero_grad()
        ((net(x) - y) ** 2).sum().backward()
        net.optimizer.step()
    return net, iv


def test_cbp_look_ahead_skips_draws_and_changes_nothing(monkeypatch):
    """Batched CBP skips the draws of steps that cannot replace a unit (two layers: their
    draws interleave), with the very same weights, ages, utilities and random streams as
    drawing every step."""
    from crl.plasticity.units import ContinualBackprop, NetworkDraws

    skips = []
    real_skip = NetworkDraws.skip
    monkeypatch.setattr(NetworkDraws, "skip", lambda self: skips.append(1) or real_skip(self))
    fast_net, fast = _two_layer_cbp_run()
    monkeypatch.setattr(ContinualBackprop, "_look_ahead", lambda self, view: 0)
    n_skips = len(skips)
    slow_net, slow = _two_layer_cbp_run()
    assert n_skips > 50 and len(skips) == n_skips and fast.replaced == slow.replaced > 5
    assert all(torch.equal(a, b) for a, b in zip(fast_net.parameters(), slow_net.parameters(), strict=True))
    for name in ("age", "util", "mean"):
        assert all(torch.equal(getattr(fast, name)[k], getattr(slow, name)[k]) for k in fast.age)
    a, b = fast.state_dict()["draws"], slow.state_dict()["draws"]
    assert torch.equal(a["pos"], b["pos"]) and all(torch.equal(x, y) for x, y in zip(a["gens"], b["gens"], strict=True))
