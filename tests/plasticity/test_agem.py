"""A-GEM: the projection formula, the episodic memory, reference gradients on real SB3 models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from crl.plasticity.agem import AGEM, EpisodicMemory, project
from tests._models import tiny_model


@pytest.mark.parametrize("seed", range(5))
def test_projection_equals_the_formula_and_never_opposes_the_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    g = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
    r = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
    flat_g, flat_r = torch.cat([x.flatten() for x in g]), torch.cat([x.flatten() for x in r])
    if float(flat_g @ flat_r) >= 0:  # make it a violation
        g = [-x for x in g]
        flat_g = -flat_g
    new, projected = project(g, r)
    assert projected
    expected = flat_g - (flat_g @ flat_r) / (flat_r @ flat_r) * flat_r
    flat_new = torch.cat([x.flatten() for x in new])
    assert torch.allclose(flat_new, expected, atol=1e-6)
    assert float(flat_new @ flat_r) >= -1e-5  # no longer against the reference (0 up to rounding)
    assert [x.shape for x in new] == [x.shape for x in g]
    same, projected = project([-x for x in g], r)  # agreeing gradients are left alone
    assert not projected and all(torch.equal(a, -b) for a, b in zip(same, g, strict=True))


def test_memory_is_bounded_seeded_and_shared_equally():
    a, b = EpisodicMemory(5, 12, seed=3), EpisodicMemory(5, 12, seed=3)
    for mem in (a, b):
        for k in range(4):
            mem.add({"x": np.arange(100.0) + 1000 * k})
    assert len(a) == 12 and [len(s["x"]) for s in a.stores] == [3, 3, 3, 3]
    assert all(((s["x"] // 1000) == k).all() for k, s in enumerate(a.stores))  # each regime's own rows
    assert np.array_equal(a.sample(7)["x"], b.sample(7)["x"])  # same seed, same draws
    saved = copy.deepcopy(a.state_dict())
    first = a.sample(4)["x"]
    a.load_state_dict(saved)
    assert np.array_equal(a.sample(4)["x"], first)  # the checkpoint holds the stream


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_reference_gradients_and_projection_on_real_sb3_models(algo):
    model, ivs = tiny_model(algo, interventions=[{"agem": {"samples": 40, "batch_size": 16}}], boundary_aware=True)
    iv = ivs.interventions[0]
    model.learn(128)
    assert iv.projections == 0 and len(iv.memory) == 0  # no past regime yet: nothing projected
    ivs.on_rollout_end()
    ivs.on_regime_change(1)
    assert len(iv.memory) == 40
    keys = {"obs", "actions", "log_prob", "advantages", "returns"} if algo == "ppo" else {"obs", "actions", "next_obs"}
    assert keys <= set(iv.memory.stores[0])
    for opt in {id(o): o for _, _, o in iv.params}.values():
        params = [p for _, p, o in iv.params if o is opt]
        state = copy.deepcopy(iv.memory.rng.bit_generator.state)
        batch = iv.memory.sample(iv.batch_size)
        iv.memory.rng.bit_generator.state = state  # the hook draws the same batch
        torch.manual_seed(1)  # and SAC's actor samples the same actions
        ref = torch.autograd.grad(iv.reference_loss(opt, batch), params, allow_unused=True)
        ref = [torch.zeros_like(p) if r is None else r for p, r in zip(params, ref, strict=True)]
        assert sum(float(r.abs().sum()) for r in ref) > 0
        for p, r in zip(params, ref, strict=True):
            p.grad = -r + 0.1 * torch.ones_like(r)  # a gradient against the reference
        before = [p.grad.clone() for p in params]
        torch.manual_seed(1)
        with torch.no_grad():
            iv._before_step(opt)
        new = [p.grad for p in params]
        dot = sum(float((g * r).sum()) for g, r in zip(new, ref, strict=True))
        assert abs(dot) < 1e-3 * sum(float((r * r).sum()) for r in ref)  # projected onto the plane
        expected, projected = project(before, ref)
        assert projected and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(new, expected, strict=True))
    count = iv.projections
    model.learn(128)  # training with the projection runs
    assert iv.projections >= count


def test_agem_refuses_a_plain_module():
    net = torch.nn.Sequential(torch.nn.Linear(2, 1))
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="agem needs an SB3 PPO, SAC or TD3 model"):
        AGEM().attach(net)
