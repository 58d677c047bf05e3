"""The values and log-probabilities of a rollout's steps, computed in batches after the steps.

:meth:`crl.fast.FastPPO.collect_rollouts` computes only the actor's mean and the action at each
step where every callback is rollout-safe (:func:`crl.fast.protocol.is_rollout_safe`); the
values and log-probabilities, which only the rollout buffer reads, come from :class:`Deferred`
in one batch after the last step, or when a callback announces a change of the weights.

Example:
    >>> import gymnasium as gym
    >>> from crl.fast import FastPPO
    >>> policy = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, seed=0).policy
    >>> deferred = Deferred(n_steps=2, n_envs=1, obs_shape=(3,), act_dim=1, exact={})
    >>> for _ in range(2):
    ...     deferred.keep(th.zeros(1, 3), th.zeros(1, 1), th.ones(1, 1))
    >>> deferred.fill(policy)
    >>> deferred.filled, deferred.values.shape
    (2, torch.Size([2, 1]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch as th

from crl.fast.gaussian import critic_values, gaussian_log_prob, gaussian_std

__all__ = ["Deferred"]


class Deferred:
    """The values and log-probabilities of a rollout's steps, computed in batches after the
    steps (:meth:`crl.fast.FastPPO.collect_rollouts`): the inputs are kept per step (the observations
    as float32, as the features extractor converts them, the mean actions and the sampled
    actions), and :meth:`fill` computes the outputs of the steps not yet done in one pass.

    A matrix product over many rows may sum in another order than one over a step's rows
    (MKL does, for some rows, with one env), so a batch is used only where it gave exactly the
    one-step numbers: the first batch of each size is computed both ways and compared row by
    row (``exact``, kept by the model across rollouts), later ones are spot-checked.
    """

    def __init__(
        self, n_steps: int, n_envs: int, obs_shape: tuple[int, ...], act_dim: int, exact: dict[Any, bool]
    ) -> None:
        self.obs = th.empty((n_steps, n_envs, *obs_shape))
        self.means = th.empty((n_steps, n_envs, act_dim))
        self.actions = th.empty((n_steps, n_envs, act_dim))
        self.values = th.empty((n_steps, n_envs))
        self.log_probs = th.empty((n_steps, n_envs))
        self.taken = 0  # steps whose inputs are kept
        self.filled = 0  # steps whose outputs are computed
        self.exact = exact  # (steps in a batch, parameter shapes) -> whether the batch equals one-step calls

    def keep(self, obs: th.Tensor, mean: th.Tensor, actions: th.Tensor) -> None:
        t = self.taken
        self.obs[t].copy_(obs)
        self.means[t].copy_(mean)
        self.actions[t].copy_(actions)
        self.taken = t + 1

    def _outputs(self, policy: Any, a: int, b: int) -> tuple[th.Tensor, th.Tensor]:
        n = b - a
        obs = self.obs[a:b].flatten(0, 1)
        mean, actions = self.means[a:b].flatten(0, 1), self.actions[a:b].flatten(0, 1)
        log_prob, _ = gaussian_log_prob(mean, gaussian_std(policy, mean), actions)
        return critic_values(policy, obs).view(n, -1), log_prob.view(n, -1)

    def _one_by_one(self, policy: Any, a: int, b: int) -> None:
        for t in range(a, b):
            self.values[t : t + 1], self.log_probs[t : t + 1] = self._outputs(policy, t, t + 1)

    def fill(self, policy: Any) -> None:
        """Compute the outputs of the kept steps not yet done, with the policy as it is now."""
        a, b = self.filled, self.taken
        self.filled = b
        if a == b:
            return
        key = (b - a, tuple(p.shape for p in policy.parameters()))
        with th.no_grad():
            known = self.exact.get(key) if b - a > 1 else False
            if known is False:
                self._one_by_one(policy, a, b)
                return
            values, log_probs = self._outputs(policy, a, b)
            if known is None:  # the first batch of this size: every step both ways, compared row by row
                self._one_by_one(policy, a, b)
                rows: Sequence[int] = range(a, b)
            else:  # a size that matched before: spot-check its first and last step
                rows = (a, b - 1)
                for t in rows:
                    self._one_by_one(policy, t, t + 1)
            same = all(
                th.equal(self.values[t], values[t - a]) and th.equal(self.log_probs[t], log_probs[t - a]) for t in rows
            )
            self.exact[key] = same
            if same:
                self.values[a:b], self.log_probs[a:b] = values, log_probs
            elif known:  # the steps between the spot checks were not computed one by one
                self._one_by_one(policy, a, b)
