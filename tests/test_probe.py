"""crl probe: the bit-flipping generator, the published ordering, the command line."""

from __future__ import annotations

import json

import pytest
import torch

from crl.probe import BitFlipping, PermutedDigits, early_late, run_probe


def test_bit_flipping_generator_follows_dohare():
    task = BitFlipping(n_nets=2, seed=0, change_every=100)
    x, y = task.chunk(100)
    assert x.shape == (2, 100, 20) and y.shape == (2, 100, 1)
    assert torch.all(x[:, :, :15] == x[:, :1, :15])  # the flipping bits are constant within a task
    assert 0.3 < x[:, :, 15:].mean() < 0.7  # the last 5 are fresh random bits
    x2, _ = task.chunk(100)
    assert not torch.equal(x2[:, 0, :15], x[:, 0, :15])  # redrawn at the change
    # the target by hand: LTU features f_i = [w_i . x + b_i > 0.7 * 21 - S_i], y = v . f + c
    s = (20 - task.w1[0].sum(-1) + task.b1[0]) / 2
    f = ((x[0] @ task.w1[0].T + task.b1[0]) > (0.7 * 21 - s)).float()
    assert torch.allclose(y[0, :, 0], f @ task.w2[0, 0] + task.b2[0])
    assert set(task.w1.unique().tolist()) == {-1.0, 1.0}


def test_permuted_digits_permutes_pixels_per_task():
    task = PermutedDigits(n_nets=1, seed=0, change_every=50)
    x, y = task.chunk(50)
    assert x.shape == (1, 50, 64) and y.shape == (1, 50, 1)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


#: Small, seeded setting where the published effect shows in ~20 s: step size 0.02 (default
#: 0.01) and a change every 5,000 examples speed up plain backprop's loss of plasticity. Measured
#: (mean over 16 seeds, first vs last 20 % of the bins): bp 0.755 -> 0.951, cbp 0.713 -> 0.705.
SMALL = dict(seeds=16, examples=40_000, step_size=0.02, change_every=5_000, bin_size=4_000, workers=2, seed=0)


@pytest.fixture(scope="module")
def small_probe():
    return run_probe("bit-flipping", ["bp", "cbp"], **SMALL)


def test_backprop_loses_plasticity_and_cbp_keeps_it(small_probe):
    bp_early, bp_late = early_late(small_probe, "bp")
    cbp_early, cbp_late = early_late(small_probe, "cbp")
    assert bp_late > 1.15 * bp_early  # plain backprop gets clearly worse on later tasks
    assert cbp_late < 1.05 * cbp_early  # continual backprop does not
    assert cbp_late < 0.85 * bp_late


def test_probe_fails_when_cbp_is_broken(monkeypatch):
    """The ordering test can fail: with CBP's replacements switched off, "cbp" is just backprop."""
    from crl.probe import METHODS, Method

    cbp = METHODS["cbp"]
    broken = [{"cbp": {**cbp.interventions[0]["cbp"], "replacement_rate": 0.0}}]
    monkeypatch.setitem(METHODS, "cbp", Method(cbp.optimizer, cbp.optimizer_kwargs, broken))
    res = run_probe("bit-flipping", ["cbp"], **{**SMALL, "workers": 1})
    early, late = early_late(res, "cbp")
    assert not late < 1.05 * early


def test_cli_tiny(tmp_path, crl_cli):
    out = crl_cli(
        "probe", "--task", "permuted-digits", "--methods", "bp,cbp", "--seeds", "2", "--examples", "400",
        "--bin-size", "100", "--out", str(tmp_path), "--json", check=True,
    )  # fmt: skip
    res = json.loads(out.stdout)
    assert set(res["methods"]) == {"bp", "cbp"} and len(res["methods"]["bp"]["bins"]) == 4
    assert (tmp_path / "probe-permuted-digits.png").is_file()
    bad = crl_cli("probe", "--methods", "bp,sgd2")
    assert bad.returncode == 2 and "unknown probe method 'sgd2'" in bad.stderr
