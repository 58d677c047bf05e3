"""The task id a task-conditioned network reads from its observation.

An agent with ``task_id: true`` observes the one-hot id of the task in force at the end of
every observation (:class:`crl.drift.TaskIdObservation`), ``network.tasks`` entries long. Networks
that select parameters by task (multi-head outputs, PackNet masks, progressive columns,
adapters) read it with :func:`task_index` and :func:`split_task` (and compute each task's rows
with its own parameters with :func:`by_task`), in training, rollouts and
evaluations alike, so a saved model needs nothing else to act.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["by_task", "split_task", "task_index"]


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


def by_task(task: torch.Tensor, x: torch.Tensor, fn: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn(k, rows of x of task k)`` for every task ``k`` present in ``task``, put back in the
    rows' order. Only the tasks present are computed: the parameters of the others take no part
    in the result, and get no gradient (``.grad`` stays ``None``, so torch's optimizers leave
    them and their state alone).

    Example:
        >>> x, task = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([1, 0, 1])
        >>> by_task(task, x, lambda k, rows: rows * 10**k).tolist()
        [[10.0], [2.0], [30.0]]
    """
    present = torch.unique(task).tolist()
    if len(present) == 1:
        return fn(int(present[0]), x)
    parts = [(task == k, fn(int(k), x[task == k])) for k in present]
    out = parts[0][1].new_empty((*x.shape[:-1], parts[0][1].shape[-1]))
    for rows, y in parts:
        out[rows] = y
    return out
