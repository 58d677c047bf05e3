"""The task id a task-conditioned network reads from its observation.

An agent with ``task_id: true`` observes the one-hot id of the task in force at the end of
every observation (:class:`crl.drift.TaskIdObservation`), ``network.tasks`` entries long. Networks
that select parameters by task (multi-head outputs, PackNet masks, progressive columns,
adapters) read it with :func:`task_index` and :func:`split_task`, in training, rollouts and
evaluations alike, so a saved model needs nothing else to act.
"""

from __future__ import annotations

import torch

__all__ = ["split_task", "task_index"]


def task_index(obs: torch.Tensor, n_tasks: int) -> torch.Tensor:
    """The task id of each observation: the argmax of its last ``n_tasks`` entries (a long tensor
    of the batch shape).

    Example:
        >>> obs = torch.tensor([[0.5, -1.0, 0.0, 1.0, 0.0], [2.0, 3.0, 1.0, 0.0, 0.0]])
        >>> task_index(obs, 3).tolist()
        [1, 0]
    """
    if n_tasks < 1 or obs.shape[-1] < n_tasks:
        raise ValueError(f"observation of size {obs.shape[-1]} has no {n_tasks} task ids at its end")
    return obs[..., -n_tasks:].argmax(dim=-1)


def split_task(obs: torch.Tensor, n_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, task ids)``: the observation without its one-hot, and :func:`task_index`.

    Example:
        >>> features, task = split_task(torch.tensor([[0.5, -1.0, 0.0, 1.0]]), 2)
        >>> features.tolist(), task.tolist()
        ([[0.5, -1.0]], [1])
    """
    return obs[..., :-n_tasks], task_index(obs, n_tasks)
