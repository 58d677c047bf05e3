"""Every registered optimizer: a hand-computed first step, SB3's lr schedule, bad values."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch

from crl.errors import ConfigError
from crl.plasticity.optimizers import OPTIMIZERS, check_optimizer_kwargs
from crl.plasticity.upgd import UPGD

W0 = [0.5, -1.0, 2.0]
G = [0.2, -0.4, 0.1]


def _one_step(name: str, lr: float = 0.1, **kw) -> torch.Tensor:
    w = torch.nn.Parameter(torch.tensor(W0))
    opt = OPTIMIZERS[name]([w], lr=lr, **kw)
    w.grad = torch.tensor(G)
    opt.step()
    return w.detach()


def _adam_first_step(lr: float, eps: float) -> list[float]:
    # m_hat = g, v_hat = g^2 at step 1
    return [w - lr * g / (abs(g) + eps) for w, g in zip(W0, G, strict=True)]


@pytest.mark.parametrize(
    ("name", "kw", "expected"),
    [
        ("sgd", {}, [w - 0.1 * g for w, g in zip(W0, G, strict=True)]),
        ("sgd", {"weight_decay": 0.5}, [w - 0.1 * (g + 0.5 * w) for w, g in zip(W0, G, strict=True)]),
        ("adam", {"eps": 1e-8}, _adam_first_step(0.1, 1e-8)),
        (
            "adamw",  # decoupled: w (1 - lr wd) first, then the Adam step
            {"eps": 1e-8, "weight_decay": 0.5},
            [w * (1 - 0.05) - 0.1 * g / (abs(g) + 1e-8) for w, g in zip(W0, G, strict=True)],
        ),
        (
            "rmsprop",
            {"alpha": 0.9, "eps": 1e-8},  # v = 0.1 g^2: w - lr g / sqrt(0.1 g^2)
            [w - 0.1 * g / (math.sqrt(0.1) * abs(g) + 1e-8) for w, g in zip(W0, G, strict=True)],
        ),
    ],
)
def test_first_step_by_hand(name, kw, expected):
    assert _one_step(name, **kw).tolist() == pytest.approx(expected, rel=1e-6)


def test_upgd_first_step_by_hand():
    bu, wd, lr, eps = 0.9, 0.1, 0.1, 1e-5
    w = _one_step("upgd", lr=lr, weight_decay=wd, beta_utility=bu, sigma=0.0, eps=eps).tolist()
    u_bar = [(1 - bu) * -g * x for g, x in zip(G, W0, strict=True)]  # EMA after one step
    gmax = max(u_bar)
    expected = []
    for x, g, u in zip(W0, G, u_bar, strict=True):
        s = 1 / (1 + math.exp(-(u / (1 - bu)) / gmax))
        expected.append((1 - lr * wd) * x - lr * (g / (abs(g) + eps)) * (1 - s))
    assert w == pytest.approx(expected, rel=1e-5)


def test_upgd_protects_useful_weights():
    """Two weights with the same gradient: the one whose removal would hurt (u = -g w > 0,
    large) gets a smaller update than the one with negative utility, over many steps."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([3.0, -3.0, 0.1]))
    start = w.detach().clone()
    opt = UPGD([w], lr=0.01, weight_decay=0.0, sigma=0.0)
    for _ in range(50):
        w.grad = torch.tensor([-1.0, -1.0, -1.0])  # u = w: +3 (useful), -3 (harmful), 0.1
        opt.step()
    moved = (w.detach() - start).abs()
    assert moved[0] < 0.1 * moved[1]  # protected
    assert moved[2] < moved[1]  # mildly useful: partly gated
    assert moved[1] == pytest.approx(0.5, rel=0.05)  # unprotected: a full Adam step of lr each time


def test_upgd_noise_is_gated_too():
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.tensor([5.0, -5.0]))
    opt = UPGD([w], lr=1.0, weight_decay=0.0, sigma=0.1, betas=(0.0, 0.0))
    w.grad = torch.tensor([-1e-12, -1e-12])  # no gradient signal: only the noise moves weights
    opt.step()
    assert abs(float(w[0].detach()) - 5.0) < 1e-6 < abs(float(w[1].detach()) + 5.0)


@pytest.mark.parametrize("batched", [True, False])
def test_upgd_batched_networks_take_their_own_max(batched):
    """Network 1's utilities are network 0's times 10: with a maximum per network both get the
    same gating, so the same step; with one maximum over both, network 0 is barely protected."""
    w = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [10.0, 20.0]]))
    if batched:
        w._crl_batched = True  # two independent networks along dim 0
    start = w.detach().clone()
    opt = UPGD([w], lr=0.1, weight_decay=0.0, sigma=0.0, beta_utility=0.0)  # u = -g w = w
    w.grad = torch.full_like(w, -1.0)
    opt.step()
    step = w.detach() - start
    assert bool((step > 0).all())  # gated, not frozen
    assert torch.allclose(step[0], step[1]) == batched


@pytest.mark.parametrize("name", sorted(set(OPTIMIZERS) - {"trac"}))  # TRAC: tests/plasticity/test_trac.py
def test_lr_written_by_sb3_schedule_is_used(name):
    """SB3 rewrites param_group["lr"] before every update: lr 0 must freeze the weights."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor(W0))
    kw = {"sigma": 0.0} if name == "upgd" else {}
    opt = OPTIMIZERS[name]([w], lr=0.1, **kw)
    for group in opt.param_groups:
        group["lr"] = 0.0
    w.grad = torch.tensor(G)
    opt.step()
    assert w.detach().tolist() == pytest.approx(W0)
    for group in opt.param_groups:
        group["lr"] = 0.1
    opt.step()
    assert w.detach().tolist() != pytest.approx(W0)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip(name):
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.tensor(W0))
    b = torch.nn.Parameter(torch.tensor(W0))
    kw = {"sigma": 0.0} if name == "upgd" else {}
    oa, ob = OPTIMIZERS[name]([a], lr=0.01, **kw), OPTIMIZERS[name]([b], lr=0.01, **kw)
    for _ in range(3):
        a.grad = torch.tensor(G)
        oa.step()
    with torch.no_grad():
        b.copy_(a)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))  # as through a checkpoint file
    for t in range(3):
        a.grad = b.grad = torch.tensor(G)
        for opt in (oa, ob):  # the same draws from torch's generator (Kron's probe vectors)
            torch.manual_seed(t)
            opt.step()
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("upgd", {"sigma": -1.0}, "sigma must be >= 0"),
        ("upgd", {"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ("upgd", {"beta_utility": 1.0}, "beta_utility must be in [0, 1)"),
        ("upgd", {"betas": [0.9, 1.5]}, "beta2 must be in [0, 1)"),
        ("upgd", {"eps": 0.0}, "eps must be > 0"),
        ("upgd", {"temperature": 1.0}, "unknown argument 'temperature'"),
        ("adam", {"betas": [1.0, 0.99]}, "beta parameter at index 0"),
        ("adamw", {"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_hyperparameters(name, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_optimizer_kwargs(name, kwargs)


@pytest.mark.parametrize("agent", ["ppo-upgd", "ppo-adamw"])
def test_optimizer_saves_and_loads_with_the_sb3_model(agent, tmp_path):
    import gymnasium as gym
    from stable_baselines3 import PPO

    from crl.agents import build_model
    from crl.catalog import resolve_agent

    spec = resolve_agent(agent)
    spec.hyperparameters.update(n_steps=64, batch_size=32, n_epochs=1)
    model, _ = build_model(spec, gym.make("Pendulum-v1"), seed=0)
    model.learn(128)
    model.save(tmp_path / "m.zip")
    loaded = PPO.load(tmp_path / "m.zip")
    assert type(loaded.policy.optimizer) is type(model.policy.optimizer)
    a, b = model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"]
    for k, st in a["state"].items():
        for name, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][k][name]))


def test_fused_default_is_decided_without_building_an_optimizer():
    """Importing crl's training module must not build an optimizer: the first one imports
    ``torch._dynamo`` (seconds), which a command that stops at a config error should not pay.
    The fused default it decides on is one this torch accepts.
    """
    import subprocess
    import sys

    code = "import sys, crl.run; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    # nor does checking an agent's optimizer values (``crl agents NAME`` resolves the agent)
    code = "import sys; from crl.cli import main; main(['agents', 'ppo-l2']); print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False" and "weight_decay" in out.stdout
    from crl.plasticity import optimizers

    assert optimizers.fused_optimizers() == optimizers.FUSED
    for name in optimizers.fused_optimizers():
        opt = OPTIMIZERS[name]([torch.nn.Parameter(torch.zeros(2))], lr=0.1, **optimizers.optimizer_kwargs(name, {}))
        assert opt.defaults["fused"] is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"betas": [1.5, 0.9]}, "Invalid beta parameter at index 0: 1.5"),
        ({"fused": True, "foreach": True}, "`fused` and `foreach` cannot be `True` together"),
        ({"eps": -1.0}, "Invalid epsilon value: -1.0"),
    ],
)
def test_bad_optimizer_values_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=f"optimizer 'adam': {message}"):
        check_optimizer_kwargs("adam", kwargs)
