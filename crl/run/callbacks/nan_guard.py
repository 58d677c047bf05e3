"""Stop a run at the first non-finite gradient, loss or parameter."""

from __future__ import annotations

import math
from typing import Any

import torch

from crl.errors import NonFiniteLossError
from crl.run.callbacks.base import CrlCallback
from crl.run.state import all_finite, optimizers, parameters_of

__all__ = ["NanGuard"]


class NanGuard(CrlCallback):
    """Raise :class:`~crl.errors.NonFiniteLossError` instead of training on NaN or inf.

    An optimizer step pre-hook refuses a step whose gradients are not finite (so no bad step
    reaches the weights); at every rollout boundary and at the end the last loss and the
    policy's parameters are checked too. Put it before :class:`Checkpointer`, so a bad
    state is never checkpointed.

    Example:
        >>> import gymnasium as gym
        >>> from stable_baselines3 import PPO
        >>> model = PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=64, batch_size=64, n_epochs=1)
        >>> _ = model.learn(128, callback=NanGuard())
    """

    #: Its optimizer hook only reads the stepped optimizer's gradients (and raises):
    #: :func:`crl.fast.adam.local_hooks`.
    local_step_hooks = True

    def __init__(self) -> None:
        super().__init__()
        self._hooks: list[Any] = []

    def _grad_guard(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads and not all_finite(grads):
            raise NonFiniteLossError(self.model.num_timesteps, "loss gradient")

    def _on_training_start(self) -> None:
        if not self._hooks:
            self._hooks = [opt.register_step_pre_hook(self._grad_guard) for opt in optimizers(self.model)]

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        self.check()

    def _on_training_end(self) -> None:
        self.check()
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def check(self) -> None:
        """Raise if the last logged loss or any policy parameter is not finite."""
        loss = self.model.logger.name_to_value.get("train/loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteLossError(self.num_timesteps, "loss")
        with torch.no_grad():  # one fused pass (an off-policy "rollout" is one env step)
            finite = all_finite(parameters_of(self.model.policy))
        if not finite:
            raise NonFiniteLossError(self.num_timesteps, "parameter")
