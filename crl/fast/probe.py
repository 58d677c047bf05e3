"""The probe's learners by hand: every method's seeds as rows of one batched network.

``crl probe`` learns online, one example per step (SGD with batch size 1, as in Dohare et
al.), with many methods and seeds. :class:`ProbeBatch` holds the networks of several
methods that share a learner architecture: ``methods x seeds`` networks whose parameters are
the rows of one tensor (and whose gradients are the rows of another). A step is then a fixed
handful of tensor operations for all of them, whatever their number: the forward pass
(``bmm``), the loss, the gradients by hand (written into the gradient tensor) and one SGD
update with each network's step size and weight decay as tensors.

The methods' interventions are crl's own (:mod:`crl.plasticity`), attached to each method's
own view of the batch: a ``Sequential`` of :class:`~crl.plasticity.nets.BatchedLinear` whose
parameters are that method's rows of the shared tensor (``.grad``: its rows of the gradient),
updated by a :class:`MethodSGD` that holds the method's step hooks. A step feeds every
method's feature-capture hooks with its rows of the hidden features (as a module call
would), calls every method's pre-step hooks (L2 Init adds its gradient), updates every
network at once, then calls every method's post-step hooks (continual backprop's utilities
and replacements, Shrink & Perturb). Each intervention sees its own method's networks only.
A method that learns by UPGD (:class:`MethodUPGD`) is left alone by the SGD update: its rows
are stepped by crl's own :class:`~crl.plasticity.upgd.UPGD` code on its view (the maximum
utility per network, its perturbations from its own generator).

The numbers are autograd's: the same operations on the same shapes (the products of a batch
of one example are single multiplications; the forward products are ``bmm`` as in
:class:`~crl.plasticity.nets.BatchedLinear`), and the update is torch SGD's (``grad + wd * p``,
then ``p - lr * grad``, with the same fused rounding; UPGD's is UPGD's code itself). A
network's row is computed by the same kernels whatever the other rows hold, so a method's
results do not depend on which methods are batched with it (``tests/fast/test_probe_batch.py`` checks both).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from crl.plasticity.nets import BatchedLinear
    >>> template = nn.Sequential(BatchedLinear(3, 4, 5), nn.ReLU(), BatchedLinear(3, 5, 1))
    >>> batch = ProbeBatch(template, lr=0.01, weight_decays=[0.0, 1e-3])  # 2 methods x 3 seeds
    >>> batch.n_nets, [tuple(p.shape) for p in batch.method_nets[1].parameters()]
    (6, [(3, 5, 4), (3, 5), (3, 1, 5), (3, 1)])
    >>> err = torch.empty(6)
    >>> batch.step(torch.ones(6, 1, 4), torch.zeros(6, 1, 1), err)
    >>> bool(torch.equal(err[:3], err[3:]))  # same start, same example: the same first error
    True
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from crl.fast.mlp import has_grad_hooks, is_feature_hook
from crl.plasticity.nets import BatchedLinear
from crl.plasticity.upgd import UPGD

__all__ = ["MethodSGD", "MethodUPGD", "ProbeBatch", "expand_methods"]

_Hook = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]


class _StepHooks:
    """Step hooks kept by the optimizer itself, so that :class:`ProbeBatch` can call them
    around its update of every method at once (:meth:`run_pre_hooks`, :meth:`run_post_hooks`).
    """

    def _init_hooks(self) -> None:
        self.pre_hooks: OrderedDict[int, _Hook] = OrderedDict()  # weakly referenced by the handles
        self.post_hooks: OrderedDict[int, _Hook] = OrderedDict()

    def register_step_pre_hook(self, hook: _Hook) -> RemovableHandle:
        """Register ``hook(optimizer, args, kwargs)``, called before every step."""
        handle = RemovableHandle(self.pre_hooks)
        self.pre_hooks[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook: _Hook) -> RemovableHandle:
        """Register ``hook(optimizer, args, kwargs)``, called after every step."""
        handle = RemovableHandle(self.post_hooks)
        self.post_hooks[handle.id] = hook
        return handle

    def run_pre_hooks(self) -> None:
        """Call the pre-step hooks (in registration order)."""
        for hook in list(self.pre_hooks.values()):
            hook(self, (), {})

    def run_post_hooks(self) -> None:
        """Call the post-step hooks (in registration order)."""
        for hook in list(self.post_hooks.values()):
            hook(self, (), {})


class MethodSGD(_StepHooks, torch.optim.Optimizer):
    """Plain SGD (with coupled weight decay, as ``torch.optim.SGD``) over one method's
    parameters, which keeps its step hooks for :class:`ProbeBatch`: the batch updates every
    method at once and calls each method's hooks around that update (:meth:`run_pre_hooks`,
    :meth:`run_post_hooks`). :meth:`step` steps this method alone, hooks included.

    Example:
        >>> p = nn.Parameter(torch.ones(2))
        >>> opt = MethodSGD([p], lr=0.5, weight_decay=0.1)
        >>> seen = []
        >>> handle = opt.register_step_post_hook(lambda o, a, k: seen.append(float(p[0])))
        >>> p.grad = torch.ones(2)
        >>> opt.step()
        >>> seen  # 1 - 0.5 * (1 + 0.1 * 1)
        [0.44999998807907104]
    """

    def __init__(self, params: Any, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": float(lr), "weight_decay": float(weight_decay)})
        self._init_hooks()

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        """One SGD step of this method's parameters, with its hooks."""
        self.run_pre_hooks()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    d = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                    p.add_(d, alpha=-group["lr"])
        self.run_post_hooks()


class MethodUPGD(_StepHooks, UPGD):
    """crl's :class:`~crl.plasticity.upgd.UPGD` over one method's parameters (its rows of a
    :class:`ProbeBatch`, batched: the maximum utility is each network's), with its step hooks
    kept for the batch as :class:`MethodSGD` does. :meth:`update` is UPGD's step without the
    hooks (the batch calls it between every method's pre- and post-step hooks); :meth:`step`
    steps this method alone, hooks included. Give it a ``generator`` for its perturbations.

    Example:
        >>> w = nn.Parameter(torch.tensor([1.0, -1.0]))
        >>> opt = MethodUPGD([w], lr=0.1, sigma=0.0, weight_decay=0.0, adaptive=False)
        >>> w.grad = torch.tensor([0.5, 0.5])
        >>> opt.step()
        >>> w.data  # the useful weight (u = -g*w > 0) is protected; the other takes a step of lr * g
        tensor([ 0.9500, -1.0000])
    """

    def __init__(self, params: Any, lr: float, **kwargs: Any) -> None:
        super().__init__(params, lr=lr, **kwargs)
        self._init_hooks()

    def update(self) -> None:
        """One UPGD step of this method's parameters (no hooks)."""
        UPGD.step(self)

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        """One UPGD step of this method's parameters, with its hooks."""
        self.run_pre_hooks()
        self.update()
        self.run_post_hooks()


def expand_methods(t: torch.Tensor, n_methods: int) -> torch.Tensor:
    """``t`` (seeds x ...) repeated for every method: (methods * seeds) x ..., method-major.

    Example:
        >>> expand_methods(torch.tensor([[1], [2]]), 3).flatten().tolist()
        [1, 2, 1, 2, 1, 2]
    """
    return t.unsqueeze(0).expand(n_methods, *t.shape).reshape(n_methods * t.shape[0], *t.shape[1:])


class ProbeBatch:
    """The networks of ``len(weight_decays)`` methods, each ``seeds`` copies of ``template``
    (a ``Sequential`` of :class:`~crl.plasticity.nets.BatchedLinear` layers, each hidden one
    followed by ``nn.ReLU``), as one batch of ``methods x seeds`` networks, method-major.

    ``method_nets[m]`` is method ``m``'s view (attach its interventions to it, with
    ``method_nets[m].optimizer``); ``classification`` picks the loss: cross-entropy on class
    indices (the error is the misclassification) or the squared error (the error is that loss).
    ``upgd`` maps the methods that learn by UPGD to :class:`MethodUPGD`'s keyword arguments
    (their ``weight_decays`` entry is unused): the batch's SGD step leaves their rows alone and
    each steps its rows by UPGD's own code.
    """

    def __init__(
        self,
        template: nn.Sequential,
        lr: float,
        weight_decays: list[float],
        classification: bool = False,
        upgd: dict[int, dict[str, Any]] | None = None,
    ) -> None:
        upgd = upgd or {}
        linears = [m for m in template if isinstance(m, BatchedLinear)]
        self.seeds, self.n_methods = linears[0].n_nets, len(weight_decays)
        self.n_nets, self.classification = self.seeds * self.n_methods, classification
        shapes = [(lin.out_features, lin.in_features) for lin in linears]
        width = sum(o * i + o for o, i in shapes)
        self.flat = torch.zeros(self.n_nets, width)
        self.grad = torch.zeros(self.n_nets, width)
        self.weights, self.biases, self.w_grads, self.b_grads = self._views(shapes)
        with torch.no_grad():
            for w, b, lin in zip(self.weights, self.biases, linears, strict=True):
                w.copy_(expand_methods(lin.weight, self.n_methods))
                b.copy_(expand_methods(lin.bias, self.n_methods))
        self.w_t = [w.transpose(1, 2) for w in self.weights]  # views: they follow every update
        self.b_rows = [b.unsqueeze(1) for b in self.biases]
        sgd = [m not in upgd for m in range(self.n_methods)]
        decays = [wd if s else 0.0 for wd, s in zip(weight_decays, sgd, strict=True)]
        per_net = torch.tensor(decays, dtype=torch.float32).repeat_interleave(self.seeds).unsqueeze(1)
        self.weight_decay = per_net if any(decays) else None
        self.any_sgd = any(sgd)
        lrs = [-float(lr) if s else 0.0 for s in sgd]  # 0: UPGD's rows are left as they are
        self.neg_lr = torch.tensor(lrs, dtype=torch.float32).repeat_interleave(self.seeds).unsqueeze(1)
        self.method_nets = [self._method_net(template, m, lr, wd, upgd.get(m)) for m, wd in enumerate(decays)]
        self.upgd = [self.method_nets[m].optimizer for m in sorted(upgd)]
        self._taps: list[tuple[int, nn.Module, slice]] = []
        """(hidden layer, activation module, rows) of every method's feature-capture hooks."""

    def _views(self, shapes: list[tuple[int, int]]) -> tuple[list[torch.Tensor], ...]:
        """Each layer's weight and bias, as views into the parameter and the gradient rows."""
        out: tuple[list[torch.Tensor], ...] = ([], [], [], [])
        at = 0
        for o, i in shapes:
            for flat, ws, bs in ((self.flat, out[0], out[1]), (self.grad, out[2], out[3])):
                ws.append(flat[:, at : at + o * i].view(self.n_nets, o, i))
                bs.append(flat[:, at + o * i : at + o * i + o])
            at += o * i + o
        return out

    def _method_net(
        self, template: nn.Sequential, m: int, lr: float, weight_decay: float, upgd: dict[str, Any] | None
    ) -> nn.Sequential:
        """Method ``m``'s view: a copy of ``template`` whose parameters are its rows."""
        net = copy.deepcopy(template)
        rows = slice(m * self.seeds, (m + 1) * self.seeds)
        for k, lin in enumerate(mod for mod in net if isinstance(mod, BatchedLinear)):
            for name, data, grad in (
                ("weight", self.weights[k], self.w_grads[k]),
                ("bias", self.biases[k], self.b_grads[k]),
            ):
                p = nn.Parameter(data[rows])  # shares the batch's storage
                p._crl_batched = True  # type: ignore[attr-defined]
                p.grad = grad[rows]
                setattr(lin, name, p)
        if upgd is None:
            net.optimizer = MethodSGD(net.parameters(), lr=lr, weight_decay=weight_decay)
        else:
            net.optimizer = MethodUPGD(net.parameters(), lr=lr, **upgd)
        return net

    def ready(self) -> None:
        """Check the methods' views after their interventions are attached (hooks that a
        hand-written pass would not call are refused), and find their feature-capture hooks.
        """
        self._taps = []
        for m, net in enumerate(self.method_nets):
            for mod in net.modules():
                if mod._forward_pre_hooks or mod._backward_hooks or mod._backward_pre_hooks:
                    raise ValueError(f"the probe's batched learner cannot call {type(mod).__name__}'s hooks")
                if any(not is_feature_hook(h) for h in mod._forward_hooks.values()):
                    raise ValueError(f"{type(mod).__name__} has a forward hook other than crl's feature capture")
            if any(has_grad_hooks(p) for p in net.parameters()):
                raise ValueError("a parameter of the probe's learner has gradient hooks")
            rows = slice(m * self.seeds, (m + 1) * self.seeds)
            acts = [mod for mod in net if isinstance(mod, nn.ReLU)]
            self._taps += [(k, act, rows) for k, act in enumerate(acts) if act._forward_hooks]

    def shared(self) -> bool:
        """Whether every method's parameters still are its rows of the batch (an intervention
        that replaced a parameter tensor would have cut its method off).
        """
        for m, net in enumerate(self.method_nets):
            lins = [mod for mod in net if isinstance(mod, BatchedLinear)]
            for k, lin in enumerate(lins):
                start = m * self.seeds
                if lin.weight.data_ptr() != self.weights[k][start].data_ptr():
                    return False
                if lin.bias.data_ptr() != self.biases[k][start].data_ptr() or lin.bias.grad is None:
                    return False
        return True

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input and every layer's output for ``x`` (nets x 1 x inputs); the hidden
        features go to the feature-capture hooks of their methods.
        """
        outs = [x]
        h = x
        last = len(self.weights) - 1
        for k in range(last + 1):
            h = torch.bmm(h, self.w_t[k]).add_(self.b_rows[k])
            if k < last:
                h = h.relu_()
            outs.append(h)
        for k, act, rows in self._taps:
            for hook in list(act._forward_hooks.values()):
                hook(act, (), outs[k + 1][rows])
        return outs

    def loss_grad(self, out: torch.Tensor, y: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
        """The gradient of each network's loss on its output ``out``; its error goes to ``err``."""
        if not self.classification:
            d = out - y
            torch.mul(d, d, out=err.view_as(d))
            return d * 2.0  # d/d(out) (out - y)^2, as autograd's pow backward
        logp = torch.log_softmax(out, -1)
        torch.ne(out.argmax(-1), y, out=err.view_as(y))
        g = torch.zeros_like(logp).scatter_(-1, y.unsqueeze(-1), -1.0)  # nll_loss backward
        return torch.ops.aten._log_softmax_backward_data(g, logp, -1, logp.dtype)

    def backward(self, outs: list[torch.Tensor], g: torch.Tensor) -> None:
        """Write the gradients of every network's loss (``g``: d loss / d output) into the rows."""
        threshold_backward = torch.ops.aten.threshold_backward
        for k in range(len(self.weights) - 1, -1, -1):
            torch.mul(g.transpose(1, 2), outs[k], out=self.w_grads[k])  # g^T x: one example, one product each
            self.b_grads[k].copy_(g.squeeze(1))
            if k:
                g = threshold_backward(torch.bmm(g, self.weights[k]), outs[k], 0)

    def update(self) -> None:
        """Every method's pre-step hooks, one SGD step of every network (UPGD's rows: a step
        of 0) then UPGD's step of its methods' rows, the post-step hooks.
        """
        for net in self.method_nets:
            net.optimizer.run_pre_hooks()
        if self.weight_decay is not None:
            self.grad.addcmul_(self.flat, self.weight_decay)  # grad + wd * p, torch SGD's coupled weight decay
        if self.any_sgd:
            self.flat.addcmul_(self.grad, self.neg_lr)
        for opt in self.upgd:
            opt.update()
        for net in self.method_nets:
            net.optimizer.run_post_hooks()

    def step(self, x: torch.Tensor, y: torch.Tensor, err: torch.Tensor) -> None:
        """Learn one example per network: inputs ``x`` (nets x 1 x inputs), targets ``y``
        (nets x 1 x outputs, or nets x 1 class indices); the errors go to ``err`` (nets).
        """
        outs = self.forward(x)
        self.backward(outs, self.loss_grad(outs[-1], y, err))
        self.update()
