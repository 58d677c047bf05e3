"""Leaner PPO rollouts and updates with the same math as stable-baselines3's :class:`~stable_baselines3.PPO`.

:class:`FastPPO` is a ``PPO`` subclass (same SB3 policy, same saved-model format: a FastPPO
``model.zip`` loads with ``PPO.load``) whose :meth:`FastPPO.train` and
:meth:`FastPPO.collect_rollouts` differ only in overheads:

- the rollout is converted to torch tensors once per update, not once per minibatch, and each
  epoch's rows are gathered in minibatch order once (a minibatch is then a slice) with the
  advantages of all its minibatches normalised in one batched reduction;
- the per-minibatch statistics stay tensors (no ``.item()`` / ``.cpu().numpy()`` sync per
  minibatch); clip fraction and approximate KL are computed for all minibatches at once after
  the update, for the logger;
- for Gaussian policies (SB3's ``MlpPolicy`` on Box actions), the log-probabilities, entropies
  and sampled actions are computed with the same torch operations as SB3's
  ``DiagGaussianDistribution`` over ``torch.distributions.Normal`` (so the same numbers, and the
  same draw from torch's generator when acting), without building and argument-checking
  distribution objects at every step and minibatch; the rollout buffer is bitwise SB3's;
- in rollouts whose callbacks are rollout-safe (crl's are: see :meth:`FastPPO.collect_rollouts`),
  a step computes only the actor's mean and the action; the values and log-probabilities, which
  only the buffer reads, are computed for the whole rollout in one batch after the last step
  (the same numbers: batching is used only where it gave exactly the one-step numbers), and
  each step's bookkeeping (episode infos, time-out bootstrap, buffer write) runs while the envs
  take the next step. The policy call of a step of 16 Ant envs (Dohare's nets) is about half
  as long, and rollouts ~5 % shorter (paired A/B in real runs);
- the entropy term is left out of the backward pass when ``ent_coef`` is 0 (it adds exact
  zeros), and gradients are set to ``None`` directly unless the optimizer has its own
  ``zero_grad``;
- ``clip_grad_norm_`` is skipped when ``max_grad_norm`` is infinite (it would scale by 1.0);
- with ``parallel_update`` (default: automatic, on machines with 2+ usable cores and networks
  large enough for it to pay), the critic's forward and backward of every minibatch run in a
  worker process (:class:`crl.fast.critic_worker.CriticWorker`) at the same time as the actor's in
  the trainer; the optimizer step and its hooks stay in the trainer. The gradients are the
  same numbers as those of the single-process step;
- with ``hand_gradients`` (default), the forward and backward passes of plain MLP actors and
  critics (``Linear`` + ``ReLU``/``Tanh``, Gaussian policy) are written out by hand
  (:mod:`crl.fast.mlp`: a dozen operations instead of autograd's graph, matrix products by
  oneDNN on AVX-512 CPUs not made by Intel, by torch's own kernels elsewhere): the same
  gradients up to float rounding, into the same ``.grad`` tensors, ~28 % off the update of
  Dohare's nets on a 2-core AVX-512 EPYC, ~15-17 % on an AVX2 EPYC and an AVX-512 Xeon. Other
  networks, hooks other than crl's feature capture, and discrete actions use autograd.

How each half of a minibatch (actor, critic) is computed is chosen once per update, by the
strategies of :mod:`crl.fast.update`; a strategy that stops applying mid-update (an
intervention swapped a module) steps aside for autograd, and :attr:`FastPPO.update_paths` says so.

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

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from crl.fast.critic_worker import CriticWorker, critic_modules
from crl.fast.gaussian import actor_mean, gaussian_act, gaussian_std, plain_gaussian
from crl.fast.protocol import is_rollout_safe
from crl.fast.rollout import Deferred
from crl.fast.update import Rollout, Settings, Update, choose_halves
from crl.plasticity.policies import ArchMlpExtractor
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
        hand_gradients: compute the forward and backward passes of plain MLP actors and critics
            (``Linear`` + ``ReLU``/``Tanh`` with a Gaussian policy) by hand, with oneDNN's
            matrix products on AVX-512 CPUs not made by Intel and torch's elsewhere
            (:mod:`crl.fast.mlp`): the same gradients as autograd up to float rounding; the
            update of Dohare's nets takes ~30 % less time on an AVX-512 EPYC, ~15-17 % on an
            AVX2 EPYC and an AVX-512 Xeon (``benchmarks/update_step.py``). ``False``: autograd
            throughout.
        *args, **kwargs: those of :class:`~stable_baselines3.PPO`.

    After each update, :attr:`update_paths` says how its minibatches were computed (the
    strategies of :mod:`crl.fast.update`): ``[(0, actor, critic)]``, with one more entry
    ``(minibatch, actor, critic)`` where an intervention made a strategy step aside mid-update.
    FastPPO is a :class:`crl.fast.protocol.FastLoop`.
    """

    parallel_update: bool | None = None
    hand_gradients: bool = True
    _critic_worker: CriticWorker | None = None
    _deferred: Deferred | None = None  # the rollout's deferred values and log-probabilities
    _deferred_exact: dict[Any, bool] | None = None  # which batch sizes give the one-step numbers (see Deferred)
    update_paths: list[tuple[int, str, str]] | None = None  # the last update's strategies (see crl.fast.update)

    def __init__(
        self, *args: Any, parallel_update: bool | None = None, hand_gradients: bool = True, **kwargs: Any
    ) -> None:
        self.parallel_update = parallel_update
        self.hand_gradients = hand_gradients
        super().__init__(*args, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_critic_worker", "_deferred", "_deferred_exact", "update_paths"]

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

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """Fill ``rollout_buffer`` with ``n_rollout_steps`` steps of every env, as SB3's
        ``OnPolicyAlgorithm.collect_rollouts`` does (same actions, values, log-probabilities,
        bootstrapped time-outs, callbacks and their ``locals``), with a leaner policy call for
        Gaussian policies (:func:`gaussian_act`). Other policies use SB3's loop.

        Where every callback is rollout-safe, the step computes only the actor's mean and the
        action: the values and log-probabilities, which only the buffer reads, are computed
        for all steps at once after the last one (:class:`Deferred`; the same numbers,
        checked), and the callbacks see ``values`` and ``log_probs`` as ``None``. A callback
        class declares itself rollout-safe with a class attribute ``rollout_safe = True``: its
        ``on_step`` does not change the policy's weights, or calls :meth:`policy_will_change`
        first (crl's run callback is one). SB3's checkpoint, progress-bar and max-episodes
        callbacks, and ``callback=None``, count as rollout-safe.
        """
        policy = self.policy
        box = isinstance(self.action_space, spaces.Box)
        if self.use_sde or not box or policy.squash_output or not plain_gaussian(policy):
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        assert self._last_obs is not None, "No previous observation was provided"
        policy.set_training_mode(False)
        rollout_buffer.reset()
        callback.on_rollout_start()
        low, high = self.action_space.low, self.action_space.high
        deferred = self._deferred = self._deferrable(callback, rollout_buffer, env, n_rollout_steps)
        if deferred is not None:
            placeholder = th.zeros(env.num_envs)  # the buffer's values and log-probabilities come after the rollout
        n_steps = 0
        last: tuple[Any, ...] | None = None  # the last step, to be written while the envs step
        while n_steps < n_rollout_steps:
            obs_tensor, actions_t, values, log_probs = self._act(deferred)  # SB3's names: callbacks see them
            actions = actions_t.cpu().numpy()
            clipped_actions = np.clip(actions, low, high)
            env.step_async(clipped_actions)
            if last is not None:  # SB3 does this before the policy call; nothing there reads it
                self._write_step(rollout_buffer, *last)
                last = None
            new_obs, rewards, dones, infos = env.step_wait()
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())  # callbacks read SB3's names: infos, dones, rewards, ...
            if not callback.on_step():
                self._fill_deferred(rollout_buffer)
                return False
            n_steps += 1
            if deferred is not None:
                values = log_probs = placeholder
            last = (self._last_obs, actions, rewards, self._last_episode_starts, dones, infos, values, log_probs)
            self._last_obs = new_obs
            self._last_episode_starts = dones
        if last is not None:
            self._write_step(rollout_buffer, *last)
        self._fill_deferred(rollout_buffer)
        with th.no_grad():
            values = policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _act(self, deferred: Deferred | None) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, th.Tensor | None]:
        """A rollout step's policy call: the observations as a tensor, the actions, and their
        values and log-probabilities (``None`` where ``deferred`` computes them after the rollout).
        """
        policy = self.policy
        with th.no_grad():
            obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
            if deferred is None:
                return obs_tensor, *gaussian_act(policy, obs_tensor)
            mean = actor_mean(policy, obs_tensor)
            actions_t = th.normal(mean, gaussian_std(policy, mean))  # gaussian_act's draw
            deferred.keep(obs_tensor, mean, actions_t)
            return obs_tensor, actions_t.reshape((-1, *policy.action_space.shape)), None, None

    def _write_step(
        self,
        buffer: RolloutBuffer,
        obs: Any,
        actions: np.ndarray,
        rewards: np.ndarray,
        starts: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
        values: th.Tensor,
        log_probs: th.Tensor,
    ) -> None:
        """What SB3's loop does with a step after its callbacks: the episode-info buffer, the
        bootstrap of time-outs with the value of their last state (the weights as the callbacks
        left them), and the rollout buffer. :meth:`collect_rollouts` does it while the envs
        take the next step: the next policy call reads none of it, and the next callbacks come
        after it.
        """
        self._update_info_buffer(infos, dones)
        for i in np.flatnonzero(dones):  # a time-out: bootstrap with the value of the last state
            last = infos[i].get("terminal_observation")
            if last is not None and infos[i].get("TimeLimit.truncated", False):
                with th.no_grad():
                    last_value = self.policy.predict_values(self.policy.obs_to_tensor(last)[0])[0]
                rewards[i] += self.gamma * last_value
        buffer.add(obs, actions, rewards, starts, values, log_probs)

    def policy_will_change(self) -> None:
        """Call before changing the policy's weights inside a rollout (from a callback's
        ``on_step``): the values and log-probabilities of the steps so far, the current one
        included, are computed now, with the weights that chose their actions.
        """
        if self._deferred is not None:
            self._deferred.fill(self.policy)

    def _deferrable(self, callback: BaseCallback, buffer: RolloutBuffer, env: VecEnv, n_steps: int) -> Deferred | None:
        """A :class:`Deferred` for this rollout, or ``None`` where the loop computes every step's outputs."""
        policy, space = self.policy, self.observation_space
        if not (
            is_rollout_safe(callback)
            and type(buffer) is RolloutBuffer
            and isinstance(space, spaces.Box)
            and type(policy.mlp_extractor) in (MlpExtractor, ArchMlpExtractor)
            and type(policy.pi_features_extractor) is FlattenExtractor
            and type(policy.vf_features_extractor) is FlattenExtractor
        ):
            return None
        act_dim = int(np.prod(self.action_space.shape))
        if self._deferred_exact is None:
            self._deferred_exact = {}
        return Deferred(n_steps, env.num_envs, space.shape, act_dim, self._deferred_exact)

    def _fill_deferred(self, buf: RolloutBuffer) -> None:
        """Write the deferred values and log-probabilities of the rollout's steps into ``buf``."""
        d = self._deferred
        if d is None:
            return
        d.fill(self.policy)
        n = d.taken
        buf.values[:n] = d.values[:n].numpy()
        buf.log_probs[:n] = d.log_probs[:n].numpy()
        self._deferred = None

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
        """One PPO update on the rollout buffer (``n_epochs`` passes of minibatches), each
        minibatch's halves computed by the strategies :func:`crl.fast.update.choose_halves`
        picks when the update starts (:attr:`update_paths` says which were taken).
        """
        if not self._fast_path():
            return super().train()
        policy, opt = self.policy, self.policy.optimizer
        policy.set_training_mode(True)
        self._update_learning_rate(opt)
        settings = Settings(
            clip_range=float(self.clip_range(self._current_progress_remaining)),  # type: ignore[operator]
            ent_coef=self.ent_coef,
            vf_coef=self.vf_coef,
            batch_size=self.batch_size,
            normalize_advantage=self.normalize_advantage,
            gaussian=plain_gaussian(policy),
        )
        rollout = Rollout(policy, self._rollout_tensors())
        halves = choose_halves(policy, rollout, settings, self._worker_for(rollout.n), self.hand_gradients)
        update = Update(policy, opt, rollout, settings, halves, self.max_grad_norm)
        try:
            for _ in range(self.n_epochs):
                update.epoch(th.from_numpy(np.random.permutation(rollout.n)).to(self.device))
                self._n_updates += 1
        finally:
            self.update_paths = update.paths
            if self._critic_worker is not None and not self._critic_worker.closed:
                self._critic_worker.end()  # a spinning worker stops polling until the next update
        stats, loss = update.stats()
        self._log_update(stats, loss, settings.clip_range, rollout.n)

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
