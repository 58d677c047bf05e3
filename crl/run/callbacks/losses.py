"""``losses/*`` and ``time/sps`` rows from SB3's logger."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from crl.run.callbacks.base import CrlCallback, Sink
from crl.run.state import n_updates

__all__ = ["LossLogger", "loss_row", "optimizer_row"]

#: SB3's loss names that crl renames (``train/<sb3>`` -> ``losses/<crl>``).
RENAMED = {"policy_gradient_loss": "policy_loss", "entropy_loss": "entropy"}


def loss_row(name_to_value: dict[str, Any]) -> dict[str, float]:
    """The ``losses/*`` row of SB3's logger values (``train/*`` keys, ``n_updates`` left out).

    Example:
        >>> loss_row({"train/value_loss": 0.5, "train/policy_gradient_loss": -0.1, "train/n_updates": 3})
        {'losses/value_loss': 0.5, 'losses/policy_loss': -0.1}
    """
    row = {}
    for k, v in name_to_value.items():
        if k.startswith("train/") and k != "train/n_updates":
            row[f"losses/{RENAMED.get(k[6:], k[6:])}"] = float(v)
    return row


def optimizer_row(model: Any) -> dict[str, float]:
    """``optimizer/<net>/<metric>`` of every optimizer of ``model`` (PPO: ``policy``; SAC and TD3:
    ``actor``, ``critic``) that reports metrics through a public ``metrics()`` method (TRAC: its
    scale), read after an update.

    Example:
        >>> import torch
        >>> from crl.plasticity.trac import make_trac
        >>> class Net:
        ...     optimizer = make_trac(torch.optim.Adam)([torch.nn.Parameter(torch.ones(1))], s_init=1e-8)
        >>> class Model:
        ...     policy = Net()
        >>> optimizer_row(Model())
        {'optimizer/policy/trac_scale': 0.0}
    """
    row: dict[str, float] = {}
    for net in ("policy", "actor", "critic"):
        metrics = getattr(getattr(getattr(model, net, None), "optimizer", None), "metrics", None)
        if callable(metrics):
            row.update({f"optimizer/{net}/{k}": float(v) for k, v in metrics().items()})
    return row


class LossLogger(CrlCallback):
    """Log the last update's losses, what its optimizers report (:func:`optimizer_row`) and the
    steps per second since the previous row.

    On-policy models log after every update (at the next rollout start); off-policy models
    at most every ``every`` steps. A row is written only after a new update.

    Args:
        sink: where rows go.
        every: minimum steps between two rows of an off-policy model.
    """

    def __init__(self, sink: Sink, every: int = 1000) -> None:
        super().__init__()
        self.sink, self.every = sink, int(every)
        self.last_log = -math.inf
        self.seen_updates = -1
        self.sps = 0.0
        self._t_last = time.perf_counter()
        self._steps_last = 0
        self._held: dict[str, float] = {}

    def _on_training_start(self) -> None:
        if self._held:  # resumed: SB3's fresh logger starts where the checkpoint's was
            self.model.logger.name_to_value.update(self._held)
            self._held = {}
        self._t_last, self._steps_last = time.perf_counter(), self.num_timesteps

    def _on_step(self) -> bool:
        if isinstance(self.model, OffPolicyAlgorithm) and self.num_timesteps - self.last_log >= self.every:
            self.log_losses()
        return True

    def _on_rollout_start(self) -> None:
        if not isinstance(self.model, OffPolicyAlgorithm):
            self.log_losses()

    def _on_training_end(self) -> None:
        self.log_losses()

    def log_losses(self) -> None:
        """Write a row if the model made an update since the last one."""
        updates = n_updates(self.model)
        if updates == self.seen_updates:
            return
        self.seen_updates = updates
        row = loss_row(self.model.logger.name_to_value)
        if updates > 0:
            row |= optimizer_row(self.model)
        now = time.perf_counter()
        if now > self._t_last and self.num_timesteps > self._steps_last:
            self.sps = (self.num_timesteps - self._steps_last) / (now - self._t_last)
            row["time/sps"] = self.sps
        self._t_last, self._steps_last = now, self.num_timesteps
        self.last_log = self.num_timesteps
        if row:
            self.sink.log(self.num_timesteps, row)

    def get_state(self) -> dict[str, Any]:
        return {
            "last_log": self.last_log,
            "seen_updates": self.seen_updates,
            # the losses SB3's logger holds: an off-policy run logs them at a step count, which may
            # come right after a resume, before the resumed process has trained once
            "held": {
                k: float(v)
                for k, v in self.model.logger.name_to_value.items()
                if k.startswith("train/") and isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
            },
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.last_log, self.seen_updates = state["last_log"], state["seen_updates"]
        self._held = dict(state["held"])
