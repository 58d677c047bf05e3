"""Self-Normalized Resets and ReGraMa against their equations on hand-built nets whose units'
firing and gradient statistics are known."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from crl.checkpoint import load
from crl.errors import ConfigError
from crl.plasticity import attach
from crl.plasticity.resets import ReGraMa, SelfNormalizedResets
from crl.plasticity.units import ReDo
from tests._resume import check_resumes_exactly, train_args, train_here


def _fresh_rows(seed: int, shape: tuple[int, int]) -> torch.Tensor:
    """LeCun-uniform rows drawn from a generator seeded ``seed``: U(+-sqrt(3 / fan_in))."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 2 - 1) * math.sqrt(3.0 / shape[1])


def _step(net: nn.Sequential, x: torch.Tensor) -> None:
    net.optimizer.zero_grad()
    net(x).sum().backward()
    net.optimizer.step()


def _firing_net() -> nn.Sequential:
    """Unit 0 fires on x > 0, unit 1 on x < 0, unit 2 always (|x| < 1); lr 0: only resets move weights."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0], [0.0]]))
        net[0].bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    net.optimizer = torch.optim.Adam(net.parameters(), lr=0.0)
    return net


@pytest.mark.parametrize(("percentile", "reset_step"), [(0.99, 13), (0.9, 11)])
def test_snr_resets_the_silent_unit_at_the_step_its_firing_rate_gives(percentile, reset_step):
    """10 steps of 4 inputs, two positive and two negative: units 0 and 1 fire on k = 20 of
    n = 40 inputs. Then only positive inputs: unit 1 is silent; after m silent steps its age is
    4m, n = 40 + 4m, p = 21 / (42 + 4m), and the threshold ceil(ln(1 - q) / ln(1 - p)) is
    q = 0.99: m=1: ceil(4.605 / 0.6098) = 8 > 4; m=2: ceil(4.605 / 0.5447) = 9 > 8;
              m=3: ceil(4.605 / 0.4925) = 10 <= 12 -> reset at step 13.
    q = 0.9:  m=1: ceil(2.303 / 0.6098) = 4 <= 4 -> reset at step 11.
    """
    net = _firing_net()
    (snr,) = attach(net, [{"snr": {"percentile": percentile, "seed": 5}}]).interventions
    mixed, positive = torch.tensor([[1.0], [2.0], [-1.0], [-2.0]]) / 3, torch.tensor([[1.0], [2.0], [3.0], [4.0]]) / 5
    for _ in range(10):
        _step(net, mixed)
    assert snr.fired["net/0"].tolist() == [20, 20, 40] and snr.seen["net/0"].tolist() == [40, 40, 40]
    out_w, adam = net[2].weight.detach().clone(), net.optimizer.state
    for step in range(11, reset_step):
        _step(net, positive)
        assert snr.resets == 0, step
        assert snr.age["net/0"].tolist() == [0, 4 * (step - 10), 0]
    out_before = net(positive).detach()
    _step(net, positive)
    assert snr.resets == 1
    torch.testing.assert_close(net[0].weight[1:2], _fresh_rows(5, (1, 1)))  # the seeded draw, exactly
    assert net[0].bias[1] == 0 and torch.all(net[2].weight[:, 1] == 0)
    torch.testing.assert_close(net[2].weight[:, [0, 2]], out_w[:, [0, 2]])  # the others untouched
    torch.testing.assert_close(net[0].weight[[0, 2]], torch.tensor([[1.0], [0.0]]))
    assert torch.all(adam[net[0].weight]["exp_avg"][1] == 0) and torch.all(adam[net[0].weight]["exp_avg_sq"][1] == 0)
    assert torch.all(adam[net[2].weight]["exp_avg"][:, 1] == 0) and torch.all(adam[net[0].bias]["exp_avg_sq"][1] == 0)
    assert adam[net[0].weight]["exp_avg"][0].abs().sum() > 0  # a firing unit keeps its moments
    assert [c["net/0"][1].item() for c in (snr.fired, snr.seen, snr.age)] == [0, 0, 0]
    torch.testing.assert_close(net(positive), out_before)  # a silent unit with outgoing weights 0: same outputs


def test_snr_thresholds_are_the_geometric_quantile():
    """t is the smallest a >= 1 with P(silent for a inputs) = (1 - p)^a <= 1 - q."""
    for k, n, q in [(0, 0, 0.99), (3, 10, 0.9), (1, 1000, 0.99), (500, 500, 0.99), (7, 64, 0.5), (0, 5000, 0.999)]:
        p = (k + 1) / (n + 2)
        a = 1
        while (1 - p) ** a > 1 - q:
            a += 1
        (t,) = SelfNormalizedResets.thresholds(torch.tensor([k]), torch.tensor([n]), q).tolist()
        assert t == a, (k, n, q)


@pytest.mark.parametrize(("percentile", "resets"), [(0.99, 0), (0.64, 0), (0.5, 1)])
def test_snr_resets_a_unit_that_has_never_fired_only_below_one_minus_one_over_e(percentile, resets):
    """Never fired in n inputs: p = 1 / (n + 2) and t > n for every n when ln(1 / (1 - q)) >= 1;
    with q = 0.5 the first step already gives t = ceil(0.693 / 0.182) = 4 <= 4."""
    net = _firing_net()
    (snr,) = attach(net, [{"snr": {"percentile": percentile}}]).interventions
    _step(net, torch.full((4, 1), 0.5))  # unit 1 silent
    assert snr.resets == resets
    if resets:
        return
    for _ in range(199):
        _step(net, torch.full((4, 1), 0.5))
    assert snr.resets == 0 and snr.fired["net/0"][1] == 0 and snr.seen["net/0"][1] == 800


def _gradient_net() -> nn.Sequential:
    """Every unit fires on positive inputs; unit 1's outgoing weight is small."""
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.5, 1.0], [1.0, 1.0], [0.2, 0.3]]))
        net[0].bias.fill_(0.1)
        net[2].weight.copy_(torch.tensor([[1.0, -0.01, 2.0]]))
    net.optimizer = torch.optim.Adam(net.parameters(), lr=0.0)
    return net


def test_regrama_scores_are_the_normalised_gradient_magnitudes_and_it_recycles_at_every():
    """All units active, loss = sum of outputs: dL/dW_in[i, j] = w_out[i] * sum_b x[b, j], so the
    GraMa scores are |w_out[i]| / mean |w_out| = [1, 0.01, 2] / 1.00333...; tau 0.1 catches unit 1
    (which ReDo's activation score keeps: it is the most active unit)."""
    net = _gradient_net()
    (rg,) = attach(net, [{"regrama": {"tau": 0.1, "every": 3, "seed": 11}}]).interventions
    x = torch.rand(6, 2) + 0.1
    w_out = torch.tensor([1.0, -0.01, 2.0])
    analytic = w_out[:, None] * x.sum(0)[None, :]
    for step in (1, 2):
        _step(net, x)
        assert rg.recycled == 0, step
    torch.testing.assert_close(net[0].weight.grad, analytic)
    expected = w_out.abs() / w_out.abs().mean()
    torch.testing.assert_close(ReGraMa.grama(net[0].weight.grad), expected)
    assert ReDo.scores(torch.relu(net[0](x)))[1] > 1.0  # by activation, unit 1 is far from dormant
    _step(net, x)
    assert rg.recycled == 1
    torch.testing.assert_close(net[0].weight[1:2], _fresh_rows(11, (1, 2)))
    assert net[0].bias[1] == 0 and net[2].weight[0, 1] == 0
    torch.testing.assert_close(net[0].weight[[0, 2]], torch.tensor([[0.5, 1.0], [0.2, 0.3]]))
    adam = net.optimizer.state
    assert torch.all(adam[net[0].weight]["exp_avg"][1] == 0) and adam[net[2].weight]["exp_avg_sq"][0, 1] == 0
    assert adam[net[0].weight]["exp_avg"][0].abs().sum() > 0


def test_regrama_catches_a_dead_unit_by_its_zero_gradient():
    net = _gradient_net()
    with torch.no_grad():
        net[0].weight[2] = -1.0  # unit 2 dead on positive inputs: relu' = 0, no gradient
    (rg,) = attach(net, [{"regrama": {"tau": 0.0, "every": 1}}]).interventions
    _step(net, torch.rand(5, 2))
    assert rg.recycled == 1 and net[2].weight[0, 2] == 0


def _train(net: nn.Sequential, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        _step(net, torch.randn(16, 3, generator=g) - 0.5)


def _random_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        net[0].bias.fill_(-0.8)  # units that fire rarely: resets happen
    net.optimizer = torch.optim.Adam(net.parameters(), lr=3e-2)
    return net


@pytest.mark.parametrize(
    ("spec", "counter"),
    [({"snr": {"percentile": 0.6}}, "resets"), ({"regrama": {"tau": 0.3, "every": 2}}, "recycled")],
)
def test_resumed_from_state_dicts_continues_identically(spec, counter):
    a = _random_net(0)
    (ia,) = attach(a, [{**spec}]).interventions
    ia.load_state_dict({**ia.state_dict(), "gen": torch.Generator().manual_seed(3).get_state()})
    _train(a, 6, seed=1)
    b = _random_net(9)
    b.load_state_dict(a.state_dict())
    b.optimizer.load_state_dict(copy.deepcopy(a.optimizer.state_dict()))
    (ib,) = attach(b, [copy.deepcopy(spec)]).interventions
    ib.load_state_dict(copy.deepcopy(ia.state_dict()))
    before = getattr(ia, counter)
    _train(a, 30, seed=2)
    _train(b, 30, seed=2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert getattr(ia, counter) == getattr(ib, counter) > before


@pytest.mark.parametrize(
    "spec",
    [{"snr": {"percentile": 0.0}}, {"snr": {"percentile": 1.0}}, {"snr": {"init": "zeros"}}, {"regrama": {"every": 0}}],
)
def test_bad_hyperparameters(spec):
    with pytest.raises(ConfigError):
        attach(_random_net(0), [spec])


#: Settings that make both methods act within a few hundred steps (the presets' act rarely).
ACTIVE = "interventions=[{snr: {percentile: 0.3}}, {regrama: {tau: 0.5, every: 5}}]"


def _sac_args(root: Path) -> list[str]:
    return [
        "train", "--env", "slippery-hopper", "--agent", "sac-snr", "--steps", "600",
        "--env-kwargs", "change_every=200", "align=exact",
        "--agent-kwargs", "learning_starts=100", "buffer_size=2000", "batch_size=32", ACTIVE,
        "--checkpoint-every", "200", "--run-dir", str(root), "--wandb", "disabled", "--no-progress",
    ]  # fmt: skip


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_killed_and_resumed_run_with_both_methods_matches_the_uninterrupted_one(tmp_path, crl_cli, algo):
    """A real ``crl train`` (PPO on Slippery Ant, SAC on Slippery Hopper) with SNR and ReGraMa
    both resetting units, killed with SIGKILL at random and resumed: the same rows."""
    if algo == "ppo":
        args = lambda root: train_args(root, 1536, "--wandb", "disabled", agent="ppo-regrama", agent_kwargs=(ACTIVE,))  # noqa: E731
        name, window = "slippery-ant__ppo-regrama__s3", (600, 1280)
    else:  # checkpoints at 200 and 400 of 600 steps
        args, name, window = _sac_args, "slippery-hopper__sac-snr__s0", (250, 400)
    train_here(*args(tmp_path / "ref"))
    ref = tmp_path / "ref" / "default" / name
    snr, regrama = load(ref / "checkpoints" / "last.pt")["interventions"]["interventions"]
    assert snr["resets"] > 0 and regrama["recycled"] > 0
    check_resumes_exactly(
        args(tmp_path / "killed"), tmp_path / "killed" / "default" / name, ref, steps=window, resume_here=True
    )
