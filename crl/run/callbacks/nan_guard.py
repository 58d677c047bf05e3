"""Stop a run at the first non-finite gradient, loss or parameter."""

from __future__ import annotations

import math
from typing import Any

import torch

from crl.errors import NonFiniteLossError
from crl.run.callbacks.base import CrlCallback
from crl.run.state import all_finite, optimizers, parameters_of

__all__ = ["NanGuard", "check_parameters"]


def check_parameters(model: Any, step: int) -> None:
    """Raise :class:`~crl.errors.NonFiniteLossError` if a parameter of ``model``'s policy is
    not finite (one fused pass over them; ``step``: the global step the error names).

    Example:
        >>> import gymnasium as gym
        >>> from stable_baselines3 import PPO
        >>> model = PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=64, batch_size=64)
        >>> check_parameters(model, 0)
        >>> with torch.no_grad():
        ...     next(model.policy.parameters())[0, 0] = float("nan")
        >>> check_parameters(model, 7)
        Traceback (most recent call last):
        ...
        crl.errors.NonFiniteLossError: non-finite parameter at global step 7
    """
    with torch.no_grad():  # one fused pass
        finite = all_finite(parameters_of(model.policy))
    if not finite:
        raise NonFiniteLossError(step, "parameter")


class NanGuard(CrlCallback):
    """Raise :class:`~crl.errors.NonFiniteLossError` instead of training on NaN or inf.

    An optimizer step pre-hook refuses a step whose gradients are not finite (so no bad step
    reaches the weights); at every rollout boundary the last loss is checked, at the first
    boundary ``param_every`` steps after the last look and at the end the policy's
    parameters too (:func:`check_parameters`, which ``crl train`` also runs before every
    checkpoint, so a bad state is never checkpointed). A parameter made non-finite outside an
    optimizer step (an intervention's write) usually makes the next step's gradients non-finite,
    which the pre-hook refuses at once; the parameter check is the backstop, spaced out because
    an off-policy run has a boundary at every env step (~0.13 ms for SB3's SAC policy on Hopper).

    Args:
        param_every: env steps between two checks of the parameters (1: every boundary).

    Example:
        >>> import gymnasium as gym
        >>> from stable_baselines3 import PPO
        >>> model = PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=64, batch_size=64, n_epochs=1)
        >>> _ = model.learn(128, callback=NanGuard())
    """

    #: Its optimizer hook only reads the stepped optimizer's gradients (and raises):
    #: :func:`crl.fast.adam.local_hooks`.
    local_step_hooks = True

    def __init__(self, param_every: int = 1000) -> None:
        super().__init__()
        if int(param_every) < 1:
            raise ValueError(f"param_every must be a whole number of env steps >= 1, got {param_every!r}")
        self.param_every = int(param_every)
        self._hooks: list[Any] = []
        self._next_param_check = 0

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
        self._check_loss()
        if self.num_timesteps >= self._next_param_check:
            self._next_param_check = self.num_timesteps + self.param_every
            check_parameters(self.model, self.num_timesteps)

    def _on_training_end(self) -> None:
        self.check()
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _check_loss(self) -> None:
        loss = self.model.logger.name_to_value.get("train/loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteLossError(self.num_timesteps, "loss")

    def check(self) -> None:
        """Raise if the last logged loss or any policy parameter is not finite."""
        self._check_loss()
        check_parameters(self.model, self.num_timesteps)
