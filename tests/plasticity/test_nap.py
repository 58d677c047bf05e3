"""Normalize-and-Project (``nap``, Lyle et al. 2024): per-group norms equal the initial ones after
every projection, the projection leaves a LayerNorm network's function unchanged, projections
happen on the right steps, a network without LayerNorm is refused, the state round-trips."""

import copy
import dataclasses

import gymnasium as gym
import pytest
import torch
from torch import nn

from crl.agents import build_model
from crl.catalog import agent_specs
from crl.errors import ConfigError
from crl.plasticity import attach
from crl.plasticity.nap import NormalizeAndProject, projection_groups
from crl.plasticity.nets import BatchedLinear, find_mlps


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(4, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 2)
    )
    with torch.no_grad():
        for m in net:  # non-zero biases and affine parameters: the projection must handle them
            if isinstance(m, (nn.Linear, nn.LayerNorm)):
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
    net.optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    return net


def _step(net: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 4, generator=gen), torch.randn(32, 2, generator=gen) * 5
    net.optimizer.zero_grad()
    (net(x) - y).pow(2).mean().backward()
    net.optimizer.step()


def _norms(groups) -> list[float]:
    return [float(torch.cat([p.detach().flatten() for p in g]).double().norm()) for g in groups]


def test_every_groups_norm_equals_its_initial_norm_after_every_projection():
    net = _net()
    (nap,) = attach(net, [{"nap": {}}]).interventions
    groups = projection_groups(find_mlps(net)[0])
    assert [len(g) for g in groups] == [2, 2, 2, 2, 2]  # (W, b) and (gain, offset) per hidden layer, the head
    assert [g[0] for g in nap.groups] == [net[0].weight, net[1].weight, net[3].weight, net[4].weight, net[6].weight]
    initial = _norms(groups)
    torch.testing.assert_close([float(r) for r in nap.radii], initial)
    for k in range(5):
        _step(net, k)
        torch.testing.assert_close(_norms(groups), initial, rtol=1e-6, atol=0)
    assert nap.projections == 5

    plain = _net()  # the same updates without NaP move every norm
    for k in range(5):
        _step(plain, k)
    moved = _norms(projection_groups(find_mlps(plain)[0]))
    assert all(abs(a - b) > 1e-3 * b for a, b in zip(moved, initial, strict=True))


def test_the_projection_of_the_hidden_layers_leaves_the_function_unchanged():
    """Each hidden Linear is followed by a LayerNorm: rescaling its weight and bias together
    changes nothing downstream (up to LayerNorm's eps), while the norms change a lot."""
    net = _net()
    (nap,) = attach(net, [{"nap": {"every": 1000, "norm_params": False, "output": False}}]).interventions
    for k in range(20):
        _step(net, k)  # no projection yet (every 1000)
    before = _norms(nap.groups)
    assert all(abs(b / float(r) - 1) > 0.02 for b, r in zip(before, nap.radii, strict=True))
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        out, hidden = net(x), net[:3](x)
        wrong = copy.deepcopy(net)  # rescaling the weight alone is not invariant (biases are not 0)
        wrong[0].weight.mul_(float(nap.radii[0]) / before[0])
        assert (wrong(x) - out).abs().max() > 1e-2
        nap.project()
        # equal up to LayerNorm's eps (1e-5 against a variance that the projection changes)
        torch.testing.assert_close(net[:3](x), hidden, rtol=0, atol=2e-4)
        torch.testing.assert_close(net(x), out, rtol=0, atol=2e-4)
    torch.testing.assert_close(_norms(nap.groups), [float(r) for r in nap.radii], rtol=1e-6, atol=0)


def test_projections_happen_every_n_steps_of_each_optimizer():
    net = _net()
    (nap,) = attach(net, [{"nap": {"every": 3}}]).interventions
    radius = float(nap.radii[0])
    on_sphere = []
    for k in range(7):
        _step(net, k)
        on_sphere.append(abs(_norms(nap.groups[:1])[0] - radius) < 1e-6 * radius)
    assert on_sphere == [False, False, True, False, False, True, False]
    assert nap.counts == [7] and nap.projections == 2


def test_batched_networks_are_projected_per_network():
    torch.manual_seed(0)
    net = nn.Sequential(BatchedLinear(3, 4, 8), nn.LayerNorm(8), nn.ReLU(), BatchedLinear(3, 8, 1))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    (nap,) = attach(net, [{"nap": {"norm_params": False}}]).interventions
    radii = [r.clone() for r in nap.radii]
    assert radii[0].shape == (3,)
    net(torch.randn(3, 16, 4)).pow(2).sum().backward()
    net.optimizer.step()
    for g, r in zip(nap.groups, radii, strict=True):
        w, b = g
        per_net = (w.detach().double().pow(2).sum((1, 2)) + b.detach().double().pow(2).sum(1)).sqrt()
        torch.testing.assert_close(per_net, r, rtol=1e-6, atol=0)


def test_a_network_without_layernorm_is_refused_with_one_line():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"set network\.layer_norm: true"):
        attach(net, [{"nap": {}}])
    spec = agent_specs()["ppo"]
    with pytest.raises(ConfigError, match="has no LayerNorm"):
        build_model(dataclasses.replace(spec, interventions=[{"nap": {}}]), gym.make("Pendulum-v1"), seed=0)


@pytest.mark.parametrize(("args", "message"), [({"every": 0}, "every"), ({"norm_params": 1}, "true or false")])
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(ConfigError, match=message):
        NormalizeAndProject(**args)


def test_ppo_nap_projects_policy_value_and_heads_and_its_state_round_trips():
    spec = agent_specs()["ppo-nap"]
    spec = dataclasses.replace(spec, hyperparameters={**spec.hyperparameters, "n_steps": 64, "batch_size": 32})
    model, ivs = build_model(spec, gym.make("Pendulum-v1"), seed=0)
    (nap,) = ivs.interventions
    p = model.policy
    ext = p.mlp_extractor
    firsts = [g[0] for g in nap.groups]
    for seq, head in ((ext.policy_net, p.action_net), (ext.value_net, p.value_net)):
        assert [seq[0].weight, seq[1].weight, seq[3].weight, seq[4].weight, head.weight] == [
            f for f in firsts if any(f is q for q in [*seq.parameters(), *head.parameters()])
        ]
    assert len(nap.groups) == 10 and all(p.log_std is not f for f in firsts)
    model.learn(64)  # 10 epochs of 2 minibatches: 20 steps, 20 projections
    torch.testing.assert_close(_norms(nap.groups), [float(r) for r in nap.radii], rtol=1e-6, atol=0)
    state = nap.state_dict()
    fresh = NormalizeAndProject()
    fresh.attach(build_model(spec, gym.make("Pendulum-v1"), seed=1)[0])
    fresh.load_state_dict(state)
    assert fresh.counts == nap.counts == [20] and fresh.projections == nap.projections == 20
    torch.testing.assert_close(fresh.radii, nap.radii)


def test_sac_nap_projects_actor_and_critics_after_each_of_their_steps():
    spec = agent_specs()["sac-nap"]
    hp = {**spec.hyperparameters, "buffer_size": 200, "learning_starts": 20, "batch_size": 16}
    model, ivs = build_model(dataclasses.replace(spec, hyperparameters=hp), gym.make("Pendulum-v1"), seed=0)
    (nap,) = ivs.interventions
    actor, critic = model.policy.actor, model.policy.critic
    assert nap.optimizers == [actor.optimizer, critic.optimizer]
    assert [type(m).__name__ for m in critic.qf0] == [
        "Linear",
        "LayerNorm",
        "ReLU",
        "Linear",
        "LayerNorm",
        "ReLU",
        "Linear",
    ]
    # actor: 2 x ((W, b), (gain, offset)) + mu + log_std; each critic: 2 x 2 + its head
    assert len(nap.groups) == 6 + 2 * 5
    model.learn(50)  # 30 gradient steps of each optimizer
    assert nap.counts == [30, 30]
    torch.testing.assert_close(_norms(nap.groups), [float(r) for r in nap.radii], rtol=1e-6, atol=0)
    target = model.policy.critic_target.qf0[0].weight  # the target is left to Polyak averaging
    assert not torch.equal(target, critic.qf0[0].weight)
