"""Analytic tests of continual backprop, ReDo, Shrink & Perturb and resets on hand-built nets."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crl.errors import ConfigError
from crl.plasticity import attach
from crl.plasticity.units import ContinualBackprop, ReDo


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: weights move only by surgery
    return net


def _step(net: nn.Sequential, x: torch.Tensor) -> None:
    net.optimizer.zero_grad()
    net(x).sum().backward()
    net.optimizer.step()


def test_cbp_utilities_after_k_steps_equal_the_formula():
    net = _net()
    ivs = attach(net, [{"cbp": {"replacement_rate": 0.0, "maturity": 100, "decay": 0.9}}])
    cbp: ContinualBackprop = ivs.interventions[0]
    torch.manual_seed(1)
    xs = [torch.randn(5, 3) for _ in range(4)]
    u = torch.zeros(4)
    for x in xs:
        _step(net, x)
        h = torch.relu(net[0](x)).detach()
        u = 0.9 * u + 0.1 * net[2].weight.detach().abs().mean(0) * h.abs().mean(0)
    expected_hat = u / (1 - 0.9**4)
    torch.testing.assert_close(cbp.util["net/0"], u)
    torch.testing.assert_close(cbp.utilities(cbp.views[0], cbp.views[0].layers[0]), expected_hat)
    assert cbp.age["net/0"].tolist() == [4, 4, 4, 4]


def test_cbp_replaces_only_mature_lowest_utility_units_and_keeps_outputs():
    net = _net()
    with torch.no_grad():
        net[2].weight[:, 1] = 1e-3  # unit 1: tiny outgoing weights -> lowest utility
    ivs = attach(net, [{"cbp": {"replacement_rate": 0.5, "maturity": 3, "decay": 0.9, "seed": 0}}])
    cbp = ivs.interventions[0]
    x = torch.rand(8, 3) + 0.1
    for _ in range(3):  # not yet mature
        _step(net, x)
    assert cbp.replaced == 0
    before_in = net[0].weight.detach().clone()
    out_before = net(x).detach()
    cbp.age["net/0"][torch.tensor([0, 2, 3])] = 0  # only unit 1 can be eligible
    _step(net, x)  # r = 0.5 * 1 eligible -> replaced with probability 0.5; seed 0 draws it
    draws = []
    g = torch.Generator().manual_seed(0)
    draws.append(torch.rand(1, generator=g).item())
    assert (draws[0] < 0.5) == (cbp.replaced == 1)
    if cbp.replaced:
        assert not torch.equal(net[0].weight[1], before_in[1])
        torch.testing.assert_close(net[0].weight[[0, 2, 3]], before_in[[0, 2, 3]])
        assert torch.all(net[2].weight[:, 1] == 0) and net[0].bias[1] == 0
        torch.testing.assert_close(net(x), out_before - 0 * out_before)  # outgoing zero: output unchanged
        assert cbp.age["net/0"][1] == 0 and cbp.util["net/0"][1] == 0


def test_cbp_replacement_rate_on_average():
    net = nn.Sequential(nn.Linear(3, 50), nn.ReLU(), nn.Linear(50, 1))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    ivs = attach(net, [{"cbp": {"replacement_rate": 0.004, "maturity": 0, "seed": 3}}])
    x = torch.randn(4, 3)
    for _ in range(500):
        _step(net, x)
    # 50 eligible units x 0.004 = 0.2 expected replacements per step -> 100 over 500 steps
    assert 70 <= ivs.interventions[0].replaced <= 130


def test_cbp_output_unchanged_at_replacement_with_floor_rate():
    net = nn.Sequential(nn.Linear(3, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2))
    net.optimizer = torch.optim.Adam(net.parameters(), lr=0.0)
    ivs = attach(net, [{"cbp": {"replacement_rate": 0.3, "maturity": 0, "reset_optimizer_state": True}}])
    x = torch.randn(6, 3)
    _step(net, x)  # r = 3 per layer: floor(3) = 3 replaced in each of the 2 layers
    assert ivs.interventions[0].replaced == 6
    out = net(x).detach()
    net.optimizer.zero_grad()
    assert torch.isfinite(out).all()
    replaced = (net[4].weight == 0).all(0).nonzero().flatten()
    assert len(replaced) == 3
    assert torch.all(net.optimizer.state[net[2].weight]["exp_avg"][replaced] == 0)
    assert torch.all(net.optimizer.state[net[4].weight]["exp_avg"][:, replaced] == 0)


def test_redo_scores_and_recycled_set_on_constructed_activations():
    h = torch.tensor([[0.0, 1.0, 2.0, 0.05], [0.0, 1.0, 2.0, 0.05]])
    s = ReDo.scores(h)
    torch.testing.assert_close(s, torch.tensor([0.0, 1.0, 2.0, 0.05]) / 0.7625)
    net = _net()
    with torch.no_grad():
        net[0].weight[0] = -1.0  # unit 0 dead for positive inputs
        net[0].bias[0] = -1.0
    net.optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    ivs = attach(net, [{"redo": {"tau": 0.1, "every": 2}}])
    x = torch.rand(16, 3)
    _step(net, x)
    assert ivs.interventions[0].recycled == 0  # not yet: every 2 steps
    _step(net, x)
    assert ivs.interventions[0].recycled >= 1
    assert torch.all(net[2].weight[:, 0] == 0)
    assert torch.all(net.optimizer.state[net[0].weight]["exp_avg"][0] == 0)


def test_shrink_perturb_is_affine_in_the_weights():
    net = _net()
    w = net[0].weight.detach().clone()
    ivs = attach(net, [{"shrink_perturb": {"shrink": 0.5, "sigma": 0.0}}])
    _step(net, torch.randn(2, 3))
    torch.testing.assert_close(net[0].weight, 0.5 * w)
    del ivs


def test_reset_last_layer_at_regime_change_only_for_boundary_aware_agents():
    net = _net()
    w0, w2 = net[0].weight.detach().clone(), net[2].weight.detach().clone()
    blind = attach(net, [{"reset": {"layers": 1}}], boundary_aware=False)
    blind.on_regime_change(1)
    assert torch.equal(net[2].weight, w2)
    aware = attach(net, [{"reset": {"layers": 1}}], boundary_aware=True)
    aware.on_regime_change(1)
    assert not torch.equal(net[2].weight, w2) and torch.equal(net[0].weight, w0)


def test_state_dict_round_trip_continues_identically():
    a = _net()
    a.optimizer = torch.optim.Adam(a.parameters(), lr=1e-2)
    ia = attach(a, [{"cbp": {"replacement_rate": 0.2, "maturity": 2, "seed": 5}}])
    x = torch.randn(8, 3)
    for _ in range(5):
        _step(a, x)
    b = _net(seed=7)
    b.load_state_dict(a.state_dict())
    b.optimizer = torch.optim.Adam(b.parameters(), lr=1e-2)
    b.optimizer.load_state_dict(copy.deepcopy(a.optimizer.state_dict()))
    ib = attach(b, [{"cbp": {"replacement_rate": 0.2, "maturity": 2, "seed": 99}}])
    ib.load_state_dict(copy.deepcopy(ia.state_dict()))
    for _ in range(10):
        _step(a, x)
        _step(b, x)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)
    assert ia.interventions[0].replaced == ib.interventions[0].replaced > 0


@pytest.mark.parametrize(
    "spec",
    [
        {"cbp": {"replacement_rate": -1}},
        {"cbp": {"maturity": -5}},
        {"cbp": {"decay": 1.0}},
        {"cbp": {"utility": "magic"}},
        {"cbp": {"init": "zeros"}},
        {"redo": {"every": 0}},
        {"shrink_perturb": {"shrink": 0.0}},
        {"reset": {"layers": 0}},
        {"cbp": {"bogus": 1}},
        {"unknown_method": {}},
    ],
)
def test_bad_hyperparameters(spec):
    with pytest.raises(ConfigError):
        attach(_net(), [spec])


def test_injection_leaves_outputs_unchanged_then_learns_through_the_new_head():
    net = _net()
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    ivs = attach(net, [{"injection": {"at_step": 0}}], boundary_aware=True)
    x = torch.randn(5, 3)
    before = net(x).detach()
    old_w = net[2].weight.detach().clone()
    ivs.on_regime_change(1)
    torch.testing.assert_close(net(x), before)
    _step(net, x)
    assert torch.equal(net[2].old.weight, old_w)  # the old head is frozen
    assert not torch.allclose(net(x), before)  # the new head learns


def test_injection_resumed_from_its_state_draws_the_next_heads_as_uninterrupted():
    """Restoring an injection rebuilds the injected heads (drawing from its generator); the
    generator is then set back, so the next injection gets the heads of the uninterrupted run.
    """

    def setup():
        net = _net()
        return net, attach(net, [{"injection": {"at_step": 0}}], boundary_aware=True)

    net, ivs = setup()
    ivs.on_regime_change(1)
    state, weights = ivs.state_dict(), copy.deepcopy(net.state_dict())
    ivs.on_regime_change(2)
    resumed, rivs = setup()
    rivs.load_state_dict(state)
    resumed.load_state_dict(weights)
    rivs.on_regime_change(2)
    for (name, a), (_, b) in zip(net.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_injection_into_sac_critics_injects_into_their_targets_too():
    """The target critic's heads follow the online ones: outputs unchanged at injection, the
    parameters still pair one to one for Polyak averaging, and training goes on.
    """
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.utils import polyak_update

    model = SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=20, seed=0, policy_kwargs={"net_arch": [16, 16]})
    model.learn(40)  # the target now differs from the online critic
    ivs = attach(model, [{"injection": {"at_regime_change": True}}], boundary_aware=True)
    obs, act = torch.randn(7, 3), torch.rand(7, 1) * 4 - 2
    with torch.no_grad():
        before = [torch.cat(c(obs, act), 1) for c in (model.critic, model.critic_target)]
    ivs.on_regime_change(1)
    with torch.no_grad():
        after = [torch.cat(c(obs, act), 1) for c in (model.critic, model.critic_target)]
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a, b)
    online, target = list(model.critic.parameters()), list(model.critic_target.parameters())
    assert [p.shape for p in online] == [p.shape for p in target]
    polyak_update(online, target, 0.5)
    model.learn(60, reset_num_timesteps=False)  # SB3's own Polyak updates pair them too
    assert ivs.interventions[0].injections == 1


# -- CReLU and LayerNorm layers (crl.plasticity.nets walks them; the interventions handle them) --
def _crelu_net(norm: bool = False) -> nn.Sequential:
    from crl.plasticity.nets import CReLU

    torch.manual_seed(0)
    mods: list[nn.Module] = [nn.Linear(3, 4), *([nn.LayerNorm(4)] if norm else []), CReLU(), nn.Linear(8, 2)]
    net = nn.Sequential(*mods)
    net.optimizer = torch.optim.Adam(net.parameters(), lr=0.0)  # weights move only by surgery
    return net


def test_redo_on_crelu_scores_units_by_both_halves_and_zeroes_both_columns():
    net = _crelu_net()
    with torch.no_grad():
        net[0].weight[1] = 0.0  # unit 1: x = 0 on every input, so relu(x) = relu(-x) = 0
        net[0].bias[1] = 0.0
        net[0].weight[2] = 1.0  # unit 2: x > 0 (only its first half is ever active): not dormant
        net[0].bias[2] = 1.0
    ivs = attach(net, [{"redo": {"tau": 0.0, "every": 1}}])
    redo = ivs.interventions[0]
    (layer,) = redo.views[0].layers
    assert layer.doubled and layer.width == 4
    x = torch.rand(16, 3)
    out_before = net(x).detach()
    _step(net, x)
    assert redo.recycled == 1  # unit 1 only
    assert torch.all(net[2].weight[:, [1, 5]] == 0) and torch.all(net[2].weight[:, [2, 6]] != 0)
    torch.testing.assert_close(net(x), out_before)  # zero outgoing weights: outputs unchanged


@pytest.mark.parametrize("utility", ["contribution", "adaptable_contribution"])
def test_cbp_on_crelu_and_layernorm_keeps_per_unit_state_and_outputs(utility):
    net = _crelu_net(norm=True)
    spec = {"replacement_rate": 1.0, "maturity": 2, "decay": 0.9, "utility": utility}
    cbp = attach(net, [{"cbp": spec}]).interventions[0]
    (layer,) = cbp.views[0].layers
    assert layer.norm is net[1] and layer.outs == [net[3]]
    with torch.no_grad():
        net[1].weight.fill_(2.0)
    x = torch.rand(8, 3)
    _step(net, x)
    if utility == "adaptable_contribution":  # the running mean of each unit's |x| (both halves added)
        pre = net[1](net[0](x)).detach()
        torch.testing.assert_close(cbp.mean["net/0"], 0.1 * pre.abs().mean(0))
    _step(net, x)
    assert cbp.util["net/0"].shape == (4,) and cbp.replaced == 0
    out_before = net(x).detach()
    _step(net, x)  # all 4 units mature, r = 4: every unit replaced
    assert cbp.replaced == 4
    assert torch.all(net[3].weight == 0) and torch.all(net[1].weight == 1.0) and torch.all(net[1].bias == 0)
    torch.testing.assert_close(net(x), torch.zeros_like(out_before) + net[3].bias)


@pytest.mark.parametrize("agent", ["ppo-crelu", "ppo-layernorm"])
@pytest.mark.parametrize(
    "intervention",
    [{"redo": {"tau": 0.5, "every": 1}}, {"cbp": {"replacement_rate": 0.5, "maturity": 1, "decay": 0.9}}],
    ids=["redo", "cbp"],
)
def test_redo_and_cbp_train_catalog_crelu_and_layernorm_agents(agent, intervention):
    import dataclasses

    import gymnasium as gym

    from crl.agents import build_model
    from crl.catalog import agent_specs

    spec = agent_specs()[agent]
    hp = {**spec.hyperparameters, "n_steps": 64, "batch_size": 32, "n_epochs": 1}
    spec = dataclasses.replace(spec, hyperparameters=hp, interventions=[intervention])
    model, ivs = build_model(spec, gym.make("Pendulum-v1"), seed=0)
    (iv,) = ivs.interventions
    assert [len(view.layers) for view in iv.views] == [2, 2]
    layer = iv.views[0].layers[0]
    assert layer.doubled == (agent == "ppo-crelu") and (layer.norm is not None) == (agent == "ppo-layernorm")
    model.learn(128)
    assert (iv.recycled if isinstance(iv, ReDo) else iv.replaced) > 0
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
