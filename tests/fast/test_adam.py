"""crl.fast.adam: the lean fused Adam/AdamW step is bitwise torch's own ``opt.step()``."""

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from crl.fast.adam import eligible, kernel_args, local_hooks, step
from crl.plasticity.regularisers import L2Init, ParamIntervention
from crl.run.callbacks import NanGuard


@pytest.mark.parametrize(
    "cls,kw",
    [
        (torch.optim.Adam, {"betas": (0.9, 0.999), "weight_decay": 0.0}),
        (torch.optim.Adam, {"betas": (0.99, 0.99), "weight_decay": 1e-4}),  # ppo-cbp's coupled L2
        (torch.optim.AdamW, {"weight_decay": 1e-2}),
    ],
)
def test_lean_fused_step_is_bitwise_opt_step(cls, kw):
    """crl.fast.adam.step: the same parameters, state and hook calls as opt.step()."""
    torch.manual_seed(0)
    shapes = [(16, 5), (16,), (3, 16), (3,)]
    base = [torch.randn(s) for s in shapes]
    runs = {}
    for lean in (False, True):
        params = [torch.nn.Parameter(b.clone()) for b in base]
        opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 3e-3}], lr=1e-2, fused=True, **kw)
        calls = []

        def pre(o, args, kwargs, calls=calls, params=params):
            calls.append("pre")
            params[0].grad.add_(params[0].detach(), alpha=1e-3)  # an L2 pre-hook, as crl's regularisers

        def post(o, args, kwargs, calls=calls):
            calls.append("post")

        opt.register_step_pre_hook(pre)
        opt.register_step_post_hook(post)
        gen = torch.Generator().manual_seed(1)
        for i in range(6):
            for k, p in enumerate(params):  # the last tensor has no gradient on odd steps
                p.grad = None if (k == 3 and i % 2) else torch.randn(p.shape, generator=gen)
            opt.param_groups[0]["lr"] = 1e-2 * (1 - i / 10)  # as SB3's schedule writes it
            (step if lean else type(opt).step)(opt)
        runs[lean] = (params, opt, calls)
    (p0, o0, c0), (p1, o1, c1) = runs[False], runs[True]
    assert c0 == c1 == ["pre", "post"] * 6
    for a, b in zip(p0, p1, strict=True):
        assert torch.equal(a, b)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(o0.state[a][key], o1.state[b][key]), key
    assert o1.state[p1[3]]["step"].item() == 3 and o1.state[p1[0]]["step"].item() == 6


def test_lean_step_leaves_other_optimizers_to_their_own_step():
    configs = [
        (torch.optim.Adam, {"foreach": False}),
        (torch.optim.Adam, {"fused": True, "amsgrad": True}),
        (torch.optim.SGD, {"momentum": 0.9}),
    ]
    for cls, kw in configs:
        ps = [torch.nn.Parameter(torch.ones(2)) for _ in range(2)]
        opts = [cls([p], lr=0.1, **kw) for p in ps]
        for _ in range(2):
            for p in ps:
                p.grad = torch.tensor([1.0, -2.0])
            step(opts[0])
            opts[1].step()
            assert not eligible(opts[0]), (cls, kw)
        assert torch.equal(ps[0], ps[1]) and not torch.equal(ps[0], torch.ones(2))
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([p], lr=0.1, fused=True)
    p.grad = torch.ones(2)
    assert eligible(opt) and kernel_args(opt) is None  # no Adam state yet
    step(opt)  # torch's own step body creates it
    assert kernel_args(opt) is not None and opt.state[p]["step"].item() == 1
    opt.step = lambda: None  # patched on the instance (as an LR scheduler does): left to it
    assert not eligible(opt)


def test_local_hooks_are_those_of_owners_that_declare_them():
    """NanGuard's and the weight regularisers' hooks are local; a plain function, another
    intervention's method or a global hook is not (it may draw or write other parameters)."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    opt = torch.optim.Adam(net.parameters())
    assert local_hooks(opt) and local_hooks(None)
    guard = NanGuard()
    opt.register_step_pre_hook(guard._grad_guard)
    net.optimizer = opt
    L2Init(1e-3).attach(net)
    assert local_hooks(opt)
    handle = opt.register_step_post_hook(lambda o, args, kwargs: torch.rand(1))
    assert not local_hooks(opt)
    handle.remove()

    class Noisy(ParamIntervention):  # does not declare its hooks local
        name = "noisy_test"

        def _after_step(self, optimizer):
            torch.rand(1)

    other = torch.optim.Adam(net.parameters())
    other.register_step_pre_hook(guard._grad_guard)
    net.optimizer = other
    Noisy().attach(net)
    assert not local_hooks(other) and local_hooks(opt)
    handle = register_optimizer_step_pre_hook(guard._grad_guard)
    try:
        assert local_hooks(opt)  # a local owner's global hook
    finally:
        handle.remove()
    handle = register_optimizer_step_pre_hook(lambda o, args, kwargs: None)
    try:
        assert not local_hooks(opt)
    finally:
        handle.remove()
