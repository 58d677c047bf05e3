"""Hand-written forward and backward passes of SB3's MLP networks, for PPO's update.

A PPO minibatch step on SB3's ``MlpPolicy`` runs about a hundred small torch operations
through autograd. :class:`MlpPlan` computes the same forward pass and the same gradients of a
plain MLP (a ``Sequential`` of ``Linear`` layers each followed by ``ReLU`` or ``Tanh``, then a
``Linear`` head) by hand, with the few operations the math needs. Its matrix products go to
torch's own ``addmm``/``mm`` (MKL on x86), except on AVX-512 CPUs of other vendors than Intel,
where MKL runs its AVX2 kernels and they go to oneDNN
(``torch.ops.mkldnn._linear_pointwise``, which picks its kernels by the instruction set):
:func:`onednn_linear_preferred`. The numbers are the same as autograd's up to float rounding
(the products sum in another order); the gradients land in the parameters' ``.grad`` exactly
where ``backward()`` would put them, so optimizers and their hooks work unchanged.

Measured on the 2-core AMD EPYC (AVX-512) of ``docs/performance.md``: a 128x256 by 256x256
product takes 163 us with MKL and 88-95 us with oneDNN; the forward and backward pass of a
256x256 ReLU policy with PPO's Gaussian loss on a minibatch of 128 takes 815 us through
autograd and 500 us by hand. On a 2-core AMD EPYC with AVX2 only, and on a 2-core Intel Xeon
with AVX-512, oneDNN was the slower one. There the hand-written update of Dohare's nets
(``benchmarks/update_step.py``, critic worker) took 0.432 s with oneDNN, 0.389 s through
autograd and 0.319 s by hand with torch's kernels (AVX2 EPYC), and 0.26 s with oneDNN, 0.25 s
through autograd and 0.21 s with torch's kernels (Xeon).

What it leaves to autograd (:meth:`MlpPlan.unsupported` says why): other layer types
(``LayerNorm``, CReLU, dropout: :func:`random_modules`, ...), subclasses of ``Linear``, hooks
other than crl's feature capture (:func:`crl.plasticity.nets.capture_features`, which
:meth:`MlpPlan.forward` calls with the activation's output, as a module call would), gradient
hooks on parameters, frozen or non-float32 parameters, and tensors off the CPU.

Example:
    >>> import torch
    >>> from torch import nn
    >>> body, head = nn.Sequential(nn.Linear(3, 8), nn.ReLU()), nn.Linear(8, 2)
    >>> plan = MlpPlan.of(body, head)
    >>> x = torch.randn(5, 3)
    >>> out, saved = plan.forward(x)
    >>> bool(torch.allclose(out, head(body(x)), atol=1e-6))
    True
    >>> plan.backward(saved, torch.ones(5, 2))
    >>> head(body(x)).sum().backward()  # autograd adds the same gradient again
    >>> bool(torch.allclose(head.bias.grad, torch.full((2,), 10.0)))
    True
"""

from __future__ import annotations

import functools
import platform
from typing import Any

import torch
from torch import nn

from crl.plasticity.nets import activation_name

__all__ = [
    "MlpPlan",
    "accumulate_grad",
    "cpu_vendor",
    "global_module_hooks",
    "has_grad_hooks",
    "is_feature_hook",
    "onednn_linear_available",
    "onednn_linear_preferred",
    "random_modules",
]

_PASSES = ("relu", "tanh")  # the activations (by crl.plasticity.nets name) with hand-written passes
_NO_SCALARS: list[Any] = []
_VENDORS = ("GenuineIntel", "AuthenticAMD", "HygonGenuine", "CentaurHauls")  # as CPUID spells them


@functools.cache
def onednn_linear_available() -> bool:
    """Whether this torch computes float32 ``x @ w.T + b`` with oneDNN on the CPU, and gets the
    same numbers as ``torch.nn.functional.linear`` up to float rounding (checked once).

    Example:
        >>> isinstance(onednn_linear_available(), bool)
        True
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        op = torch.ops.mkldnn._linear_pointwise
        gen = torch.Generator().manual_seed(0)
        x, w, b, y = (torch.randn(*s, generator=gen) for s in ((33, 20), (17, 20), (17,), (33, 17)))
        with torch.no_grad():
            got = [
                op(x, w, b, "none", _NO_SCALARS, ""),
                op(x, w, b, "relu", _NO_SCALARS, ""),
                op(y.t(), x.t(), None, "none", _NO_SCALARS, ""),  # transposed (strided) operands
                op(y, w.t(), None, "none", _NO_SCALARS, ""),
            ]
            want = [torch.addmm(b, x, w.t()), torch.relu(torch.addmm(b, x, w.t())), y.t() @ x, y @ w]
        return all(
            g.shape == e.shape and torch.allclose(g, e, rtol=1e-5, atol=1e-5) for g, e in zip(got, want, strict=True)
        )
    except Exception:  # an op missing or failing in this build: use torch's own kernels
        return False


@functools.cache
def cpu_vendor() -> str:
    """The CPU's vendor id as the operating system reports it (``"GenuineIntel"``,
    ``"AuthenticAMD"``, ...; ``""`` where it cannot tell): ``vendor_id`` of ``/proc/cpuinfo``
    on Linux, else the vendor named in :func:`platform.processor` (Windows).

    Example:
        >>> isinstance(cpu_vendor(), str)
        True
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    return value.strip()
    except OSError:
        pass
    words = platform.processor().replace(",", " ").split()  # "Intel64 Family 6 ..., GenuineIntel"
    return next((w for w in words if w in _VENDORS), "")


@functools.cache
def onednn_linear_preferred() -> bool:
    """Whether :class:`MlpPlan` sends its matrix products to oneDNN rather than torch's own
    ``addmm``/``mm`` (MKL on x86): where :func:`onednn_linear_available`, the CPU runs AVX-512
    kernels (torch's ``get_cpu_capability()``) and its vendor is known and not Intel
    (:func:`cpu_vendor`). MKL runs its AVX-512 kernels on Intel CPUs only; oneDNN picks its
    kernels by the instruction set. Decided by the CPU, not by timing, so that every run on a
    machine computes with the same kernels (the same float rounding).

    Measured (``docs/performance.md``), the products of a 128-row minibatch of PPO's nets:

    - a 2-core AMD EPYC with AVX-512 (MKL on its AVX2 kernels): a 128x256 by 256x256 product
      took 88-95 us with oneDNN against MKL's 163 us;
    - a 2-core AMD EPYC with AVX2 only: oneDNN took 1.1-1.2x MKL's time for the 256-wide
      products and 1.4-4x for the heads' thin ones;
    - a 2-core Intel Xeon with AVX-512: oneDNN took 1.1-1.9x MKL's time for the 256-wide
      products and 2-7x for the thin ones; the hand-written update of Dohare's nets took
      0.21 s with MKL and 0.26 s with oneDNN (``benchmarks/update_step.py``, critic worker).

    Example:
        >>> onednn_linear_preferred() <= onednn_linear_available()
        True
    """
    capability = str(torch.backends.cpu.get_cpu_capability())
    vendor = cpu_vendor()
    return capability.startswith("AVX512") and vendor not in ("", "GenuineIntel") and onednn_linear_available()


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, relu: bool = False) -> torch.Tensor:
    """``x @ w.T + b`` (then ReLU), with oneDNN where :func:`onednn_linear_preferred`."""
    if onednn_linear_preferred():
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "relu" if relu else "none", _NO_SCALARS, "")
    out = torch.addmm(b, x, w.t()) if b is not None else x @ w.t()
    return out.relu_() if relu else out


def accumulate_grad(p: torch.Tensor, g: torch.Tensor) -> None:
    """Add ``g`` to ``p.grad`` as autograd does (``g`` becomes the gradient when there is none)."""
    if p.grad is None:
        p.grad = g
    else:
        p.grad.add_(g)


#: Module types whose training-mode output is random (torch's dropout family).
_RANDOM = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def random_modules(*modules: nn.Module) -> list[str]:
    """The type names of the modules inside ``modules`` whose training-mode output is random
    (dropout). A hand-written pass or another process would draw their masks from another
    random stream than torch's: crl's fast paths leave such networks to autograd.

    Example:
        >>> random_modules(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Dropout(0.1)), nn.Linear(2, 1))
        ['Dropout']
    """
    return [type(m).__name__ for module in modules for m in module.modules() if isinstance(m, _RANDOM)]


def is_feature_hook(fn: Any) -> bool:
    """Whether the forward hook ``fn`` is crl's feature capture (:func:`crl.plasticity.nets.capture_features`)."""
    return bool(getattr(fn, "_crl_features", False))


def global_module_hooks() -> bool:
    """Whether module hooks are registered for every module (they would see no module call here)."""
    from torch.nn.modules import module as _module

    return bool(_module._global_forward_hooks or _module._global_forward_pre_hooks or _module._global_backward_hooks)


def has_grad_hooks(p: torch.Tensor) -> bool:
    """Whether the parameter ``p`` has gradient hooks (autograd would call them)."""
    return bool(p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None))


class MlpPlan:
    """The forward and backward pass of ``head(body(x))`` by hand (see the module docstring).

    Build it with :meth:`of`, which returns ``None`` for networks it does not cover. The plan
    reads the modules' parameters at every call, so in-place updates and ``p.data = ...`` reach
    it; :meth:`matches` says whether a policy still has these modules and hooks.
    """

    def __init__(self, body: nn.Module, head: nn.Linear) -> None:
        self.body, self.head = body, head
        mods = list(body.children()) if isinstance(body, nn.Sequential) else []
        self.linears: list[nn.Linear] = [*mods[0::2], head]  # type: ignore[list-item]
        self.acts: list[nn.Module] = mods[1::2]
        self.kinds = [str(activation_name(a)) for a in self.acts]
        self._modules = [body, *mods, head]
        self._signature = self._hooks()

    @property
    def params(self) -> list[torch.Tensor]:
        """The parameters, in the order of ``body.parameters()`` then ``head.parameters()``
        (read at every call: a parameter replaced by a new one gets the gradient).
        """
        return [p for lin in self.linears for p in (lin.weight, lin.bias) if p is not None]

    @staticmethod
    def unsupported(body: nn.Module, head: nn.Module) -> str | None:
        """Why ``head(body(x))`` is not covered (``None`` when it is)."""
        if global_module_hooks():
            return "global module hooks are registered"
        if type(head) is not nn.Linear:
            return f"head {type(head).__name__} is not a Linear layer"
        if not isinstance(body, nn.Sequential):
            return f"body {type(body).__name__} is not a Sequential"
        if random := random_modules(body, head):
            return f"{random[0]} layers draw random masks (autograd draws them from torch's stream)"
        mods = list(body.children())
        for i, m in enumerate(mods):
            if i % 2 == 0 and type(m) is not nn.Linear:
                return f"{type(m).__name__} where a Linear layer was expected"
            if i % 2 == 1 and activation_name(m) not in _PASSES:
                return f"{type(m).__name__} after a Linear layer (only {', '.join(_PASSES)})"
        if len(mods) % 2:
            return "the body ends with a Linear layer without an activation"
        acts = {id(a) for a in mods[1::2]}
        for m in [body, *mods, head]:
            if m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
                return f"{type(m).__name__} has pre-forward or backward hooks"
            if m._forward_hooks and id(m) not in acts:
                return f"{type(m).__name__} has forward hooks (only activations' feature capture is replayed)"
            if any(not is_feature_hook(h) for h in m._forward_hooks.values()):
                return f"{type(m).__name__} has a forward hook other than crl's feature capture"
        for p in [*body.parameters(), *head.parameters()]:
            if p.dtype != torch.float32 or p.device.type != "cpu" or not p.requires_grad:
                return "parameters must be float32, on the CPU and trainable"
            if has_grad_hooks(p):
                return "a parameter has gradient hooks"
        return None

    @classmethod
    def of(cls, body: nn.Module, head: nn.Module) -> MlpPlan | None:
        """A plan for ``head(body(x))``, or ``None`` where :meth:`unsupported` gives a reason."""
        if cls.unsupported(body, head) is not None:
            return None
        return cls(body, head)  # type: ignore[arg-type]

    def _hooks(self) -> tuple[Any, ...]:
        return (
            global_module_hooks(),
            tuple(list(self.body.children())),  # a layer swapped inside the body
            tuple(
                (tuple(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
                for m in self._modules
            ),
        )

    def matches(self, body: nn.Module, head: nn.Module) -> bool:
        """Whether ``body`` and ``head`` are still this plan's modules, with the same hooks
        (an intervention may swap modules or add hooks between two minibatches).
        """
        return body is self.body and head is self.head and self._hooks() == self._signature

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``head(body(x))`` and what :meth:`backward` needs (the input of every layer).

        Feature-capture hooks on the activations are called with their output, as a module
        call would call them (in the caller's grad mode, so they record in training).
        """
        inputs = [x]
        with torch.no_grad():
            h = x
            for lin, kind in zip(self.linears[:-1], self.kinds, strict=True):
                h = _linear(h, lin.weight, lin.bias, relu=kind == "relu")
                if kind == "tanh":
                    h = h.tanh_()
                inputs.append(h)
            lin = self.linears[-1]
            out = _linear(h, lin.weight, lin.bias)
        for act, h in zip(self.acts, inputs[1:], strict=True):
            for hook in list(act._forward_hooks.values()):
                hook(act, (), h)
        return out, inputs

    def backward(self, inputs: list[torch.Tensor], grad_out: torch.Tensor) -> None:
        """Add the gradients of ``(head(body(x)) * grad_out).sum()`` to the parameters' ``.grad``
        (``inputs`` from :meth:`forward` on ``x``), as ``out.backward(grad_out)`` would.
        """
        for p, g in zip(self.params, self.param_grads(inputs, grad_out), strict=True):
            accumulate_grad(p, g)

    def param_grads(self, inputs: list[torch.Tensor], grad_out: torch.Tensor) -> list[torch.Tensor]:
        """The gradients of ``(head(body(x)) * grad_out).sum()``, one per tensor of :attr:`params`."""
        per_layer: list[list[torch.Tensor]] = []
        threshold_backward, tanh_backward = torch.ops.aten.threshold_backward, torch.ops.aten.tanh_backward
        with torch.no_grad():
            g = grad_out
            for k in range(len(self.linears) - 1, -1, -1):
                lin = self.linears[k]
                w_grad = _linear(g.t(), inputs[k].t(), None)  # g.T @ input
                per_layer.append([w_grad] if lin.bias is None else [w_grad, g.sum(0)])
                if k == 0:
                    break
                g = _linear(g, lin.weight.t(), None)  # d/d(input) = g @ W
                if self.kinds[k - 1] == "relu":  # inputs[k] is the ReLU's output: zero where it is
                    g = threshold_backward(g, inputs[k], 0)
                else:
                    g = tanh_backward(g, inputs[k])
        return [g for layer in reversed(per_layer) for g in layer]
