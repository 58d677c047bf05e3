"""Hare & Tortoise networks (Lee et al., ICML 2024, "Slow and Steady Wins the Race:
Maintaining Plasticity with Hare and Tortoise Networks").

The network the agent trains is the *hare*: it learns by gradient descent as usual. A
*tortoise* copy of its parameters follows it slowly, as an exponential moving average
updated after every optimizer step,

    theta_T <- alpha * theta_T + (1 - alpha) * theta_H,

and every ``every`` steps the hare is reset to the tortoise, ``theta_H <- theta_T``: the hare
regains plasticity while the knowledge the tortoise accumulated is kept.

What crl follows, and where it differs:

* every parameter an optimizer of the agent updates has a tortoise copy (PPO's policy and
  value nets with the log-std, SAC's actor and critics; SAC's entropy coefficient does not);
  the tortoise starts equal to the freshly initialised hare;
* the hare acts: crl's agents roll out and update with the one network SB3 trains (PPO's
  ratio needs the rollout's policy to be the one it updates); the paper evaluates with the
  tortoise;
* SAC's target critics keep their own Polyak average of the critics and are not reset;
* steps are counted on the agent's first optimizer (PPO's only one; SAC's actor, stepped last
  in each gradient step), and the EMA of each parameter is updated after its own
  optimizer's step;
* ``reset_optimizer`` clears the optimizer state (Adam's moments and step count) at each
  reset (off by default).

Defaults and their source: ``alpha = 0.999`` is the EMA rate of every Hare & Tortoise run in
the authors' code (github.com/dojeon-ai/hare-tortoise, ``scripts/paper/*/hare_tortoise.sh``:
``ema_rates=(0.999)``, the EMA applied after each optimizer step). That code resets the hare
every 10 epochs of its supervised tasks (``trainer.hare_tortoise.reset_every=10``: after epochs
0, 10, 20, ... of each task), copying the batch-norm buffers too and leaving the optimizer
state alone (a fresh AdamW per task). Its RL (Atari-100k) runs are not in the released code:
an RL reset interval is not verified, and ``every = 10_000`` (the SAC preset; PPO's: 1,600
optimizer steps, 10 updates) is crl's choice.
"""

from __future__ import annotations

from typing import Any

import torch

from crl.errors import ConfigError, check_int
from crl.plasticity.base import register_intervention
from crl.plasticity.regularisers import ParamIntervention

__all__ = ["HareTortoise", "ema_update"]


def ema_update(tortoise: list[torch.Tensor], hare: list[torch.Tensor], alpha: float) -> None:
    """``tortoise <- alpha * tortoise + (1 - alpha) * hare``, in place, for each pair.

    Computed as ``tortoise + (1 - alpha) * (hare - tortoise)`` (``torch.lerp``): the same number
    up to rounding.

    Example:
        >>> t, h = [torch.tensor([0.0, 1.0])], [torch.tensor([1.0, 1.0])]
        >>> ema_update(t, h, alpha=0.75)
        >>> t[0]
        tensor([0.2500, 1.0000])
    """
    if tortoise:
        torch._foreach_lerp_(tortoise, hare, 1.0 - alpha)


@register_intervention
class HareTortoise(ParamIntervention):
    """Hare & Tortoise: a slow EMA copy (the tortoise) of the trained network (the hare), to
    which the hare is reset every ``every`` optimizer steps (see the module docstring).

    Args:
        alpha: the tortoise's EMA coefficient (its weight on itself at each step).
        every: optimizer steps between two resets of the hare to the tortoise (0: never).
        reset_optimizer: clear the optimizer state at each reset.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 1))
        >>> net.optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
        >>> iv = HareTortoise(alpha=0.5, every=2)
        >>> iv.attach(net)
        >>> w0 = net[0].weight.detach().clone()
        >>> for _ in range(2):
        ...     net.optimizer.zero_grad(); net(torch.ones(1, 2)).sum().backward(); net.optimizer.step()
        >>> iv.resets, torch.equal(net[0].weight, iv.tortoise["0.weight"])  # the hare is the tortoise
        (1, True)
        >>> torch.allclose(iv.tortoise["0.weight"], w0 - 1.25)  # EMA of w0 - 1, then w0 - 1.5 - 0.5
        True
    """

    name = "hare_tortoise"

    def __init__(self, alpha: float = 0.999, every: int = 10_000, reset_optimizer: bool = False) -> None:
        alpha = float(alpha)
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha = alpha
        self.every = check_int("every", every)
        self.reset_optimizer = bool(reset_optimizer)
        self.tortoise: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.resets = 0

    def _setup(self) -> None:
        loaded = self.tortoise  # a state loaded before attaching
        self.tortoise = {n: loaded[n] if n in loaded else p.detach().clone() for n, p, _ in self.params}
        self._pairs: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for n, p, opt in self.params:
            slow, fast = self._pairs.setdefault(id(opt), ([], []))
            slow.append(self.tortoise[n])
            fast.append(p.detach())

    def _after_step(self, optimizer: torch.optim.Optimizer) -> None:
        slow, fast = self._pairs.get(id(optimizer), ([], []))
        ema_update(slow, fast, self.alpha)
        if optimizer is self.optimizers[0]:
            self.steps += 1
            if self.every and self.steps % self.every == 0:
                self.reset_hare()

    def reset_hare(self) -> None:
        """Copy the tortoise into the hare (bit for bit); clear the optimizer state if asked."""
        with torch.no_grad():
            for n, p, _ in self.params:
                p.copy_(self.tortoise[n])
        if self.reset_optimizer:
            for opt in self.optimizers:
                opt.state.clear()
        self.resets += 1

    def state_dict(self) -> dict[str, Any]:
        return {"tortoise": self.tortoise, "steps": self.steps, "resets": self.resets}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for n, t in state["tortoise"].items():
            if n in self.tortoise:
                self.tortoise[n].copy_(t)  # in place: the per-optimizer lists hold these tensors
            else:
                self.tortoise[n] = t.clone()
        self.steps, self.resets = int(state["steps"]), int(state["resets"])
