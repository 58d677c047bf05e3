"""A progress bar on a terminal, progress lines elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from crl.run.callbacks.base import CrlCallback

__all__ = ["ProgressCallback"]


class ProgressCallback(CrlCallback):
    """Show steps, steps per second and the current regime.

    On a terminal (stderr is a TTY) a rich progress bar; elsewhere (logs, sweeps) one line
    every tenth of the run.

    Args:
        name: the run's name.
        total: the run's total steps.
        regime: returns the current regime's label.
    """

    def __init__(self, name: str, total: int, regime: Callable[[], str] = lambda: "-") -> None:
        super().__init__()
        self.name, self.total, self.regime = name, int(total), regime
        self.bar: Any = None
        self.task: Any = None
        self.next_line = 0
        self._t0 = time.perf_counter()
        self._steps0 = 0

    def _on_training_start(self) -> None:
        self._t0, self._steps0 = time.perf_counter(), self.num_timesteps
        if not sys.stderr.isatty():
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,}"),
            TextColumn("{task.fields[sps]:>6.0f} steps/s"),
            TextColumn("regime {task.fields[regime]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.bar.start()
        self.task = self.bar.add_task(
            self.name, total=self.total, completed=self.num_timesteps, sps=0.0, regime=self.regime()
        )

    def sps(self) -> float:
        """Steps per second since training started."""
        dt = time.perf_counter() - self._t0
        return (self.num_timesteps - self._steps0) / dt if dt > 0 else 0.0

    def _on_step(self) -> bool:
        if self.bar is not None:
            if self.n_calls % 64 == 0:
                self.bar.update(self.task, completed=self.num_timesteps, sps=self.sps(), regime=self.regime())
        elif self.num_timesteps >= self.next_line:
            print(
                f"[{self.name}] {self.num_timesteps:,}/{self.total:,} steps, {self.sps():,.0f} steps/s, "
                f"regime {self.regime()}",
                file=sys.stderr,
                flush=True,
            )
            self.next_line = self.num_timesteps + max(self.total // 10, 1)
        return True

    def _on_training_end(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the progress bar (also on errors)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
