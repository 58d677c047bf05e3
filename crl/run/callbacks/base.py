"""What every crl callback shares: rollout safety, checkpoint state, and the metric sink."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["CrlCallback", "Sink"]


@runtime_checkable
class Sink(Protocol):
    """Where callbacks send metric rows (:class:`crl.track.Tracker` is one)."""

    def log(self, global_step: int, metrics: dict[str, Any]) -> None:
        """Record one row of ``metrics`` at ``global_step``."""

    def summary(self, values: dict[str, Any]) -> None:
        """Record run-level summary values (wandb's run summary)."""


class CrlCallback(BaseCallback):
    """Base class of crl's callbacks.

    * ``rollout_safe = True``: its ``on_step`` leaves the policy's weights alone (or calls
      :meth:`crl.fast.FastLoop.policy_will_change` first), so crl's fast PPO may defer work
      within a rollout (see :func:`crl.fast.is_rollout_safe`). A subclass that changes the
      weights inside a rollout without that call must set it to False.
    * :meth:`get_state` / :meth:`set_state`: the callback's counters, saved in checkpoints so
      a resumed run logs exactly the rows an uninterrupted one would. The counters live here,
      on the trainer's side, not in the interventions.
    """

    rollout_safe = True

    def get_state(self) -> dict[str, Any]:
        """The counters to checkpoint (none by default)."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` (before training resumes)."""
