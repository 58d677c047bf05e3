"""A lean step of torch's fused Adam/AdamW on the CPU, the one :class:`crl.fast.FastPPO` takes.

``opt.step()`` of torch's fused Adam spends most of a small network's step on overheads (a
profiler record, grouping the tensors by device and dtype, per-call checks). :func:`step` runs
the same step without them: the step pre-hooks (global, then the optimizer's), the same fused
kernel on the same tensors (bitwise the same parameters and state), then the post-hooks. Any
other optimizer, or an Adam with options the kernel call here leaves out, takes its own
``opt.step()``.

This module reads torch's private hook tables (``torch.optim.optimizer``'s global hooks and the
optimizer's own) to call the hooks as ``opt.step()`` would and to tell whether they are local
(:func:`local_hooks`): it is the one place in crl that does.
"""

from __future__ import annotations

import functools
from itertools import chain
from typing import Any

import torch
from torch.optim import optimizer as _optim

__all__ = ["eligible", "kernel_args", "local_hooks", "step"]

#: Per parameter group: the group and its lists of parameters, gradients, first and second
#: moments and step counters, as torch's fused Adam kernel takes them.
KernelArgs = list[tuple[dict[str, Any], list[list[torch.Tensor]]]]


def eligible(opt: torch.optim.Optimizer) -> bool:
    """Whether :func:`step` may run ``opt``'s step itself: torch's fused Adam/AdamW on the CPU
    without the options its kernel call here leaves out, and no step patched on the instance
    (an LR scheduler's counter) or gradient scaler attached.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> eligible(torch.optim.Adam([p], fused=True)), eligible(torch.optim.SGD([p], lr=0.1))
        (True, False)
    """
    if type(opt) not in (torch.optim.Adam, torch.optim.AdamW) or "step" in vars(opt):
        return False
    if getattr(opt, "grad_scale", None) is not None or getattr(opt, "found_inf", None) is not None:
        return False
    for group in opt.param_groups:
        if not group.get("fused") or group["amsgrad"] or group["maximize"] or group["capturable"]:
            return False
        if group["differentiable"] or isinstance(group["lr"], torch.Tensor):
            return False
    return True


def kernel_args(opt: torch.optim.Optimizer) -> KernelArgs | None:
    """Per parameter group, the argument lists of torch's fused Adam kernel (parameters with a
    gradient, their gradients, first and second moments, step counters), or ``None`` where a
    parameter has no Adam state yet (the optimizer's own step creates it) or a gradient is
    sparse, or a tensor is off the CPU or not float32.
    """
    state, out = opt.state, []
    f32 = torch.float32
    for group in opt.param_groups:
        params, grads, exp_avgs, exp_avg_sqs, steps = lists = [[], [], [], [], []]
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            st = state.get(p)
            if not st or "exp_avg" not in st or g.dtype != f32 or p.dtype != f32 or g.is_sparse:
                return None
            if p.device.type != "cpu":
                return None
            params.append(p)
            grads.append(g)
            exp_avgs.append(st["exp_avg"])
            exp_avg_sqs.append(st["exp_avg_sq"])
            steps.append(st["step"])
        out.append((group, lists))
    return out


def step(opt: torch.optim.Optimizer) -> None:
    """``opt.step()``, and for torch's fused Adam/AdamW on the CPU the same step without most of
    its per-call overheads (see the module docstring).

    Example:
        >>> p = torch.nn.Parameter(torch.ones(3))
        >>> opt = torch.optim.Adam([p], lr=0.1, fused=True)
        >>> for _ in range(2):
        ...     p.grad = torch.ones(3)
        ...     step(opt)
        >>> p.detach(), opt.state[p]["step"]
        (tensor([0.8000, 0.8000, 0.8000]), tensor(2.))
    """
    if not eligible(opt):
        opt.step()
        return
    _pre_hooks(opt)
    groups = kernel_args(opt)
    if groups is None:  # the first step (it creates the Adam state), or unusual tensors
        type(opt).step.__wrapped__(opt)  # torch's step without its hook wrapper: the hooks run here
    else:
        _fused_kernel(groups)
    for post_hook in chain(opt._optimizer_step_post_hooks.values(), _optim._global_optimizer_post_hooks.values()):
        post_hook(opt, (opt,), {})


def local_hooks(opt: torch.optim.Optimizer | None) -> bool:
    """Whether every step hook ``opt.step()`` calls (global and the optimizer's, before and
    after the step) is a method of an object that declares ``local_step_hooks = True``: its
    hooks read or write only the stepped optimizer's parameters, gradients and state, or raise,
    and draw nothing from torch's global generator (:class:`crl.run.callbacks.NanGuard`, crl's
    weight regularisers). Work that does not touch that optimizer may then run before its step
    or beside it (another process) with the same results. ``None`` (no optimizer): ``True``.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(1))
        >>> opt = torch.optim.Adam([p])
        >>> local_hooks(opt)
        True
        >>> handle = opt.register_step_post_hook(lambda o, args, kwargs: torch.rand(1))
        >>> local_hooks(opt)
        False
        >>> handle.remove()
    """
    if opt is None:
        return True
    tables = (
        _optim._global_optimizer_pre_hooks,
        opt._optimizer_step_pre_hooks,
        opt._optimizer_step_post_hooks,
        _optim._global_optimizer_post_hooks,
    )
    owners = [getattr(h, "__self__", None) for t in tables for h in t.values()]
    return all(getattr(owner, "local_step_hooks", False) is True for owner in owners)


def _pre_hooks(opt: torch.optim.Optimizer) -> None:
    """The step pre-hooks, global then the optimizer's, as ``opt.step()`` calls them."""
    for pre_hook in chain(_optim._global_optimizer_pre_hooks.values(), opt._optimizer_step_pre_hooks.values()):
        result = pre_hook(opt, (opt,), {})
        if result is not None and not (isinstance(result, tuple) and len(result) == 2):
            raise RuntimeError(f"an optimizer step pre-hook must return None or (args, kwargs), got {result}")


@functools.cache
def _ones(n: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """Scalar ones, ``n`` of ``dtype`` (read only), to add to the step counters.

    ``torch._foreach_add_(steps, _ones(...))`` adds 1 as ``_foreach_add_(steps, 1)`` does, about
    3x faster on the CPU (no scalar to wrap per tensor; 7.7 us against 22.6 us for 10 counters,
    one-off timing on the 2-core EPYC).
    """
    return [torch.ones((), dtype=dtype) for _ in range(n)]


def _fused_kernel(groups: KernelArgs) -> None:
    """Torch's fused Adam (or AdamW) kernel on every group's tensors, counters first."""
    with torch.no_grad():
        for group, (params, grads, exp_avgs, exp_avg_sqs, steps) in groups:
            if not params:
                continue
            torch._foreach_add_(steps, _ones(len(steps), steps[0].dtype))
            kernel = torch._fused_adamw_ if group.get("decoupled_weight_decay") else torch._fused_adam_
            beta1, beta2 = group["betas"]
            kernel(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=float(beta1),
                beta2=float(beta2),
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
