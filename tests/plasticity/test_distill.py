"""Policy distillation: the KL and value terms' gradients against their analytic forms on real
SB3 models, the bounded seeded store of regime states."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from crl.plasticity.distill import PolicyDistill, gaussian_kl
from tests._models import tiny_model


def _consolidated(algo: str, env: str = "Pendulum-v1", **args):
    """A model that trained one regime, stored it, then moved away from the stored outputs."""
    distill = {"samples": 40, "batch_size": 16, **args}
    model, ivs = tiny_model(algo, env=env, sizes=[16], interventions=[{"distill": distill}], boundary_aware=True)
    iv = ivs.interventions[0]
    model.learn(128)
    ivs.on_rollout_end()
    ivs.on_regime_change(1)
    assert len(iv.memory) == 40
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, p, _ in iv.params:
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model, iv


def _hook_batch(iv):
    """The batch the next ``_before_step`` draws (the memory's stream is put back)."""
    state = copy.deepcopy(iv.memory.rng.bit_generator.state)
    batch = {k: torch.as_tensor(v) for k, v in iv.memory.sample(iv.batch_size).items()}
    iv.memory.rng.bit_generator.state = state
    return batch


def _added_grads(iv, opt):
    for _, p, o in iv.params:
        if o is opt:
            p.grad = torch.zeros_like(p)
    with torch.no_grad():
        iv._before_step(opt)
    return {n: p.grad.clone() for n, p, o in iv.params if o is opt}


def test_gaussian_kl_is_the_closed_form_and_matches_torch():
    gen = torch.Generator().manual_seed(0)
    m1, m2, l1, l2 = (torch.randn(5, 3, generator=gen) for _ in range(4))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, l1.exp()), torch.distributions.Normal(m2, l2.exp())
    )
    assert torch.allclose(gaussian_kl(m1, l1, m2, l2), ref.sum(-1), atol=1e-5)
    assert not torch.allclose(gaussian_kl(m2, l2, m1, l1), ref.sum(-1), atol=1e-3)  # the direction matters


@pytest.mark.parametrize("strength,value_strength", [(1.0, 1.0), (0.5, 3.0), (2.0, 0.0)])
def test_ppo_gradients_equal_the_analytic_gaussian_kl_and_value_gradients(strength, value_strength):
    model, iv = _consolidated("ppo", strength=strength, value_strength=value_strength)
    policy = model.policy
    batch = _hook_batch(iv)
    with torch.no_grad():
        dist = policy.get_distribution(batch["obs"]).distribution
        m2, s2 = dist.mean, dist.stddev
        v = policy.predict_values(batch["obs"])
    m1, s1 = batch["mean"], batch["log_std"].exp()
    # d KL(N(m1, s1) || N(m2, s2)) / d m2 = (m2 - m1) / s2^2 ; / d log s2 = 1 - (s1^2 + (m1 - m2)^2) / s2^2
    d_mean = ((m2 - m1) / s2**2).mean(0)
    d_log_std = (1 - (s1**2 + (m1 - m2) ** 2) / s2**2).mean(0)
    d_value = (v - batch["values"]).mean(0)
    grads = _added_grads(iv, policy.optimizer)
    assert torch.allclose(grads["action_net.bias"], strength * d_mean, rtol=1e-4, atol=1e-6)
    assert torch.allclose(grads["log_std"], strength * d_log_std, rtol=1e-4, atol=1e-6)
    assert torch.allclose(grads["value_net.bias"], value_strength * d_value, rtol=1e-4, atol=1e-6)
    assert float(d_mean.abs().sum() + d_log_std.abs().sum()) > 1e-3  # the old and new policies differ
    assert iv.distilled_steps == 1


def test_sac_actor_and_critics_get_their_own_terms():
    model, iv = _consolidated("sac", strength=2.0, value_strength=0.5)
    actor, critic = model.actor, model.critic
    batch = _hook_batch(iv)
    with torch.no_grad():
        m2, log_s2, _ = actor.get_action_dist_params(batch["obs"])
    m1, s1, s2 = batch["mean"], batch["log_std"].exp(), log_s2.exp()
    grads = _added_grads(iv, actor.optimizer)
    assert torch.allclose(grads["actor.mu.bias"], 2.0 * ((m2 - m1) / s2**2).mean(0), rtol=1e-4, atol=1e-6)
    d_log_std = (1 - (s1**2 + (m1 - m2) ** 2) / s2**2).mean(0)
    assert torch.allclose(grads["actor.log_std.bias"], 2.0 * d_log_std, rtol=1e-4, atol=1e-6)
    assert not any(n.startswith("critic") for n in grads)
    batch = _hook_batch(iv)
    with torch.no_grad():
        q = torch.cat(critic(batch["obs"], batch["actions"]), dim=1)
    grads = _added_grads(iv, critic.optimizer)
    for k in range(q.shape[1]):  # the last layer's bias of Q_k: value_strength * mean(Q_k - Q_k^old)
        expected = 0.5 * (q[:, k] - batch["values"][:, k]).mean()
        last_bias = [n for n in grads if n.startswith(f"critic.qf{k}.") and n.endswith("bias")][-1]
        assert torch.allclose(grads[last_bias], expected.reshape(1), rtol=1e-4, atol=1e-6)


def test_categorical_policies_get_the_softmax_gradient():
    model, iv = _consolidated("ppo", env="CartPole-v1", value_strength=0.0)
    batch = _hook_batch(iv)
    with torch.no_grad():
        p_new = model.policy.get_distribution(batch["obs"]).distribution.probs
    p_old = torch.softmax(batch["logits"], -1)
    grads = _added_grads(iv, model.policy.optimizer)  # d KL(p_old || softmax(z)) / dz = softmax(z) - p_old
    assert torch.allclose(grads["action_net.bias"], (p_new - p_old).mean(0), rtol=1e-4, atol=1e-6)
    assert float(grads["value_net.bias"].abs().sum()) == 0.0


def _three_regimes():
    distill = {"samples": 40, "batch_size": 16, "capacity": 60}
    model, ivs = tiny_model("ppo", sizes=[16], interventions=[{"distill": distill}], boundary_aware=True)
    iv = ivs.interventions[0]
    seen = []
    for k in range(3):
        model.learn(128, reset_num_timesteps=False)
        ivs.on_rollout_end()  # crl's callbacks do this after every rollout
        seen.append(iv.regime.states["obs"].copy())
        assert len(seen[-1]) == 40  # the latest 40 of the rollout's 64 states
        ivs.on_regime_change(k + 1)
    return iv, seen


def test_the_store_is_bounded_seeded_and_holds_each_regimes_own_states():
    iv, seen = _three_regimes()
    assert len(iv.memory) == 60 and [len(s["obs"]) for s in iv.memory.stores] == [20, 20, 20]
    for k, store in enumerate(iv.memory.stores):  # every stored state is one of its regime's
        assert all((np.abs(seen[k] - o).sum(1) == 0).any() for o in store["obs"])
        assert not all((np.abs(seen[(k + 1) % 3] - o).sum(1) == 0).any() for o in store["obs"])
    again, _ = _three_regimes()
    assert all(np.array_equal(x["obs"], y["obs"]) for x, y in zip(iv.memory.stores, again.memory.stores, strict=True))
    saved = copy.deepcopy(iv.state_dict())
    first = iv.memory.sample(5)["obs"]
    iv.load_state_dict(saved)
    assert np.array_equal(iv.memory.sample(5)["obs"], first)


def test_distill_refuses_a_plain_module():
    net = torch.nn.Sequential(torch.nn.Linear(2, 1))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="distill needs an SB3 PPO or SAC model"):
        PolicyDistill().attach(net)
