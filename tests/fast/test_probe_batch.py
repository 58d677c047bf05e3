"""crl.fast.probe: the batched probe learner gives autograd's numbers, bit for bit, and a
method's numbers do not depend on the methods batched with it (SGD methods and UPGD)."""

from __future__ import annotations

import pytest
import torch

from crl.fast.probe import MethodSGD, MethodUPGD
from crl.plasticity.upgd import UPGD
from crl.probe import METHODS, Method, split_methods, train_method, train_methods

#: Continual backprop replacing often (rate 1e-2, maturity 20), so that a short run has many
#: replacements and the draws of every network are exercised.
HOT_CBP = Method(
    "sgd", interventions=[{"cbp": {**METHODS["cbp"].interventions[0]["cbp"], "replacement_rate": 1e-2, "maturity": 20}}]
)
#: UPGD with larger perturbations (sigma 0.1), so that a short run shows them in the errors.
LOUD_UPGD = Method("upgd", {**METHODS["upgd"].optimizer_kwargs, "sigma": 0.1})
SPECS = {"cbp-hot": HOT_CBP, "upgd-loud": LOUD_UPGD}
SMALL = dict(seeds=3, examples=1200, step_size=0.02, change_every=400, bin_size=200, seed=3)
ALL = ["bp", "l2", "cbp-hot", "shrink-perturb", "l2-init", "linear", "upgd", "upgd-loud"]


def _binned(outs):
    return {o["method"]: torch.tensor(o["binned"]) for o in outs}


@pytest.fixture(scope="module")
def batched():
    return _binned(train_methods("bit-flipping", ALL, specs=SPECS, **SMALL))


def test_batched_learner_gives_the_autograd_paths_numbers(batched):
    """Every method, batched with the others, gives exactly the errors of the autograd path
    (``train_method``: one method, torch modules, ``backward()``, ``torch.optim.SGD`` or crl's
    ``UPGD`` drawing its perturbations from torch's global generator)."""
    for name in ALL:
        ref = train_method("bit-flipping", name, spec=SPECS.get(name), **SMALL)
        assert torch.equal(batched[name], torch.tensor(ref["binned"])), name
    assert not torch.equal(batched["cbp-hot"], batched["bp"])  # the replacements changed something
    assert not torch.equal(batched["upgd-loud"], batched["upgd"])  # the perturbations changed something


def test_a_methods_numbers_do_not_depend_on_its_batch(batched):
    for name in ("cbp-hot", "l2", "linear", "upgd-loud"):
        alone = _binned(train_methods("bit-flipping", [name], specs=SPECS, **SMALL))
        assert torch.equal(alone[name], batched[name]), name
    pair = _binned(train_methods("bit-flipping", ["shrink-perturb", "bp"], **SMALL))
    assert all(torch.equal(pair[n], batched[n]) for n in pair)


def test_permuted_digits_batched_equals_autograd():
    kw = dict(seeds=2, examples=300, change_every=100, bin_size=100, seed=1, specs=SPECS)
    names = ["bp", "cbp-hot", "upgd-loud"]
    got = _binned(train_methods("permuted-digits", names, **kw))
    specs = kw.pop("specs")
    for name in names:
        ref = train_method("permuted-digits", name, spec=specs.get(name), **kw)
        assert torch.equal(got[name], torch.tensor(ref["binned"])), name


def test_other_optimizers_go_through_autograd():
    assert METHODS["upgd"].batchable and METHODS["l2"].batchable
    adam = Method("adam", hidden=(3,))
    assert not adam.batchable and not Method("sgd", {"momentum": 0.9}).batchable
    outs = train_methods("bit-flipping", ["adam", "bp"], seeds=2, examples=200, bin_size=100, specs={"adam": adam})
    assert [o["method"] for o in outs] == ["adam", "bp"]
    assert split_methods(["adam", "bp", "cbp"], {**METHODS, "adam": adam}, 8) == [["cbp"], ["bp"], ["adam"]]


def test_method_upgd_is_upgd():
    """The batch's UPGD (its own generator, step hooks) steps as crl's UPGD on the global generator."""
    torch.manual_seed(0)
    p, q = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(4, 3))
    q.data.copy_(p.data)
    p._crl_batched = q._crl_batched = True
    kw = dict(lr=0.1, weight_decay=0.01, sigma=0.1, beta_utility=0.9, adaptive=False)
    ours = MethodUPGD([p], generator=torch.Generator().set_state(torch.get_rng_state()), **kw)
    theirs = UPGD([q], **kw)
    seen, grads = [], torch.Generator().manual_seed(1)
    ours.register_step_post_hook(lambda o, a, k: seen.append(1))
    for _ in range(3):
        g = torch.randn(4, 3, generator=grads)
        p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    assert torch.equal(p, q) and seen == [1, 1, 1]


def test_method_sgd_is_torch_sgd():
    torch.manual_seed(0)
    p, q = torch.nn.Parameter(torch.randn(50)), torch.nn.Parameter(torch.randn(50))
    q.data.copy_(p.data)
    ours, theirs = MethodSGD([p], lr=0.1, weight_decay=0.01), torch.optim.SGD([q], lr=0.1, weight_decay=0.01)
    for _ in range(3):
        g = torch.randn(50)
        p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    assert torch.equal(p, q)


#: Per-bin errors (seeds x bins) of ``crl probe`` before the batched learner (commit 09cebcf,
#: autograd, one process per method; bit-flipping, 2 seeds x 1,500 examples, step size 0.02,
#: a task every 500 examples, seed 11): results made before it stay valid.
BEFORE = {
    "bp": [
        [1.088354468345642, 1.3002973794937134, 0.7158279418945312],
        [3.512681484222412, 0.8832063674926758, 1.641507863998413],
    ],
    "l2": [
        [1.0907117128372192, 1.3029303550720215, 0.7151890397071838],
        [3.4586472511291504, 0.9204245805740356, 1.6419634819030762],
    ],
    "shrink-perturb": [
        [1.1530437469482422, 1.3846877813339233, 0.6984862089157104],
        [2.999615430831909, 0.731536328792572, 1.6088253259658813],
    ],
    "cbp-hot": [
        [1.0406416654586792, 1.380570650100708, 0.6085636615753174],
        [2.970654249191284, 1.1344290971755981, 1.6484112739562988],
    ],
}


def test_the_errors_made_before_the_batched_learner():
    kw = dict(seeds=2, examples=1500, change_every=500, bin_size=500, step_size=0.02, seed=11)
    outs = train_methods("bit-flipping", list(BEFORE), specs=SPECS, **kw)
    got = {o["method"]: o["binned"] for o in outs}
    for name, want in BEFORE.items():
        # bit for bit on the machine that recorded them; float tolerance for other CPUs' kernels
        torch.testing.assert_close(torch.tensor(got[name]), torch.tensor(want), rtol=1e-6, atol=0.0, msg=name)
