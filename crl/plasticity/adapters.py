"""Per-task low-rank adapters (LoRA, Hu et al., ICLR 2022, "LoRA: Low-Rank Adaptation of Large
Language Models") on the shared hidden layers of a task-conditioned network.

:class:`TaskLinear` is a ``Linear`` shared by every task plus, for each task ``k``, a rank-``r``
update ``B_k A_k``: ``y = x W^T + b + (alpha / r) x A_k^T B_k^T`` for the rows of task ``k``.
As in LoRA, ``B_k`` starts at zero (every task starts from the shared layer) and ``A_k`` is drawn
like a ``Linear``'s weight (LoRA's reference implementation, loralib: Kaiming-uniform with
``a = sqrt(5)``); ``alpha = r`` (scale 1), LoRA's advice of setting alpha to the first rank tried
and not tuning it. Only the adapters of the tasks present in a batch are computed
(:func:`crl.plasticity.tasks.by_task`): the others get no gradient, and torch's optimizers skip
parameters without one, so a task's adapter stays bit-for-bit unchanged while other tasks train.

The shared weight and bias can be used ``frozen`` (detached: no gradient, so no optimizer
update): :class:`crl.plasticity.multihead.TaskTrunk` freezes its layers after the first task.

Example:
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> layer = TaskLinear(3, 2, tasks=2, rank=1)
    >>> x, task = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    >>> torch.equal(layer(x, task), nn.functional.linear(x, layer.weight, layer.bias))  # B_k = 0
    True
    >>> adapter_parameters(layer) == 2 * (1 * 3 + 2 * 1)
    True
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from crl.plasticity.tasks import by_task

__all__ = ["TaskLinear", "adapter_parameters"]


class TaskLinear(nn.Linear):
    """A ``Linear`` shared by ``tasks`` tasks, with a rank-``rank`` adapter per task (none for
    ``rank = 0``). Its ``weight`` and ``bias`` are a plain ``Linear``'s (the MLP walker, the
    initialisations and the unit interventions see a ``Linear``); the adapters are
    ``lora_a[k]`` (``rank x in``) and ``lora_b[k]`` (``out x rank``).

    Args:
        in_features, out_features: as ``nn.Linear``.
        tasks: the number of task ids.
        rank: the adapters' rank (0: no adapters, a plain ``Linear`` that can be frozen).
        alpha: LoRA's scale numerator (the update is scaled by ``alpha / rank``; default ``rank``).
    """

    def __init__(self, in_features: int, out_features: int, tasks: int = 1, rank: int = 0, alpha: float | None = None):
        super().__init__(in_features, out_features)
        if rank < 0 or tasks < 1:
            raise ValueError(f"TaskLinear needs tasks >= 1 and rank >= 0, got tasks={tasks}, rank={rank}")
        self.tasks, self.rank = tasks, rank
        self.scale = float(alpha if alpha is not None else rank) / rank if rank else 0.0
        self.lora_a = nn.ParameterList()
        self.lora_b = nn.ParameterList()
        for _ in range(tasks if rank else 0):
            a = nn.Parameter(torch.empty(rank, in_features))
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            self.lora_a.append(a)
            self.lora_b.append(nn.Parameter(torch.zeros(out_features, rank)))

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None, frozen: bool = False) -> torch.Tensor:
        """``x W^T + b`` plus each row's task adapter (``task``: a task id per row; needed when
        the layer has adapters). ``frozen``: the shared ``W`` and ``b`` get no gradient.
        """
        w, b = (self.weight.detach(), self.bias.detach()) if frozen else (self.weight, self.bias)
        y = F.linear(x, w, b)
        if not self.rank:
            return y
        if task is None:
            raise ValueError("a TaskLinear with adapters needs the task id of every row")
        return y + by_task(task, x, self._adapter)

    def _adapter(self, k: int, rows: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(rows, self.lora_a[k]), self.lora_b[k]) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tasks={self.tasks}, rank={self.rank}"


def adapter_parameters(module: nn.Module) -> int:
    """The number of adapter parameters (every task's ``A`` and ``B``) in ``module``."""
    return sum(p.numel() for m in module.modules() if isinstance(m, TaskLinear) for p in [*m.lora_a, *m.lora_b])
