"""The registry of diagnostic metrics: one function per metric, registered by name.

:class:`crl.diagnostics.Diagnostics` computes every metric of :data:`DIAGNOSTICS`, in the order
of registration, for every hidden layer of every network, and logs it as
``plasticity/<net>/<layer>/<name>``. What a metric function receives depends on ``on``:

============  =======================================================================================
``on``        the function's argument
============  =======================================================================================
features      ``h``, ``np.ndarray`` (probe states x layer outputs, float64): the activation's output
              on the probe batch (``2 * width`` columns for CReLU)
weights       ``torch.Tensor``: the incoming ``Linear``'s weight matrix (detached, units x inputs)
update        :class:`LayerUpdate`: the parameters after an update, with their gradients, and the
              parameters at the previous update; computed by :meth:`Diagnostics.after_update
              <crl.diagnostics.Diagnostics.after_update>`, logged by the next row
layer         :class:`LayerProbe`: everything above plus per-unit features, the states of the last
              ``dormant_window`` steps, the initial parameters, and the diagnostics' settings
============  =======================================================================================

A metric returns a float, or ``None`` for "no value in this row".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from crl.errors import ConfigError, UnknownNameError
from crl.plasticity.nets import HiddenLayer

__all__ = [
    "DIAGNOSTICS",
    "INPUTS",
    "Diagnostic",
    "LayerProbe",
    "LayerUpdate",
    "register_diagnostic",
    "unregister_diagnostic",
]

#: What a metric may be computed on (``register_diagnostic(..., on=...)``).
INPUTS = ("features", "weights", "update", "layer")


@dataclass(frozen=True)
class Diagnostic:
    """One registered metric: its row name, its input kind and its function."""

    name: str
    on: str
    fn: Callable[[Any], float | None]


#: Registered metrics by name, in the order of their columns.
DIAGNOSTICS: dict[str, Diagnostic] = {}


def register_diagnostic(name: str, on: str = "features") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: log ``fn(input)`` as ``plasticity/<net>/<layer>/<name>`` for every hidden layer.

    ``on`` says what ``fn`` receives (see the table of the module docstring). The function is
    returned unchanged. A name already registered is a :class:`~crl.errors.ConfigError`
    (:func:`unregister_diagnostic` first to replace a metric).

    Example:
        >>> @register_diagnostic("mean_feature")
        ... def mean_feature(h):
        ...     return float(h.mean())
        >>> DIAGNOSTICS["mean_feature"].on
        'features'
        >>> register_diagnostic("mean_feature")(mean_feature)
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: diagnostic 'mean_feature' is already registered (by \
crl.diagnostics.registry.mean_feature); pick another name or call unregister_diagnostic('mean_feature') first
        >>> unregister_diagnostic("mean_feature")
    """
    if on not in INPUTS:
        raise UnknownNameError("diagnostic input", on, INPUTS)
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"a diagnostic's name must be a non-empty string without '/', got {name!r}")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in DIAGNOSTICS:
            old = DIAGNOSTICS[name].fn
            raise ConfigError(
                f"diagnostic {name!r} is already registered (by {old.__module__}.{old.__qualname__}); "
                f"pick another name or call unregister_diagnostic({name!r}) first"
            )
        DIAGNOSTICS[name] = Diagnostic(name, on, fn)
        return fn

    return decorator


def unregister_diagnostic(name: str) -> None:
    """Remove the metric ``name`` (an unknown name is an :class:`~crl.errors.UnknownNameError`).

    Example:
        >>> unregister_diagnostic("no_such_metric")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        crl.errors.UnknownNameError: unknown diagnostic 'no_such_metric'; valid: ...
    """
    if name not in DIAGNOSTICS:
        raise UnknownNameError("diagnostic", name, list(DIAGNOSTICS))
    del DIAGNOSTICS[name]


@dataclass
class LayerUpdate:
    """What a metric registered ``on="update"`` receives for one hidden layer."""

    layer: HiddenLayer
    """The hidden layer (its ``inp`` holds the live parameters and their ``.grad``)."""
    current: list[torch.Tensor]
    """CPU copies of the incoming ``Linear``'s parameters now (weight, then bias)."""
    previous: list[torch.Tensor]
    """The same at the previous :meth:`~crl.diagnostics.Diagnostics.after_update` (or at the start)."""

    @property
    def params(self) -> list[torch.Tensor]:
        """The incoming ``Linear``'s live parameters (with ``.grad`` after a backward pass)."""
        return list(self.layer.inp.parameters())


@dataclass
class LayerProbe:
    """What a metric registered ``on="layer"`` receives for one hidden layer."""

    net: str
    """The network's name (``policy``, ``value``, ``actor``, ``critic_1``...)."""
    index: int
    """The layer's index in its network (the ``<layer>`` of the row name)."""
    layer: HiddenLayer
    """The hidden layer (incoming ``Linear``, optional ``LayerNorm``, activation)."""
    features: np.ndarray | None
    """The activation's output on the probe batch (states x outputs, float64), if recorded."""
    recent: np.ndarray | None
    """The same on the states of the last ``window`` training steps."""
    init: list[torch.Tensor]
    """CPU copies of the incoming ``Linear``'s parameters when the diagnostics started."""
    update: dict[str, float] = field(default_factory=dict)
    """The ``on="update"`` metrics of the last update (name -> value)."""
    tau: float = 0.0
    """ReDo's dormancy threshold."""
    window: int = 1000
    """Steps whose states :attr:`recent` holds (Dohare's dormant units)."""

    @property
    def units(self) -> np.ndarray | None:
        """:attr:`features` per unit (CReLU's halves added, see :meth:`HiddenLayer.units
        <crl.plasticity.nets.HiddenLayer.units>`).
        """
        return None if self.features is None else self.layer.units(self.features)

    @property
    def recent_units(self) -> np.ndarray | None:
        """:attr:`recent` per unit."""
        return None if self.recent is None else self.layer.units(self.recent)

    @cached_property
    def params(self) -> list[torch.Tensor]:
        """CPU copies of the incoming ``Linear``'s parameters now (weight, then bias)."""
        return [p.detach().cpu() for p in self.layer.inp.parameters()]

    @cached_property
    def singular_values(self) -> np.ndarray | None:
        """Singular values of :attr:`features`, descending (computed once per row)."""
        from crl.diagnostics.metrics import singular_values

        return None if self.features is None else singular_values(self.features)
