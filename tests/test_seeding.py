"""Every random stream of a run comes from the run seed through ``crl.seeding.derive``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from crl.api import make_agent
from crl.plasticity import interventions_of
from crl.seeding import derive, generator, sequence

# CBP that replaces units within a few rollouts: 256 units, maturity 2 optimizer steps,
# r = 0.002 * 256 ~ 0.5 < 1, so each replacement is a draw from the intervention's stream
FAST_CBP = {"interventions": [{"cbp": {"replacement_rate": 0.002, "maturity": 2}}]}


def test_derive_is_a_pure_function_of_seed_stream_and_index():
    assert derive(5, "intervention", 0) == derive(5, "intervention", 0)
    streams = (("intervention", (0,)), ("intervention", (1,)), ("replay", ()))
    seeds = {derive(s, name, *index) for s in (0, 1) for name, index in streams}
    assert len(seeds) == 6
    assert derive(0, "evaluation", 1, 2) != derive(0, "evaluation", 2, 1)
    assert all(0 <= x < 2**63 for x in seeds)
    np.testing.assert_array_equal(generator(3, "x", 1).random(4), np.random.default_rng(sequence(3, "x", 1)).random(4))
    with pytest.raises(ValueError, match="non-negative"):
        derive(-1, "replay")


def _cbp_run(seed: int, steps: int = 64 * 24) -> tuple[dict[str, list[int]], object]:
    """Train ppo-cbp briefly; the units it replaced (age below the layer's oldest) per layer."""
    model = make_agent(
        "ppo-cbp", gym.make("Pendulum-v1"), seed=seed, n_steps=64, batch_size=64, n_epochs=1, overrides=FAST_CBP
    )
    (cbp,) = interventions_of(model).interventions
    model.learn(steps)
    assert cbp.replaced > 0
    return {k: torch.nonzero(age < age.max()).flatten().tolist() for k, age in cbp.age.items()}, cbp


def test_intervention_streams_come_from_the_run_seed():
    """The old code seeded every intervention with 0, whatever the run seed."""
    draws = []
    for seed in (0, 1):
        model = make_agent("ppo-cbp", gym.make("Pendulum-v1"), seed=seed, n_steps=64, batch_size=64)
        (cbp,) = interventions_of(model).interventions
        assert cbp.seed == derive(seed, "intervention", 0)
        draws.append(torch.rand(8, generator=cbp.gen))
    assert not torch.equal(*draws)


def test_cbp_replaces_the_same_units_with_the_same_seed_and_others_with_another():
    a, cbp_a = _cbp_run(0)
    b, cbp_b = _cbp_run(0)
    c, _ = _cbp_run(1)
    assert a == b and cbp_a.replaced == cbp_b.replaced
    assert a != c
    assert torch.equal(cbp_a.gen.get_state(), cbp_b.gen.get_state())


def test_reservoir_replay_is_seeded_from_its_stream():
    model = make_agent("sac-replay", gym.make("Pendulum-v1"), seed=4, buffer_size=100)
    want = np.random.default_rng(derive(4, "replay")).random(3)
    np.testing.assert_array_equal(model.replay_buffer.rng.random(3), want)
