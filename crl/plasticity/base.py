"""The intervention plug-in mechanism.

An :class:`Intervention` is attached to a trained model without forking its algorithm:
it may register torch forward hooks (to see activations) and optimizer step hooks (to
add penalty gradients or re-initialise units after a step). The base class does nothing;
a method overrides only the hooks it needs. Interventions are selected by name through
:data:`INTERVENTIONS`, never through an if/elif chain.
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

from torch import nn

from crl.config import init_keywords
from crl.errors import ConfigError
from crl.named import check_arguments, parse_named_list

__all__ = [
    "Intervention",
    "InterventionSet",
    "INTERVENTIONS",
    "register_intervention",
    "attach",
    "check_boundaries",
    "interventions_of",
]


class Intervention:
    """A plasticity intervention that does nothing (the null plug-in).

    Subclasses override :meth:`_on_attach`, :meth:`_on_regime_change`,
    :meth:`state_dict` and :meth:`load_state_dict` as needed.
    """

    #: Name used in agent YAML (``interventions: [{<name>: {...}}]``).
    name: ClassVar[str] = "none"
    #: Whether the method only makes sense when told about regime changes (EWC, moment resets).
    needs_boundaries: ClassVar[bool] = False
    #: Whether the method reads the most recent transitions in order (EWC, MAS importances),
    #: which a reservoir replay buffer does not keep.
    needs_states: ClassVar[bool] = False

    def attach(self, model: Any) -> None:
        """Attach to ``model`` (an SB3 algorithm or a module with an ``optimizer``)."""
        self.model = model
        self._on_attach(model)

    def _on_attach(self, model: Any) -> None:
        """Hook: register forward/optimizer hooks here."""

    def on_regime_change(self, regime: int) -> None:
        """Called at a regime boundary, only for agents whose spec says boundaries are known."""
        self._on_regime_change(regime)

    def _on_regime_change(self, regime: int) -> None:
        """Hook: react to a known regime boundary."""

    def on_rollout_end(self) -> None:
        """Called by the trainer after each on-policy rollout (before the update)."""

    def state_dict(self) -> dict[str, Any]:
        """The intervention's state (counters, utilities, RNG), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


#: Registry of interventions by name.
INTERVENTIONS: dict[str, type[Intervention]] = {"none": Intervention}


def register_intervention(cls: type[Intervention]) -> type[Intervention]:
    """Class decorator: make an intervention available by ``cls.name`` in agent YAML."""
    INTERVENTIONS[cls.name] = cls
    return cls


class InterventionSet:
    """The interventions of one agent, driven together."""

    def __init__(self, interventions: list[Intervention], boundary_aware: bool = False) -> None:
        check_boundaries(interventions, boundary_aware)
        self.interventions = interventions
        self.boundary_aware = boundary_aware

    def attach(self, model: Any | nn.Module) -> InterventionSet:
        """Attach every intervention to ``model`` (:func:`interventions_of` finds them); returns ``self``."""
        for i in self.interventions:
            i.attach(model)
        _ATTACHED[model] = self
        return self

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.interventions]

    def on_regime_change(self, regime: int) -> None:
        """Forward a regime boundary to every intervention, if the agent knows boundaries."""
        if self.boundary_aware:
            for i in self.interventions:
                i.on_regime_change(regime)

    def on_rollout_end(self) -> None:
        """Forward the end of an on-policy rollout to every intervention."""
        for i in self.interventions:
            i.on_rollout_end()

    def state_dict(self) -> dict[str, Any]:
        return {"interventions": [i.state_dict() for i in self.interventions]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, s in zip(self.interventions, state["interventions"], strict=True):
            i.load_state_dict(s)


def build(specs: list[Any] | None) -> list[Intervention]:
    """Instantiate interventions from ``[{name: {args}}, ...]`` specs (not attached yet).

    The spec's shape is read by :func:`crl.named.parse_named_list`; each class's constructor
    checks its argument values. Errors are one-line :class:`~crl.errors.ConfigError`.

    Example:
        >>> [type(i).__name__ for i in build(["none", {"none": {}}])]
        ['Intervention', 'Intervention']
        >>> build([{"none": {"strength": 1}}])
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: intervention 'none': unknown argument 'strength'; valid: (none)
    """
    out = []
    for name, args in parse_named_list(specs, "intervention", INTERVENTIONS):
        cls = INTERVENTIONS[name]
        check_arguments(f"intervention {name!r}", args, init_keywords(cls))
        try:
            out.append(cls(**args))
        except (TypeError, ValueError, OverflowError) as e:
            raise ConfigError(f"intervention {name!r}: {e}") from None
    return out


def check_boundaries(interventions: list[Intervention], boundary_aware: bool) -> None:
    """Refuse methods that need regime boundaries in an agent that is not told them."""
    for i in interventions:
        if i.needs_boundaries and not boundary_aware:
            raise ConfigError(f"intervention {i.name!r} acts at regime changes; it needs boundary_aware: true")


def attach(model: Any | nn.Module, specs: list[Any], boundary_aware: bool = False) -> InterventionSet:
    """Build the interventions named in ``specs`` and attach them to ``model``."""
    return InterventionSet(build(specs), boundary_aware=boundary_aware).attach(model)


_ATTACHED: weakref.WeakKeyDictionary[Any, InterventionSet] = weakref.WeakKeyDictionary()


def interventions_of(model: Any) -> InterventionSet:
    """The interventions :func:`attach` attached to ``model`` (an empty set for any other model).

    Lets callbacks (regime boundaries, rollout ends) reach an agent's interventions from
    the model alone, e.g. in a plain SB3 script using :func:`crl.make_agent`.
    """
    return _ATTACHED.get(model) or InterventionSet([])
