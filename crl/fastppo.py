"""A leaner PPO update step with the same math as stable-baselines3's :class:`~stable_baselines3.PPO`.

:class:`FastPPO` is a ``PPO`` subclass (same SB3 policy, same saved-model format: a FastPPO
``model.zip`` loads with ``PPO.load``) whose :meth:`FastPPO.train` differs only in overheads:

- the rollout is converted to torch tensors once per update, not once per minibatch;
- the per-minibatch statistics stay tensors (no ``.item()`` / ``.cpu().numpy()`` sync per
  minibatch); they are reduced once at the end for the logger;
- ``clip_grad_norm_`` is skipped when ``max_grad_norm`` is infinite (it would scale by 1.0).

The minibatch order draws ``np.random.permutation`` once per epoch exactly as
``RolloutBuffer.get`` does, so with the same seed FastPPO and PPO see the same minibatches and
make the same updates (up to float rounding). Features SB3 handles that this fast path does
not (``clip_range_vf``, ``target_kl``, dict observations) fall back to ``PPO.train``.

Example:
    >>> import gymnasium as gym
    >>> model = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, batch_size=32, n_epochs=1, seed=0)
    >>> _ = model.learn(64)
    >>> model._n_updates
    1
"""

from __future__ import annotations

import math

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

__all__ = ["FastPPO"]

_FIELDS = ("observations", "actions", "values", "log_probs", "advantages", "returns")


class FastPPO(PPO):
    """SB3 PPO with a leaner :meth:`train` (same losses, gradients and minibatch order)."""

    def _fast_path(self) -> bool:
        return self.clip_range_vf is None and self.target_kl is None and type(self.rollout_buffer) is RolloutBuffer

    def _rollout_tensors(self) -> dict[str, th.Tensor]:
        """The rollout as flat torch tensors (once per update)."""
        buf = self.rollout_buffer
        if not buf.generator_ready:
            for name in _FIELDS:
                buf.__dict__[name] = buf.swap_and_flatten(buf.__dict__[name])
            buf.generator_ready = True
        out = {name: th.as_tensor(getattr(buf, name), device=self.device) for name in _FIELDS}
        out["actions"] = out["actions"].float()
        for name in ("values", "log_probs", "advantages", "returns"):
            out[name] = out[name].flatten()
        return out

    def train(self) -> None:
        """One PPO update on the rollout buffer (``n_epochs`` passes of minibatches)."""
        if not self._fast_path():
            return super().train()
        policy, opt = self.policy, self.policy.optimizer
        policy.set_training_mode(True)
        self._update_learning_rate(opt)
        clip_range = float(self.clip_range(self._current_progress_remaining))  # type: ignore[operator]
        data = self._rollout_tensors()
        obs, acts, old_lp, adv_all, ret = (
            data[k] for k in ("observations", "actions", "log_probs", "advantages", "returns")
        )
        if isinstance(self.action_space, spaces.Discrete):
            acts = acts.long().flatten()
        n = obs.shape[0]
        clip = math.isfinite(self.max_grad_norm)
        params = list(policy.parameters())
        stats: list[th.Tensor] = []
        loss = th.zeros(())
        for _ in range(self.n_epochs):
            idx = th.from_numpy(np.random.permutation(n)).to(self.device)
            for start in range(0, n, self.batch_size):
                b = idx[start : start + self.batch_size]
                old = old_lp[b]
                values, log_prob, entropy = policy.evaluate_actions(obs[b], acts[b])
                advantages = adv_all[b]
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                ratio = th.exp(log_prob - old)
                policy_loss = -th.min(
                    advantages * ratio, advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                ).mean()
                value_loss = F.mse_loss(ret[b], values.flatten())
                entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                opt.zero_grad()
                loss.backward()
                if clip:
                    th.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                opt.step()
                with th.no_grad():
                    log_ratio = log_prob - old
                    stats.append(
                        th.stack(
                            [
                                policy_loss.detach(),
                                value_loss.detach(),
                                entropy_loss.detach(),
                                th.mean((th.abs(ratio - 1) > clip_range).float()),
                                th.mean((th.exp(log_ratio) - 1) - log_ratio),
                            ]
                        )
                    )
            self._n_updates += 1
        self._log_update(th.stack(stats).double(), loss, clip_range, n)

    def _log_update(self, stats: th.Tensor, loss: th.Tensor, clip_range: float, n: int) -> None:
        mean = stats.mean(0).tolist()
        per_epoch = -(-n // self.batch_size)
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/entropy_loss", mean[2])
        self.logger.record("train/policy_gradient_loss", mean[0])
        self.logger.record("train/value_loss", mean[1])
        self.logger.record("train/approx_kl", stats[-per_epoch:, 4].mean().item())
        self.logger.record("train/clip_fraction", mean[3])
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
