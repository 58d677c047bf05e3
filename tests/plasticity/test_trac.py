"""TRAC: hand-checked first steps, agreement with the reference package, SB3 use."""

from __future__ import annotations

import copy

import pytest
import torch

from crl.errors import ConfigError
from crl.plasticity.optimizers import check_optimizer_kwargs
from crl.plasticity.trac import TRACAdam


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    xs = [torch.randn(16, 3) for _ in range(20)]
    return net, xs


def _train(net, opt, xs, steps):
    for t in range(steps):
        x = xs[t % len(xs)]
        opt.zero_grad()
        loss = ((net(x) - x.sum(1, keepdim=True) * (1 + (t // 100))) ** 2).mean()  # target shifts
        loss.backward()
        opt.step()


def test_matches_the_reference_package(tmp_path, monkeypatch):
    """Same update rule as the package ``trac-optimizer``. The package approximates erfi with a
    float32 Faddeeva series that is off by up to ~1 % for small arguments (0.1120 instead of
    0.1132 at 0.1); crl uses the exact erfi (scipy), so the package is compared with its erfi
    replaced by the exact one, and then the parameters agree to float tolerance."""
    trac_pkg = pytest.importorskip("trac_optimizer")
    import scipy.special
    from trac_optimizer import trac as trac_module

    monkeypatch.setattr(
        trac_module, "erfi", lambda x: torch.as_tensor(scipy.special.erfi(x.double().numpy()), dtype=torch.float32)
    )
    a, xs = _problem()
    b = copy.deepcopy(a)
    ours = TRACAdam(a.parameters(), lr=1e-2)
    ref_cls = trac_pkg.start_trac(str(tmp_path / "trac.log"), torch.optim.Adam)
    theirs = ref_cls(b.parameters(), lr=1e-2)
    _train(a, ours, xs, 150)  # the dynamics amplify float32 rounding: compare over 150 steps
    _train(b, theirs, xs, 150)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
    assert float(ours.trac["s"].sum()) > 1e-6  # S grew from 1e-8: the test is not trivial


def test_first_step_keeps_parameters_at_reference():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    opt = TRACAdam([w], lr=0.1)
    (w * torch.tensor([1.0, -1.0, 2.0])).sum().backward()
    opt.step()
    # Delta_1 = u_1 (Adam's first step: -lr * sign(g)); h = <Delta_0, g> = 0 -> sigma stays ~1e-8, S ~ 0
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, 2.0, 3.0]), atol=1e-6, rtol=0)


def test_lr_schedule_and_state_dict_round_trip():
    a, xs = _problem(1)
    opt = TRACAdam(a.parameters(), lr=1e-2)
    _train(a, opt, xs, 50)
    b = copy.deepcopy(a)
    opt_b = TRACAdam(b.parameters(), lr=1e-2)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))
    for g in (*opt.param_groups, *opt_b.param_groups):
        g["lr"] = 3e-3  # what SB3 does every update
    _train(a, opt, xs, 30)
    _train(b, opt_b, xs, 30)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


@pytest.mark.parametrize("kwargs", [{"trac_betas": [1.5]}, {"s_init": -1.0}, {"betas": [1.2, 0.9]}, {"bogus": 1}])
def test_bad_hyperparameters(kwargs):
    with pytest.raises(ConfigError):
        check_optimizer_kwargs("trac", kwargs)
