"""Periodic checkpoints at rollout boundaries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crl.run.callbacks.base import CrlCallback

__all__ = ["Checkpointer", "FinalCheckpoint"]


class Checkpointer(CrlCallback):
    """Call ``save()`` at the first rollout boundary ``every`` steps after the last checkpoint.

    Rollout boundaries (after an update) are the only moments when the model, the buffers
    and the envs agree, so a resume from there continues exactly. Put it last in the
    callback list: the rows the other callbacks log at a boundary belong to the checkpoint.

    Args:
        every: steps between checkpoints.
        save: writes the checkpoint (the runner's :meth:`crl.run.Runner.save_checkpoint`).

    Example:
        >>> saved = []
        >>> ck = Checkpointer(100, lambda: saved.append(True))
        >>> ck.get_state()
        {'last': 0}
    """

    def __init__(self, every: int, save: Callable[[], None]) -> None:
        super().__init__()
        self.every = int(every)
        self.save = save
        self.last = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.num_timesteps - self.last >= self.every:
            self.last = self.num_timesteps  # before save(): the checkpoint records it
            self.save()

    def get_state(self) -> dict[str, Any]:
        return {"last": self.last}

    def set_state(self, state: dict[str, Any]) -> None:
        self.last = int(state["last"])


class FinalCheckpoint(CrlCallback):
    """Call ``save()`` when training ends after its last update at ``steps`` or more (not after a
    stop or an interrupt), before the other callbacks close the run (put it first): the
    checkpoint a finished run is extended from (``crl train --steps MORE --resume``).

    Args:
        steps: the run's step budget.
        save: writes the checkpoint (the runner's :meth:`crl.run.Runner.save_checkpoint`).
    """

    def __init__(self, steps: int, save: Callable[[], None]) -> None:
        super().__init__()
        self.steps = int(steps)
        self.save = save

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.num_timesteps >= self.steps:
            self.save()
