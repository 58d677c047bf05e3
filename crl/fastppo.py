"""A leaner PPO update step with the same math as stable-baselines3's :class:`~stable_baselines3.PPO`.

:class:`FastPPO` is a ``PPO`` subclass (same SB3 policy, same saved-model format: a FastPPO
``model.zip`` loads with ``PPO.load``) whose :meth:`FastPPO.train` differs only in overheads:

- the rollout is converted to torch tensors once per update, not once per minibatch;
- the per-minibatch statistics stay tensors (no ``.item()`` / ``.cpu().numpy()`` sync per
  minibatch); they are reduced once at the end for the logger;
- ``clip_grad_norm_`` is skipped when ``max_grad_norm`` is infinite (it would scale by 1.0);
- with ``parallel_update`` (default: automatic, on machines with 2+ usable cores and networks
  large enough for it to pay), the critic's forward and backward of every minibatch run in a
  worker process (:class:`crl.critic_worker.CriticWorker`) at the same time as the actor's in
  the trainer; the optimizer step and its hooks stay in the trainer. The gradients are the
  same numbers as those of the single-process step.

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
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from crl.critic_worker import CriticWorker, critic_modules
from crl.system import usable_cores

__all__ = ["FastPPO", "PARALLEL_MIN_WORK"]

#: ``parallel_update=None`` (automatic) uses the critic worker when ``batch_size`` times the
#: critic's parameter count reaches this: below it the two messages per minibatch cost more
#: than the critic's half of the work saves. Dohare's 256x256 nets with minibatches of 128 do
#: about 12 million (Ant) or 9 million (Hopper); SB3's default 64x64 ones about 0.6 million.
PARALLEL_MIN_WORK = 2_000_000

_FIELDS = ("observations", "actions", "values", "log_probs", "advantages", "returns")


class FastPPO(PPO):
    """SB3 PPO with a leaner :meth:`train` (same losses, gradients and minibatch order).

    Args:
        parallel_update: compute the critic's half of each minibatch in a worker process
            (``True``), never (``False``), or when it pays (``None``: 2+ usable cores and
            ``batch_size`` x critic parameters >= :data:`PARALLEL_MIN_WORK`).
        *args, **kwargs: those of :class:`~stable_baselines3.PPO`.
    """

    parallel_update: bool | None = None
    _critic_worker: CriticWorker | None = None

    def __init__(self, *args: Any, parallel_update: bool | None = None, **kwargs: Any) -> None:
        self.parallel_update = parallel_update
        super().__init__(*args, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_critic_worker"]

    def close_workers(self) -> None:
        """Stop the critic worker process, if any (a later update starts a new one)."""
        if self._critic_worker is not None:
            self._critic_worker.close()
            self._critic_worker = None

    def _worker_for(self, n: int) -> CriticWorker | None:
        """The critic worker for this update, (re)built if needed; ``None``: single process."""
        if self.parallel_update is False:
            self.close_workers()
            return None
        policy = self.policy
        if CriticWorker.unsupported(policy) is not None:
            self.close_workers()
            return None
        if self.parallel_update is None:
            body, head = critic_modules(policy)
            work = self.batch_size * sum(p.numel() for p in [*body.parameters(), *head.parameters()])
            if usable_cores() < 2 or work < PARALLEL_MIN_WORK:
                return None
        w = self._critic_worker
        if w is None or w.closed or w.signature != CriticWorker.signature_of(policy, n, self.batch_size):
            self.close_workers()
            w = self._critic_worker = CriticWorker(policy, n, self.batch_size)
        return w

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
        worker = self._worker_for(n)
        if worker is not None:
            vf_features = BasePolicy.extract_features(policy, obs, policy.vf_features_extractor)
            worker.begin(vf_features, ret, self.vf_coef, training=True)
        for _ in range(self.n_epochs):
            idx = th.from_numpy(np.random.permutation(n)).to(self.device)
            if worker is not None:
                worker.epoch(idx)
            for start in range(0, n, self.batch_size):
                b = idx[start : start + self.batch_size]
                old = old_lp[b]
                if worker is not None and not worker.serves(policy):
                    worker = None  # the critic changed within this update: one process from here
                if worker is not None:  # the critic's half runs in the worker meanwhile
                    opt.zero_grad()
                    worker.submit(start, start + len(b))
                    dist = policy.get_distribution(obs[b])
                    log_prob, entropy = dist.log_prob(acts[b]), dist.entropy()
                else:
                    values, log_prob, entropy = policy.evaluate_actions(obs[b], acts[b])
                advantages = adv_all[b]
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                ratio = th.exp(log_prob - old)
                policy_loss = -th.min(
                    advantages * ratio, advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                ).mean()
                entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
                if worker is not None:
                    (policy_loss + self.ent_coef * entropy_loss).backward()
                    value_loss = worker.collect()
                    loss = policy_loss.detach() + self.ent_coef * entropy_loss.detach() + self.vf_coef * value_loss
                else:
                    value_loss = F.mse_loss(ret[b], values.flatten())
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
