"""Hare & Tortoise: the tortoise is the hand-computed EMA of the hare, the hare is reset to it
bit for bit at the right steps, on a plain net and on real SB3 PPO and SAC models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crl.errors import ConfigError
from crl.plasticity.base import build
from crl.plasticity.hare import HareTortoise
from tests._models import tiny_model


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    net.optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    return net


def _step(net: nn.Module, k: int) -> None:
    x = torch.linspace(-1, 1, 12).reshape(4, 3) * (k + 1)
    net.optimizer.zero_grad()
    (net(x) ** 2).mean().backward()
    net.optimizer.step()


def test_tortoise_is_the_hand_computed_ema_and_the_reset_copies_it():
    net = _net()
    seen: list[dict[str, torch.Tensor]] = []  # the hare after each step, before a reset (this hook runs first)
    net.optimizer.register_step_post_hook(
        lambda *_: seen.append({n: p.detach().double().clone() for n, p in net.named_parameters()})
    )
    iv = HareTortoise(alpha=0.7, every=3)
    iv.attach(net)
    slow = {n: p.detach().double().clone() for n, p in net.named_parameters()}  # theta_T(0) = theta_H(0)
    for k in range(7):
        _step(net, k)
        hare = seen[-1]
        slow = {n: 0.7 * slow[n] + 0.3 * hare[n] for n in slow}
        for n in slow:
            assert torch.allclose(iv.tortoise[n].double(), slow[n], atol=1e-6, rtol=1e-6), (k, n)
        reset = (k + 1) % 3 == 0
        assert iv.resets == (k + 1) // 3
        for n, p in net.named_parameters():
            # after a reset the hare is the tortoise bit for bit, otherwise it is not
            assert torch.equal(p.detach(), iv.tortoise[n]) == reset, (k, n)


def test_reset_clears_the_optimizer_only_when_asked():
    for flag in (False, True):
        net = _net()
        HareTortoise(alpha=0.5, every=2, reset_optimizer=flag).attach(net)
        _step(net, 0)
        _step(net, 1)
        assert (len(net.optimizer.state) == 0) == flag


def test_state_dict_restores_the_tortoise_exactly():
    a, b = _net(), _net()
    ia, ib = HareTortoise(alpha=0.9, every=4), HareTortoise(alpha=0.9, every=4)
    ia.attach(a)
    for k in range(3):
        _step(a, k)
    b.load_state_dict(a.state_dict())
    b.optimizer.load_state_dict(copy.deepcopy(a.optimizer.state_dict()))
    ib.attach(b)
    ib.load_state_dict(ia.state_dict())
    for k in range(3, 6):
        _step(a, k)
        _step(b, k)
    assert ia.resets == ib.resets == 1
    for n in ia.tortoise:
        assert torch.equal(ia.tortoise[n], ib.tortoise[n])
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_arguments_are_checked():
    with pytest.raises(ConfigError, match="alpha"):
        build([{"hare_tortoise": {"alpha": 1.0}}])
    with pytest.raises(ConfigError, match="every"):
        build([{"hare_tortoise": {"every": -1}}])


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_every_optimized_parameter_of_sb3_models_has_a_tortoise(algo):
    hp = {"n_epochs": 2} if algo == "ppo" else {}
    model, ivs = tiny_model(algo, hyperparameters=hp, interventions=[{"hare_tortoise": {"every": 5}}])
    iv = ivs.interventions[0]
    trained = {n for n, p in model.policy.named_parameters() if p.requires_grad and "target" not in n}
    assert set(iv.tortoise) == trained
    model.learn(128)
    assert iv.steps > 0 and iv.resets == iv.steps // 5 > 0
    if iv.steps % 5 == 0:  # the last step was a reset
        for n, p in model.policy.named_parameters():
            if n in iv.tortoise:
                assert torch.equal(p.detach(), iv.tortoise[n])


def _train(agent: str, root, interventions: str, steps: int) -> list[str]:
    ppo = agent.startswith("ppo")
    hp = (
        ["n_steps=128", "batch_size=64", "n_epochs=2"]
        if ppo
        else ["learning_starts=50", "buffer_size=1000", "batch_size=32"]
    )
    return [
        "train", "--env", "slippery-hopper", "--agent", agent, "--steps", str(steps),
        "--env-kwargs", "change_every=150", "align=exact",
        "--agent-kwargs", *hp, f"interventions={interventions}",
        "--checkpoint-every", "100", "--run-dir", str(root), "--wandb", "disabled", "--no-progress",
    ]  # fmt: skip


def resumed_equals_uninterrupted(agent: str, interventions: str, tmp_path, monkeypatch, steps: int, cut: int) -> None:
    """``crl train`` killed at step ``cut`` and resumed logs exactly what the uninterrupted run did."""
    import csv

    import crl.run
    from crl.cli import main

    def rows(path):
        with path.open() as f:
            return [{k: v for k, v in r.items() if k != "time/sps"} for r in csv.DictReader(f)]

    assert main(_train(agent, tmp_path / "ref", interventions, steps)) == 0
    original = crl.run.RegimeLogger._on_step

    def interrupting(self):
        if self.num_timesteps >= cut:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", interrupting)
    assert main(_train(agent, tmp_path / "cut", interventions, steps)) == 130
    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", original)
    assert main(_train(agent, tmp_path / "cut", interventions, steps)) == 0
    (ref,) = (tmp_path / "ref" / "default").iterdir()
    (cut_run,) = (tmp_path / "cut" / "default").iterdir()
    assert rows(cut_run / "metrics.csv") == rows(ref / "metrics.csv")


@pytest.mark.parametrize("agent", ["ppo-hare-tortoise", "sac-hare-tortoise"])
def test_kill_and_resume_through_crl_train_with_resets(agent, tmp_path, monkeypatch):
    """Resets every 3 steps, so the tortoise saved in the checkpoint shapes the resumed run."""
    ppo = agent.startswith("ppo")
    resumed_equals_uninterrupted(
        agent,
        "[{hare_tortoise: {alpha: 0.9, every: 3}}]",
        tmp_path,
        monkeypatch,
        640 if ppo else 200,  # SAC: 150 updates (50 resets), the resumed run from the checkpoint at 100
        450 if ppo else 150,
    )
