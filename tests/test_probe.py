"""crl probe: the bit-flipping generator, the published ordering, the command line."""

from __future__ import annotations

import json

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
#: (mean over 16 seeds, first vs last 20 % of the bins): bp 0.755 -> 0.951, cbp 0.713 -> 0.738;
#: CBP broken by replacement rate 0: exactly bp's errors; by a sign flip of its utility (the most
#: useful units replaced): 0.908 -> 1.022. Both fail :func:`_keeps_plasticity`.
SMALL = dict(seeds=16, examples=40_000, step_size=0.02, change_every=5_000, bin_size=4_000, workers=2, seed=0)


def _broken_cbp():
    """CBP switched off (replacement rate 0): the variant the ordering test must reject."""
    from crl.probe import METHODS, Method

    cbp = METHODS["cbp"]
    return Method(
        cbp.optimizer, cbp.optimizer_kwargs, [{"cbp": {**cbp.interventions[0]["cbp"], "replacement_rate": 0.0}}]
    )


def _small_probe():
    # one pool for the three runs: cbp and its broken variant first (the slow ones), then bp
    return run_probe("bit-flipping", ["cbp", "cbp-broken", "bp"], variants={"cbp-broken": _broken_cbp()}, **SMALL)


def _keeps_plasticity(res, method: str) -> bool:
    """The published ordering for ``method`` against plain backprop: its late error stays near
    its early error and clearly below backprop's late error."""
    early, late = early_late(res, method)
    return late < 1.10 * early and late < 0.85 * early_late(res, "bp")[1]


def test_backprop_loses_plasticity_and_cbp_keeps_it_but_not_when_broken():
    """The published ordering, and a check that the ordering test can fail: with CBP's
    replacements switched off, "cbp" is just backprop (the very same errors: same data, same
    initial weights, no surgery). One test, so that the three runs are made once (also under
    pytest-xdist, which may split a module's tests between workers)."""
    res = _small_probe()
    bp_early, bp_late = early_late(res, "bp")
    assert bp_late > 1.15 * bp_early  # plain backprop gets clearly worse on later tasks
    assert _keeps_plasticity(res, "cbp")  # continual backprop does not
    assert not _keeps_plasticity(res, "cbp-broken")
    assert res["methods"]["cbp-broken"]["seeds"] == res["methods"]["bp"]["seeds"]


def test_cli_tiny(tmp_path, crl_cli):
    out = crl_cli(
        "probe", "--task", "permuted-digits", "--methods", "bp,cbp", "--seeds", "2", "--examples", "400",
        "--bin-size", "100", "--workers", "1", "--out", str(tmp_path), "--json", check=True,
    )  # fmt: skip
    res = json.loads(out.stdout)
    assert set(res["methods"]) == {"bp", "cbp"} and len(res["methods"]["bp"]["bins"]) == 4
    assert (tmp_path / "probe-permuted-digits.png").is_file()
    bad = crl_cli("probe", "--methods", "bp,sgd2")
    assert bad.returncode == 2 and "unknown probe method 'sgd2'" in bad.stderr
