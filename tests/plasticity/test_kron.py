"""PSGD Kron: the same iterates as the package kron-torch, exact state round trips, bad
arguments, FastPPO's generic step, and a real ``crl train`` run killed and resumed."""

from __future__ import annotations

import contextlib
import copy
import io
import random
import re

import pytest
import torch

from crl.errors import ConfigError
from crl.fast.adam import eligible
from crl.plasticity.kron import Kron, UpdateSchedule
from crl.plasticity.optimizers import check_optimizer_kwargs, make_optimizer_class
from tests._resume import check_resumes_exactly, train_args
from tests.conftest import run_crl

kron_torch = pytest.importorskip("kron_torch")


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    xs = [torch.randn(16, 3) for _ in range(5)]
    return net, xs


def _train(net, opt, xs, steps, seed):
    """``steps`` steps on a regression whose target shifts every 40 steps; torch's generator
    (which draws the preconditioner's probe vectors) seeded with ``seed`` first."""
    torch.manual_seed(seed)
    for t in range(steps):
        x = xs[t % len(xs)]
        opt.zero_grad()
        ((net(x) - x[:, :2] * (1 + t // 40)) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("kwargs", [{}, {"preconditioner_update_probability": 0.4, "weight_decay": 0.01}])
def test_same_iterates_as_the_package(kwargs):
    """crl's Kron against ``kron_torch.Kron`` itself (run eagerly, as crl runs it), same
    seed: bitwise the same parameters after 100 steps, and the preconditioners moved."""
    a, xs = _problem()
    b = copy.deepcopy(a)
    ours = Kron(a.parameters(), lr=1e-2, **kwargs)
    _train(a, ours, xs, 100, seed=1)
    with torch.compiler.set_stance("force_eager"), contextlib.redirect_stdout(io.StringIO()):
        theirs = kron_torch.Kron(b.parameters(), lr=1e-2, **kwargs)
        _train(b, theirs, xs, 100, seed=1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    q = ours.state[a[0].weight]["Q"]
    assert not torch.allclose(q[0], torch.eye(8) * q[0][0, 0])  # fitted, not the initial identity
    assert int(ours._prob_step) == int(theirs._prob_step) == 100


def test_default_schedule_is_the_packages():
    n = torch.arange(0, 6000, dtype=torch.float32)
    with torch.compiler.set_stance("force_eager"):
        theirs = kron_torch.precond_update_prob_schedule()(n.clone())
    assert torch.equal(UpdateSchedule()(n), theirs)


def test_state_dict_round_trip_resumes_exactly():
    """Counters, the balancing stream and the einsum expressions come back: a copy loaded
    from a serialized state dict continues exactly like the original (the package alone
    loses its counters and stream, and torch's loader rewrites its expressions)."""
    a, xs = _problem(2)
    opt = Kron(a.parameters(), lr=1e-2, preconditioner_update_probability=0.3)
    _train(a, opt, xs, 25, seed=3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    b = copy.deepcopy(a)
    opt_b = Kron(b.parameters(), lr=1e-2, preconditioner_update_probability=0.3)
    opt_b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
    assert opt_b.state[b[0].weight]["exprs"] == opt.state[a[0].weight]["exprs"]
    assert opt_b.rng.getstate() == opt.rng.getstate() and int(opt_b._update_counter) == int(opt._update_counter)
    _train(a, opt, xs, 30, seed=4)
    _train(b, opt_b, xs, 30, seed=4)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"b1": 1.0}, "b1 must be a number in [0, 1)"),
        ({"preconditioner_update_probability": 0.0}, "preconditioner_update_probability must be a number in (0, 1]"),
        ({"memory_save_mode": "half"}, "memory_save_mode must be null or one of"),
        ({"merge_dims": "yes"}, "merge_dims must be true or false"),
        ({"precond_lr": -0.1}, "precond_lr must be > 0"),
        ({"eps": 1e-8}, "unknown argument 'eps'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_optimizer_kwargs("kron", kwargs)


def test_fast_ppo_takes_the_generic_step():
    """FastPPO's lean fused-Adam step is for torch's Adam only: Kron goes through ``step()``."""
    assert make_optimizer_class("kron") is Kron
    assert not eligible(Kron([torch.nn.Parameter(torch.zeros(2, 2))], lr=0.1))


@pytest.mark.expensive  # ~1 min idle (Kron steps are 11-16x Adam's); the Kron state round trip is tested above
def test_ppo_kron_killed_and_resumed_matches_uninterrupted(tmp_path):
    """A real ``crl train`` of ``ppo-kron`` (preconditioner updated on every other step, so the
    update counter in the checkpoint matters; 64-unit networks keep it short) killed with
    SIGKILL resumes to the same rows."""
    kw = ("optimizer.preconditioner_update_probability=0.5", "network.pi=[64, 64]", "network.vf=[64, 64]")

    def args(root):
        return train_args(root, 1024, "--wandb", "disabled", agent="ppo-kron", seed=1, agent_kwargs=kw)

    run_crl(*args(tmp_path / "ref"), check=True)
    name = "slippery-ant__ppo-kron__s1"
    killed, ref = tmp_path / "killed" / "default" / name, tmp_path / "ref" / "default" / name
    check_resumes_exactly(args(tmp_path / "killed"), killed, ref, random.Random(0), (300, 700))
