"""The intervention plug-in mechanism.

An :class:`Intervention` is attached to a trained model without forking its algorithm:
it may register torch forward hooks (to see activations) and optimizer step hooks (to
add penalty gradients or re-initialise units after a step). The base class does nothing;
a method overrides only the hooks it needs. Interventions are selected by name through
:data:`INTERVENTIONS`, never through an if/elif chain.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from crl.errors import ConfigError, UnknownNameError

__all__ = ["Intervention", "InterventionSet", "INTERVENTIONS", "register_intervention", "attach", "check_boundaries"]


class Intervention:
    """A plasticity intervention that does nothing (the null plug-in).

    Subclasses override :meth:`_on_attach`, :meth:`_on_regime_change`,
    :meth:`state_dict` and :meth:`load_state_dict` as needed.
    """

    #: Name used in agent YAML (``interventions: [{<name>: {...}}]``).
    name: ClassVar[str] = "none"
    #: Whether the method only makes sense when told about regime changes (EWC, moment resets).
    needs_boundaries: ClassVar[bool] = False

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
        self.interventions = interventions
        self.boundary_aware = boundary_aware

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


def build(specs: list[Any]) -> list[Intervention]:
    """Instantiate interventions from ``[{name: {args}}, ...]`` specs."""
    import inspect

    out = []
    for spec in specs or []:
        if isinstance(spec, str):
            spec = {spec: {}}
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(f"an intervention is written {{name: {{arguments}}}}, got {spec!r}")
        ((name, args),) = spec.items()
        if name not in INTERVENTIONS:
            raise UnknownNameError("intervention", name, list(INTERVENTIONS))
        cls = INTERVENTIONS[name]
        args = args or {}
        valid = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
        unknown = sorted(set(args) - set(valid))
        if unknown:
            raise ConfigError(f"intervention {name!r}: unknown argument {unknown[0]!r}; valid: {', '.join(valid)}")
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
    interventions = build(specs)
    check_boundaries(interventions, boundary_aware)
    for i in interventions:
        i.attach(model)
    return InterventionSet(interventions, boundary_aware=boundary_aware)
