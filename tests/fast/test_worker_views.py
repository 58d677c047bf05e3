"""The critic workers keep what interventions hold on the critics' parameters in step.

Both workers put the critics' parameters in shared memory. Hare & Tortoise keeps ``p.detach()``
views of the parameters for its EMA; had a worker given the parameters new storage, those views
would have kept reading the old memory (the tortoise of the critics frozen at its start). The
storage is shared in place (:func:`crl.fast.critic_worker.share_in_place`), so a run with the
worker gives the one-process numbers, resets included.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import crl  # noqa: F401  (registers the crl/ env ids)
from crl.agents import build_model
from crl.catalog import resolve_agent

HARE = [{"hare_tortoise": {"alpha": 0.9, "every": 3}}]
SETTINGS = {
    "ppo-hare-tortoise": ({"n_steps": 128, "batch_size": 64, "n_epochs": 2}, 384),
    "sac-hare-tortoise": ({"learning_starts": 40, "buffer_size": 500, "batch_size": 32}, 120),
}


def _run(agent: str, parallel: bool):
    hyperparameters, steps = SETTINGS[agent]
    spec = resolve_agent(agent)
    spec.hyperparameters.update(hyperparameters)
    spec.network.pi, spec.network.vf, spec.network.qf = [24, 24], [24, 24], [24, 24]
    spec.interventions = HARE
    torch.set_num_threads(1)
    model, iv = build_model(spec, gym.make("crl/SlipperyHopper-v0"), seed=2)
    model.parallel_update = parallel
    model.learn(steps)
    used = getattr(model, "parallel_steps", 0) or getattr(model, "_critic_worker", None) is not None
    model.close_workers()
    (hare,) = iv.interventions
    return model, hare, bool(used)


@pytest.mark.parametrize("agent", list(SETTINGS))
def test_hare_and_tortoise_gives_the_one_process_numbers_with_the_worker(agent):
    (a, hare_a, used_a), (b, hare_b, used_b) = _run(agent, False), _run(agent, True)
    assert (used_a, used_b) == (False, True)
    assert hare_a.resets == hare_b.resets > 0
    for p, q in zip(a.policy.parameters(), b.policy.parameters(), strict=True):
        assert torch.equal(p, q)
    assert hare_a.tortoise.keys() == hare_b.tortoise.keys()
    for name in hare_a.tortoise:
        assert torch.equal(hare_a.tortoise[name], hare_b.tortoise[name]), name
