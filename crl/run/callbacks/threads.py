"""torch threads while acting and while updating."""

from __future__ import annotations

import torch

from crl.run.callbacks.base import CrlCallback

__all__ = ["TrainThreads"]


class TrainThreads(CrlCallback):
    """Use ``train_threads`` torch threads during updates and ``act_threads`` while acting.

    With envs in worker processes the workers sleep while the learner updates, so the update
    may use every core while acting keeps one thread.

    Example:
        >>> TrainThreads(act_threads=1, train_threads=2).train_threads
        2
    """

    def __init__(self, act_threads: int, train_threads: int) -> None:
        super().__init__()
        self.act_threads, self.train_threads = int(act_threads), int(train_threads)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        torch.set_num_threads(self.act_threads)

    def _on_rollout_end(self) -> None:
        torch.set_num_threads(self.train_threads)
