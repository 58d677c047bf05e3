"""PSGD Kron (Xi-Lin Li's preconditioned SGD with Kronecker-factored preconditioners), the
optimizer Plasticine offers as ``--use_kron_optimizer``, run by the package ``kron-torch``.

Each parameter tensor ``G`` (a weight matrix ``m x n``) keeps a momentum ``m_t`` (``b1``,
debiased) and one preconditioner factor per dimension, ``Q = Q_1 (x) Q_2`` (upper triangular
``m x m`` and ``n x n``; diagonal for 1-D tensors and dimensions above
``max_size_triangular``). The step is ``theta <- theta - lr * clip_rms(P m_t)`` with
``P = Q^T Q`` applied factor by factor and the update's RMS clipped to 1.1; with probability
``preconditioner_update_probability`` (by default a schedule: 1 for 500 steps, then
``exp(-0.001 (t - 500))`` down to 0.03) each ``Q_i`` first takes one step of size ``precond_lr``
on the Lie group, fitted so that ``P`` whitens the momenta (Li 2018, arXiv:1809.10232; Li 2024,
arXiv:2402.11858). Balancing of the factors' scales happens on about 1 in 100 updates.

The update itself is the package's, unchanged: :class:`Kron` holds the same state and
calls ``kron_torch.Kron.step`` on it. What crl adds:

* **exact checkpoints**: the step counter and update counter of the schedule and the
  package's own ``random.Random`` (which draws the balancing steps) are in
  :meth:`Kron.state_dict`; the package keeps them as attributes, outside its state dict. The
  preconditioner's random probe vectors come from torch's global generator, which crl's
  checkpoints restore. torch's ``Optimizer.load_state_dict`` also turns the package's
  einsum expressions (strings in the per-parameter state) into the text of generator objects;
  :meth:`Kron.load_state_dict` keeps them as they were saved.
* **eager execution**: the package decorates its kernels with ``torch.compile``; compiling
  them took 76 s on the first step of a 41-parameter network on our 2-core CPU machines, so
  crl runs them eagerly (``torch.compiler.set_stance("force_eager")``), which is the same
  arithmetic (the random probes then come straight from torch's generator).
* **no construction cost**: the package (and ``torch._dynamo``, which it imports) is loaded
  on the first step, so checking a config does not import it; its missing install is
  reported when the optimizer is built.

Install: ``pip install --no-deps "kron-torch==0.3.3" opt_einsum`` (its metadata requires
triton, which the CPU path never imports), or ``pip install "crl[kron]"`` (with triton).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import io
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from crl.errors import ConfigError, check_int, check_non_negative, check_number

__all__ = ["Kron", "UpdateSchedule", "INSTALL"]

#: How to install the package the optimizer runs.
INSTALL = 'pip install --no-deps "kron-torch==0.3.3" opt_einsum'

MEMORY_SAVE_MODES = (None, "smart_one_diag", "one_diag", "all_diag")


@dataclass(frozen=True)
class UpdateSchedule:
    """The package's default preconditioner update probability at step ``n``:
    ``clamp(max_prob * exp(-decay * (n - flat_start)), min_prob, max_prob)``, in float32 as
    ``kron_torch.precond_update_prob_schedule`` computes it, but plain data (it goes into
    checkpoints) and without ``torch.compile``.

    Example:
        >>> s = UpdateSchedule()
        >>> [round(float(s(torch.tensor(n, dtype=torch.float32))), 4) for n in (0, 500, 1500, 5000)]
        [1.0, 1.0, 0.3679, 0.03]
    """

    max_prob: float = 1.0
    min_prob: float = 0.03
    decay: float = 0.001
    flat_start: float = 500.0

    def __call__(self, n: torch.Tensor) -> torch.Tensor:
        f32 = torch.float32
        hi, lo = torch.tensor(self.max_prob, dtype=f32), torch.tensor(self.min_prob, dtype=f32)
        prob = hi * torch.exp(-torch.tensor(self.decay, dtype=f32) * (n - torch.tensor(self.flat_start, dtype=f32)))
        return prob.clamp_(min=lo, max=hi)


@functools.cache
def _package_step() -> Callable[..., Any]:
    """``kron_torch.Kron.step`` without its decorators (torch's hook wrapper, ``no_grad``)."""
    try:
        from kron_torch import kron
    except ImportError as e:  # pragma: no cover - checked when the optimizer is built
        raise ConfigError(f"optimizer 'kron' needs the package kron-torch ({e}); install it: {INSTALL}") from None
    return inspect.unwrap(kron.Kron.step)


def _eager() -> contextlib.AbstractContextManager[Any]:
    """A context in which ``torch.compile``'d functions run eagerly."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is not None:
        return set_stance("force_eager")
    dynamo = importlib.import_module("torch._dynamo")  # pragma: no cover - torch < 2.6
    return dynamo.config.patch(disable=True)  # pragma: no cover


class Kron(torch.optim.Optimizer):
    """PSGD Kron from ``kron-torch`` 0.3.3 (see :mod:`crl.plasticity.kron`); the arguments are
    the package's, with ``preconditioner_update_probability`` a number in (0, 1] or ``None``
    for the package's default schedule (:class:`UpdateSchedule`).

    Example:
        >>> Kron([torch.nn.Parameter(torch.zeros(2))], lr=1e-3, memory_save_mode="most")
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: memory_save_mode must be null or one of smart_one_diag, one_diag, all_diag, got 'most'
    """

    def __init__(
        self,
        params: Any,
        lr: float = 3e-4,
        b1: float = 0.9,
        weight_decay: float = 0.0,
        preconditioner_update_probability: float | None = None,
        max_size_triangular: int = 8192,
        min_ndim_triangular: int = 2,
        memory_save_mode: str | None = None,
        momentum_into_precond_update: bool = True,
        precond_lr: float = 0.1,
        precond_init_scale: float = 1.0,
        merge_dims: bool = True,
    ) -> None:
        if importlib.util.find_spec("kron_torch") is None:
            raise ConfigError(f"optimizer 'kron' needs the package kron-torch; install it: {INSTALL}")
        prob = preconditioner_update_probability
        defaults = {
            "lr": check_non_negative("lr", lr),
            "b1": check_number("b1", b1, 0, 1, high_open=True),
            "weight_decay": check_non_negative("weight_decay", weight_decay),
            "preconditioner_update_probability": UpdateSchedule()
            if prob is None
            else check_number("preconditioner_update_probability", prob, 0, 1, low_open=True),
            "max_size_triangular": check_int("max_size_triangular", max_size_triangular),
            "min_ndim_triangular": check_int("min_ndim_triangular", min_ndim_triangular),
            "memory_save_mode": _memory_save_mode(memory_save_mode),
            "momentum_into_precond_update": _flag("momentum_into_precond_update", momentum_into_precond_update),
            "precond_lr": check_non_negative("precond_lr", precond_lr, strict=True),
            "precond_init_scale": check_non_negative("precond_init_scale", precond_init_scale, strict=True),
            "merge_dims": _flag("merge_dims", merge_dims),
            "mu_dtype": None,
            "precond_dtype": None,
        }
        super().__init__(params, defaults)
        # the package's counters and balancing stream, seeded as the package seeds them
        self._prob_step = torch.tensor(0, dtype=torch.int32)
        self._update_counter = torch.tensor(0, dtype=torch.int32)
        self.rng = random.Random(42)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """The package's step, eagerly; its print of the state sizes on a first step muted."""
        package_step = _package_step()
        fresh = any(p.grad is not None and p not in self.state for p in self._params())
        quiet = contextlib.redirect_stdout(io.StringIO()) if fresh else contextlib.nullcontext()
        with _eager(), quiet:
            return package_step(self, closure)

    def _params(self) -> Iterator[torch.Tensor]:
        for group in self.param_groups:
            yield from group["params"]

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["kron"] = {
            "prob_step": int(self._prob_step),
            "update_counter": int(self._update_counter),
            "rng": self.rng.getstate(),
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sd = dict(state_dict)
        extra = sd.pop("kron", None)
        # torch casts every iterable in the state element-wise, strings included: keep the
        # einsum expressions out of its hands
        exprs = {k: v["exprs"] for k, v in sd["state"].items() if "exprs" in v}
        sd["state"] = {k: {n: x for n, x in v.items() if n != "exprs"} for k, v in sd["state"].items()}
        super().load_state_dict(sd)
        ids = [i for g in sd["param_groups"] for i in g["params"]]
        for i, p in zip(ids, self._params()):
            if i in exprs:
                self.state[p]["exprs"] = exprs[i]
        if extra is not None:
            self._prob_step = torch.tensor(extra["prob_step"], dtype=torch.int32)
            self._update_counter = torch.tensor(extra["update_counter"], dtype=torch.int32)
            self.rng.setstate(extra["rng"])


def _memory_save_mode(mode: Any) -> str | None:
    if mode not in MEMORY_SAVE_MODES:
        valid = ", ".join(str(m) for m in MEMORY_SAVE_MODES[1:])
        raise ConfigError(f"memory_save_mode must be null or one of {valid}, got {mode!r}")
    return mode


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value
