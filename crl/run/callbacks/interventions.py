"""Drive an agent's interventions from the training loop."""

from __future__ import annotations

from crl.plasticity import InterventionSet, interventions_of
from crl.run.callbacks.base import CrlCallback

__all__ = ["InterventionHooks"]


class InterventionHooks(CrlCallback):
    """Call the interventions' ``on_rollout_end`` hook after every rollout; forward regime changes.

    Pass :meth:`on_regime_change` to :class:`~crl.run.callbacks.RegimeLogger` as a listener.

    Args:
        interventions: the agent's interventions (None: those :func:`crl.plasticity.attach`
            attached to the model, e.g. by :func:`crl.make_agent`; none for another model).

    Example:
        >>> InterventionHooks(InterventionSet([])).interventions.names
        []
    """

    def __init__(self, interventions: InterventionSet | None = None) -> None:
        super().__init__()
        self.interventions = interventions

    def _init_callback(self) -> None:
        if self.interventions is None:
            self.interventions = interventions_of(self.model)

    def on_regime_change(self, regime: int) -> None:
        """Forward a regime change (the interventions act on it if the agent knows boundaries)."""
        if self.interventions is not None:
            self.interventions.on_regime_change(regime)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.interventions is not None:
            self.interventions.on_rollout_end()
