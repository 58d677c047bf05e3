"""crl.fast.probe: the batched probe learner gives autograd's numbers, bit for bit, and a
method's numbers do not depend on the methods batched with it."""

from __future__ import annotations

import pytest
import torch

from crl.fast.probe import MethodSGD
from crl.probe import METHODS, Method, split_methods, train_method, train_methods

#: Continual backprop replacing often (rate 1e-2, maturity 20), so that a short run has many
#: replacements and the draws of every network are exercised.
HOT_CBP = Method(
    "sgd", interventions=[{"cbp": {**METHODS["cbp"].interventions[0]["cbp"], "replacement_rate": 1e-2, "maturity": 20}}]
)
SMALL = dict(seeds=3, examples=1200, step_size=0.02, change_every=400, bin_size=200, seed=3)
ALL = ["bp", "l2", "cbp-hot", "shrink-perturb", "l2-init", "linear"]


def _binned(outs):
    return {o["method"]: torch.tensor(o["binned"]) for o in outs}


@pytest.fixture(scope="module")
def batched():
    return _binned(train_methods("bit-flipping", ALL, specs={"cbp-hot": HOT_CBP}, **SMALL))


def test_batched_learner_gives_the_autograd_paths_numbers(batched):
    """Every method, batched with the others, gives exactly the errors of the autograd path
    (``train_method``: one method, torch modules, ``backward()``, ``torch.optim.SGD``)."""
    for name in ALL:
        ref = train_method("bit-flipping", name, spec=HOT_CBP if name == "cbp-hot" else None, **SMALL)
        assert torch.equal(batched[name], torch.tensor(ref["binned"])), name
    assert not torch.equal(batched["cbp-hot"], batched["bp"])  # the replacements changed something


def test_a_methods_numbers_do_not_depend_on_its_batch(batched):
    for name in ("cbp-hot", "l2", "linear"):
        alone = _binned(train_methods("bit-flipping", [name], specs={"cbp-hot": HOT_CBP}, **SMALL))
        assert torch.equal(alone[name], batched[name]), name
    pair = _binned(train_methods("bit-flipping", ["shrink-perturb", "bp"], **SMALL))
    assert all(torch.equal(pair[n], batched[n]) for n in pair)


def test_permuted_digits_batched_equals_autograd():
    kw = dict(seeds=2, examples=300, change_every=100, bin_size=100, seed=1, specs={"cbp-hot": HOT_CBP})
    got = _binned(train_methods("permuted-digits", ["bp", "cbp-hot"], **kw))
    spec = kw.pop("specs")["cbp-hot"]
    for name in ("bp", "cbp-hot"):
        ref = train_method("permuted-digits", name, spec=spec if name == "cbp-hot" else None, **kw)
        assert torch.equal(got[name], torch.tensor(ref["binned"])), name


def test_other_optimizers_go_through_autograd():
    assert not METHODS["upgd"].batchable and METHODS["l2"].batchable
    outs = train_methods("bit-flipping", ["upgd", "bp"], seeds=2, examples=200, bin_size=100)
    assert [o["method"] for o in outs] == ["upgd", "bp"]
    assert split_methods(["upgd", "bp", "cbp"], METHODS, 8) == [["cbp"], ["bp"], ["upgd"]]


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
