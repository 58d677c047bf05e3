"""C-CHAIN: the churn penalty's gradient against the analytic one (PPO's output layer) and an
independent computation (SAC's critics and actor), lambda's adaptation, exact resume."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from crl.errors import ConfigError
from crl.plasticity.base import build
from crl.plasticity.churn import CChain, clipped_kl, mean_churn
from tests._models import tiny_model
from tests.plasticity.test_hare import resumed_equals_uninterrupted


def _hook_gradients(iv: CChain, optimizer) -> dict[str, torch.Tensor]:
    """The gradient the hook adds before ``optimizer``'s step (grads start at zero)."""
    params = [(n, p) for n, p, o in iv.params if o is optimizer]
    for _, p in params:
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        iv._before_step(optimizer)
    return {n: p.grad.clone() for n, p in params}


def test_ppo_penalty_gradient_equals_the_analytic_one():
    """mu = W h + c: d/dW lambda mean_{b,j} (mu - mu^-)^2 = lambda 2 / (B A) sum_b (mu_b - mu^-_b) h_b^T."""
    model, ivs = tiny_model(
        "ppo",
        hyperparameters={"batch_size": 16},
        sizes=[8, 8],
        network={"activation": "relu"},
        interventions=[{"cchain": {"initial_coef": 3.0}}],
    )
    iv = ivs.interventions[0]
    model.learn(128)  # two updates: a rollout in the buffer, theta^- from the last step
    opt = model.policy.optimizer
    with torch.no_grad():  # theta moves away from theta^- so the churn is not zero
        for p in model.policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    prev = {n: t.clone() for n, t in iv.prev[0].items()}
    state = copy.deepcopy(iv.rng.bit_generator.state)
    batch = iv._rollout_batch()
    iv.rng.bit_generator.state = state  # the hook draws the same reference batch
    grads = _hook_gradients(iv, opt)

    def forward(params, s):
        h = torch.relu(s @ params["mlp_extractor.policy_net.0.weight"].T + params["mlp_extractor.policy_net.0.bias"])
        h = torch.relu(h @ params["mlp_extractor.policy_net.2.weight"].T + params["mlp_extractor.policy_net.2.bias"])
        return h, h @ params["action_net.weight"].T + params["action_net.bias"]

    now = {n: p.detach() for n, p in model.policy.named_parameters()}
    h, mu = forward(now, batch["obs"])
    _, mu0 = forward(prev, batch["obs"])
    b, a = mu.shape
    d = 3.0 * 2 / (b * a) * (mu - mu0)
    assert torch.allclose(grads["action_net.weight"], d.T @ h, atol=1e-6)
    assert torch.allclose(grads["action_net.bias"], d.sum(0), atol=1e-6)
    assert grads["mlp_extractor.policy_net.0.weight"].abs().sum() > 0  # the hidden layers get theirs
    assert all(g.abs().sum() == 0 for n, g in grads.items() if "value" in n or n == "log_std")  # value_coef 0
    assert iv.last is not None and iv.last[1] == pytest.approx(float(mean_churn(mu, mu0)), rel=1e-5)


def test_sac_penalty_gradients_equal_an_independent_computation():
    model, ivs = tiny_model(
        "sac",
        sizes=[8, 8],
        network={"activation": "relu"},
        interventions=[{"cchain": {"value_coef": 0.4, "policy_coef": 0.01}}],
    )
    iv = ivs.interventions[0]
    model.learn(64)
    with torch.no_grad():
        for p in model.policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    old_critic, old_actor = copy.deepcopy(model.critic), copy.deepcopy(model.actor)
    old_critic.optimizer = old_actor.optimizer = None
    for k, module in ((1, old_critic), (0, old_actor)):  # the parameters before the previous steps
        prefix = "critic." if k == 1 else "actor."
        module.load_state_dict({n[len(prefix) :]: t for n, t in iv.prev[k].items()}, strict=False)
    state, gen = copy.deepcopy(iv.rng.bit_generator.state), iv.gen.get_state()
    batch = iv._replay_batch()
    iv.rng.bit_generator.state = state
    critic_grads = _hook_gradients(iv, model.critic.optimizer)
    actor_grads = _hook_gradients(iv, model.actor.optimizer)  # the same reference batch

    obs, act = batch["obs"], batch["actions"]
    with torch.no_grad():
        q0 = old_critic(obs, act)
    loss = 0.4 / 2 * sum(((q - q_0) ** 2).mean() for q, q_0 in zip(model.critic(obs, act), q0, strict=True))
    names = [n for n, _ in model.policy.named_parameters() if n.startswith("critic.")]
    expected = torch.autograd.grad(loss, [dict(model.policy.named_parameters())[n] for n in names])
    for n, g in zip(names, expected, strict=True):
        assert torch.allclose(critic_grads[n], g, atol=1e-6), n

    mean, log_std, _ = model.actor.get_action_dist_params(obs)
    with torch.no_grad():
        mean0, log_std0, _ = old_actor.get_action_dist_params(obs)
        x = mean + log_std.exp() * torch.randn(mean.shape, generator=torch.Generator().set_state(gen))
        a = torch.tanh(x)
        log_pi = Normal(mean, log_std.exp()).log_prob(x).sum(-1) - torch.log(1 - a**2 + 1e-6).sum(-1)
        q = torch.min(*model.critic(obs, a)).flatten()
        scale = (q - model.log_ent_coef.exp() * log_pi).abs().mean()
    kl = kl_divergence(Normal(mean, log_std.exp()), Normal(mean0, log_std0.exp())).sum(-1).clamp(0, 100).mean()
    names = [n for n, _ in model.policy.named_parameters() if n.startswith("actor.")]
    expected = torch.autograd.grad(0.01 * scale * kl, [dict(model.policy.named_parameters())[n] for n in names])
    for n, g in zip(names, expected, strict=True):
        assert torch.allclose(actor_grads[n], g, atol=1e-6), n
    assert sum(float(g.abs().sum()) for g in actor_grads.values()) > 0


def test_gaussian_kl_is_torchs():
    g = torch.Generator().manual_seed(0)
    mu, mu0, ls, ls0 = (torch.randn(5, 3, generator=g) for _ in range(4))
    ref = kl_divergence(Normal(mu, ls.exp()), Normal(mu0, ls0.exp())).sum(-1).clamp(0, 100).mean()
    assert torch.allclose(clipped_kl(mu, ls, mu0, ls0), ref, atol=1e-6)


def test_lambda_follows_the_target_ratio_after_the_warmup():
    iv = CChain(target_scale=0.1, initial_coef=7.0, warmup=3, window=2)
    pairs = [(1.0, 0.5), (2.0, 0.25), (3.0, 1.0), (5.0, 0.5)]
    coefs = []
    for pair in pairs:
        iv.last = pair
        iv.on_rollout_end()
        coefs.append(iv.coef)
    iv.on_rollout_end()  # no update since: nothing changes
    assert coefs[:2] == [7.0, 7.0]
    assert coefs[2] == pytest.approx(0.1 * np.mean([2.0, 3.0]) / (np.mean([0.25, 1.0]) + 1e-8))
    assert coefs[3] == pytest.approx(0.1 * np.mean([3.0, 5.0]) / (np.mean([1.0, 0.5]) + 1e-8))
    assert iv.coef == coefs[3] and iv.updates == 4


def test_arguments_and_models_are_checked():
    with pytest.raises(ConfigError, match="target_scale"):
        build([{"cchain": {"target_scale": -1}}])
    net = torch.nn.Sequential(torch.nn.Linear(2, 1))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="cchain needs an SB3 PPO or SAC model"):
        CChain().attach(net)


@pytest.mark.parametrize("agent", ["ppo-cchain", "sac-cchain"])
def test_kill_and_resume_through_crl_train(agent, tmp_path, monkeypatch):
    """lambda adapts from the second update on, so the saved history shapes the resumed run."""
    ppo = agent.startswith("ppo")
    resumed_equals_uninterrupted(
        agent, "[{cchain: {warmup: 2, window: 2}}]", tmp_path, monkeypatch, 640 if ppo else 200, 450 if ppo else 150
    )  # SAC: 150 updates, stopped at 150 after the checkpoint at 100, a regime change at 150
