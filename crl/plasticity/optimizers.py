"""Optimizers by name, passed to SB3 as ``optimizer_class``."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from crl.errors import ConfigError, UnknownNameError
from crl.plasticity.trac import TRACAdam
from crl.plasticity.upgd import UPGD

__all__ = ["OPTIMIZERS", "make_optimizer_class", "check_optimizer_kwargs"]

#: Registry of optimizer classes by name.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "trac": TRACAdam,
    "upgd": UPGD,
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
    params = []
    for klass in cls.__mro__:  # a wrapper (TRAC) passes **kwargs on to its base optimizer
        sig = inspect.signature(klass.__init__).parameters
        params += [k for k, p in sig.items() if k not in ("self", "params", "lr") and p.kind != p.VAR_KEYWORD]
        if not any(p.kind == p.VAR_KEYWORD for p in sig.values()):
            break
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"optimizer {name!r}: unknown argument {unknown[0]!r}; valid: {', '.join(params)}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        cls([torch.nn.Parameter(torch.zeros(1))], lr=1e-3, **kw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optimizer {name!r}: {e}") from None
    return kw
