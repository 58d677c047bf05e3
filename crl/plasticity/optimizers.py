"""Optimizers by name, passed to SB3 as ``optimizer_class``, and their checked arguments.

The lean step of torch's fused Adam/AdamW that ``FastPPO`` takes is speed code: it lives in
:mod:`crl.fast.adam`.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from crl.config import init_keywords
from crl.errors import ConfigError, UnknownNameError, did_you_mean
from crl.plasticity.kron import Kron
from crl.plasticity.trac import TRACAdam
from crl.plasticity.upgd import UPGD

__all__ = [
    "OPTIMIZERS",
    "fused_optimizers",
    "make_optimizer_class",
    "check_optimizer_kwargs",
    "optimizer_kwargs",
]

#: Registry of optimizer classes by name.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "trac": TRACAdam,
    "upgd": UPGD,
    "kron": Kron,  # PSGD Kron, run by the package kron-torch (crl.plasticity.kron)
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def make_optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The optimizer class registered as ``name``."""
    if name not in OPTIMIZERS:
        raise UnknownNameError("optimizer", name, list(OPTIMIZERS))
    return OPTIMIZERS[name]


def check_optimizer_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check ``kwargs`` against the optimizer's signature and build a throw-away instance
    so that bad values (negative rates, betas outside [0, 1)) fail before training.
    """
    cls = make_optimizer_class(name)
    if "lr" in kwargs:
        raise ConfigError("optimizer: set the learning rate as hyperparameters.learning_rate, not optimizer.lr")
    params = [k for k in init_keywords(cls) if k not in ("params", "lr")]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        hint = did_you_mean(unknown[0], params)
        raise ConfigError(f"optimizer {name!r}: unknown argument {unknown[0]!r}; valid: {', '.join(params)}{hint}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        _unwrapped_groups(cls)([torch.nn.Parameter(torch.zeros(1))], lr=1e-3, **kw)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"optimizer {name!r}: {e}") from None
    return kw


def _unwrapped_groups(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``cls`` with its ``add_param_group`` called without torch's dynamo-disabling wrapper.

    The wrapper imports ``torch._dynamo`` on its first call (2-3 s), which a throw-away
    instance built only to check values should not cost commands that never train (``crl
    agents``, ``crl sweep``'s parent, a config error). The checks themselves are unchanged.
    """
    raw = getattr(cls.add_param_group, "__wrapped__", cls.add_param_group)

    def add_param_group(self: torch.optim.Optimizer, param_group: dict[str, Any]) -> None:
        raw(self, param_group)

    return type(f"_Checked{cls.__name__}", (cls,), {"add_param_group": add_param_group})


def _fused_cpu() -> bool:
    """Whether this torch has fused Adam/AdamW kernels for CPU tensors (torch >= 2.4).

    Asked of torch's list of fused-kernel devices rather than by building an optimizer: the
    first optimizer built in a process imports ``torch._dynamo`` (seconds), which commands that
    never train (``crl sweep``'s parent, a config error) should not pay.
    """
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - torch without the helper: ask the optimizer
        try:
            torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], fused=True)
        except (RuntimeError, TypeError, ValueError):
            return False
        return True
    return "cpu" in _get_fused_kernels_supported_devices() and hasattr(torch, "_fused_adam_")


@functools.cache
def fused_optimizers() -> frozenset[str]:
    """Optimizers crl runs with torch's fused kernel (one call for all parameters instead of
    about ten per parameter tensor: 0.15 ms against 0.32 ms per step of Dohare's PPO networks,
    measured on 2 cores) unless the agent sets ``fused`` or ``foreach`` itself. Same update
    rule; the results differ from the per-tensor kernel in the last bits (about 1e-8 after 300
    steps). Also importable as ``FUSED``.

    Example:
        >>> sorted(fused_optimizers())
        ['adam', 'adamw']
    """
    return frozenset({"adam", "adamw"} if _fused_cpu() else ())


def __getattr__(name: str) -> Any:  # ``FUSED``, computed on first use (PEP 562)
    if name == "FUSED":
        return fused_optimizers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def optimizer_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """:func:`check_optimizer_kwargs` plus crl's implementation default (:func:`fused_optimizers`).

    Example:
        >>> optimizer_kwargs("adam", {"betas": [0.9, 0.999]})
        {'betas': (0.9, 0.999), 'fused': True}
        >>> optimizer_kwargs("adam", {"foreach": True})
        {'foreach': True}
    """
    kw = check_optimizer_kwargs(name, kwargs)
    if name in fused_optimizers() and "fused" not in kw and "foreach" not in kw:
        kw["fused"] = True
    return kw
