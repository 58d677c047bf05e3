"""Generative replay: the VAE learns a fixed distribution and keeps its previous self's one,
distillation sees generated states only, the teacher is frozen, on real SB3 models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from crl.plasticity.distill import distill_loss, policy_outputs, value_outputs
from crl.plasticity.generative import GenerativeDistill, ObservationVAE
from tests._models import tiny_model


def _blob(n: int, centre: float, gen: torch.Generator) -> torch.Tensor:
    """Correlated 6-D states: a 2-D latent mapped linearly, plus small noise, around ``centre``."""
    mix = torch.tensor([[1.0, 0.5, -0.3, 0.0, 2.0, 0.1], [0.0, 1.0, 0.8, -1.0, 0.0, 0.3]])
    return centre + torch.randn(n, 2, generator=gen) @ mix + 0.05 * torch.randn(n, 6, generator=gen)


def test_reconstruction_loss_falls_on_a_fixed_distribution():
    gen = torch.Generator().manual_seed(0)
    train, held_out = _blob(2000, 1.0, gen), _blob(500, 1.0, gen)
    vae = ObservationVAE(6, latent=4, hidden=32, generator=gen)
    vae.shift.copy_(train.mean(0))
    vae.scale.copy_(train.std(0))
    before = float(vae.losses(held_out)[1].detach())
    vae.fit(train, steps=400, batch_size=64, generator=gen)
    after = float(vae.losses(held_out)[1].detach())
    assert after < 0.25 * before, (before, after)
    samples = vae.sample(2000, gen)  # generated states look like the data
    assert torch.allclose(samples.mean(0), train.mean(0), atol=0.3)
    assert float((samples.std(0) / train.std(0)).min()) > 0.5


@pytest.mark.parametrize("replay", [True, False])
def test_the_vae_keeps_its_previous_selfs_distribution_only_with_replay(replay):
    gen = torch.Generator().manual_seed(1)
    vae = ObservationVAE(6, latent=4, hidden=32, generator=gen)
    vae.fit(_blob(2000, 6.0, gen), steps=400, batch_size=64, generator=gen)
    data = _blob(2000, -6.0, gen)
    if replay:
        data = torch.cat([data, copy.deepcopy(vae).sample(2000, gen)])
    vae.fit(data, steps=400, batch_size=64, generator=gen)
    near_old = float((vae.sample(4000, gen).mean(1) > 3.0).float().mean())
    if replay:
        assert 0.3 < near_old < 0.7  # both regimes, about equally
    else:
        assert near_old < 0.02  # the first regime is forgotten


GENREPLAY = {"samples": 60, "batch_size": 16, "vae_steps": 50, "vae_batch": 32, "latent": 2, "hidden": 16}
"""A small generative replay: a VAE of 2 latents, 16 hidden units, fitted in 50 steps."""


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_distillation_sees_only_generated_states_and_a_frozen_teacher(algo):
    model, ivs = tiny_model(algo, sizes=[16], interventions=[{"genreplay": GENREPLAY}], boundary_aware=True)
    iv = ivs.interventions[0]
    model.learn(128)
    ivs.on_rollout_end()
    real = iv.regime.states  # the regime's states before the change (PPO)
    real = real["obs"].copy() if real is not None else model.replay_buffer.observations[:128, 0].copy()
    with torch.no_grad():
        before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    ivs.on_regime_change(1)
    assert iv.regime.states is None and iv.consolidations == 1  # nothing of the regime is kept
    assert not any(isinstance(v, np.ndarray) and v.ndim == 2 for v in iv.state_dict()["regime"].values())
    generated, seen = [], []
    original = iv.generate

    def recording(n):
        out = original(n)
        generated.append(out.clone())
        return out

    iv.generate = recording
    student = model.actor.features_extractor if algo == "sac" else model.policy.pi_features_extractor
    handle = student.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    for _, p, _ in iv.params:
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        for opt in iv.optimizers:
            iv._before_step(opt)
    handle.remove()
    assert generated and seen and iv.distilled_steps == len(iv.optimizers)
    gen_rows = torch.cat(generated)
    for x in seen:  # every state the student was evaluated on was generated
        assert all(bool((gen_rows == row).all(1).any()) for row in x.reshape(len(x), -1))
        assert not any(bool((torch.as_tensor(real) == row).all(1).any()) for row in x.reshape(len(x), -1))
    assert sum(float(p.grad.abs().sum()) for _, p, _ in iv.params) < 1e-5  # the student is the teacher yet
    with torch.no_grad():  # the teacher holds the parameters of the change, however the student moves
        for _, p, _ in iv.params:
            p.add_(0.5)
    teacher_state = {k: v for net in vars(iv.teacher).values() for k, v in net.state_dict().items()}
    for k, v in teacher_state.items():
        full = (
            k if algo == "ppo" else next(n for n in before if n.endswith(k) and n.split(".")[0] in ("actor", "critic"))
        )
        assert torch.equal(v, before[full])


def test_the_gradient_is_the_distillation_loss_on_generated_states():
    genreplay = {**GENREPLAY, "strength": 2.0, "value_strength": 0.5}
    model, ivs = tiny_model("ppo", sizes=[16], interventions=[{"genreplay": genreplay}], boundary_aware=True)
    iv = ivs.interventions[0]
    model.learn(128)
    ivs.on_rollout_end()
    ivs.on_regime_change(1)
    with torch.no_grad():
        for _, p, _ in iv.params:
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    state = iv.generator.get_state()
    obs = iv.generate(iv.batch_size)
    iv.generator.set_state(state)
    with torch.no_grad():
        batch = {"obs": obs, **policy_outputs(iv.teacher, obs), "values": value_outputs(iv.teacher, obs)}
    params = [p for _, p, _ in iv.params]
    expected = torch.autograd.grad(distill_loss(model, batch, 2.0, 0.5, "both"), params, allow_unused=True)
    for p in params:
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        iv._before_step(model.policy.optimizer)
    for p, e in zip(params, expected, strict=True):
        assert torch.allclose(p.grad, torch.zeros_like(p) if e is None else e, atol=1e-6)
    assert sum(float(p.grad.abs().sum()) for p in params) > 0


def test_genreplay_refuses_a_plain_module():
    net = torch.nn.Sequential(torch.nn.Linear(2, 1))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="genreplay needs an SB3 PPO or SAC model"):
        GenerativeDistill().attach(net)
