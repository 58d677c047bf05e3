"""``plasticity/*`` rows: the diagnostics of :mod:`crl.diagnostics` at a fixed interval."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from crl.diagnostics import Diagnostics
from crl.run.callbacks.base import CrlCallback, Sink

__all__ = ["DiagnosticsCallback", "recent_states"]


def recent_states(model: Any, n: int) -> np.ndarray | None:
    """The states of the last rollout (on-policy, once full) or the last ``n`` of the replay buffer."""
    buf = getattr(model, "rollout_buffer", None)
    if buf is not None and buf.full:
        return buf.observations.reshape(-1, *model.observation_space.shape)
    rb = getattr(model, "replay_buffer", None)
    if rb is None:
        return None
    end = rb.buffer_size if rb.full else rb.pos
    return rb.observations[max(0, rb.pos - n) : rb.pos] if rb.pos else rb.observations[:end]


class DiagnosticsCallback(CrlCallback):
    """Log every registered diagnostic (``plasticity/<net>/<layer>/<metric>``) every ``every`` steps.

    The probe batch is made of recent training states and refreshed every
    ``probe_refresh_every`` steps. On-policy models are measured at rollout starts (after an
    update), off-policy models at the first step past the interval. ``weight_change`` is the
    change made by exactly one update (the weights are snapshotted one update before the row).

    Args:
        sink: where rows go.
        every: steps between rows.
        probe_refresh_every: steps between probe refreshes.
        probe_size: states in the probe batch.

    Attributes:
        last_row: the latest row (regime summaries average it per network).
    """

    def __init__(self, sink: Sink, every: int = 10_000, probe_refresh_every: int = 100_000, probe_size: int = 256):
        super().__init__()
        self.sink, self.every = sink, int(every)
        self.probe_refresh_every, self.probe_size = int(probe_refresh_every), int(probe_size)
        self.diag: Diagnostics | None = None
        self.last = 0
        self.last_probe = -(10**18)
        self.last_row: dict[str, float] = {}
        self._pending: dict[str, Any] | None = None

    def _init_callback(self) -> None:
        if self.diag is None:
            self.diag = Diagnostics(self.model, probe_size=self.probe_size)
            if self._pending is not None:
                self.diag.load(self._pending)
                self._pending = None

    def _on_step(self) -> bool:
        if isinstance(self.model, OffPolicyAlgorithm):
            self.after_update(self.num_timesteps)
        return True

    def _on_rollout_start(self) -> None:
        if not isinstance(self.model, OffPolicyAlgorithm) and self.num_timesteps > 0:
            self.after_update(self.num_timesteps)

    def _on_rollout_end(self) -> None:
        self.collect_states()

    def collect_states(self) -> None:
        """Keep the latest training states for the next probe batch."""
        assert self.diag is not None
        obs = recent_states(self.model, max(self.diag.probe_size, self.diag.dormant_window))
        if obs is not None:
            self.diag.add_states(obs)

    def after_update(self, step: int) -> None:
        """Log a row if ``every`` steps have passed (or snapshot the weights one update before)."""
        assert self.diag is not None
        if step - self.last >= self.every:
            self.collect_states()
            if step - self.last_probe >= self.probe_refresh_every or self.diag.probe is None:
                self.diag.refresh_probe()
                self.last_probe = step
            self.diag.after_update()
            row = self.diag.compute()
            if row:
                self.sink.log(step, row)
                self.last_row = row
            self.last = step
        elif not isinstance(self.model, OffPolicyAlgorithm) and step - self.last + self._rollout() >= self.every:
            self.diag.after_update()  # weight_change of the next row: the change of exactly one update

    def _rollout(self) -> int:
        return int(getattr(self.model, "n_steps", 1) * getattr(self.model, "n_envs", 1))

    def per_network(self) -> dict[str, float]:
        """The latest row averaged over the layers of each network: ``<net>/<metric>``."""
        acc: dict[str, list[float]] = {}
        for k, v in self.last_row.items():
            _, net, _, metric = k.split("/")
            acc.setdefault(f"{net}/{metric}", []).append(v)
        return {k: float(np.mean(v)) for k, v in acc.items()}

    def get_state(self) -> dict[str, Any]:
        return {
            "diag": None if self.diag is None else self.diag.state(),
            "last": self.last,
            "last_probe": self.last_probe,
            "last_row": dict(self.last_row),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.last, self.last_probe, self.last_row = state["last"], state["last_probe"], dict(state["last_row"])
        if state["diag"] is not None:
            if self.diag is not None:
                self.diag.load(state["diag"])
            else:
                self._pending = state["diag"]
