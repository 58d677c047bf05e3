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
  worker process (:class:`crl.critic_worker.CriticWorker`) at the same time as the actor's in
  the trainer; the optimizer step and its hooks stay in the trainer. The gradients are the
  same numbers as those of the single-process step;
- with ``hand_gradients`` (default), the forward and backward passes of plain MLP actors and
  critics (``Linear`` + ``ReLU``/``Tanh``, Gaussian policy) are written out by hand
  (:mod:`crl.fastmlp`: a dozen operations instead of autograd's graph, matrix products by
  oneDNN where torch has it): the same gradients up to float rounding, into the same ``.grad``
  tensors, ~28 % off the update of Dohare's nets on the 2-core benchmark machine. Other
  networks, hooks other than crl's feature capture, and discrete actions use autograd.

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
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    ConvertCallback,
    ProgressBarCallback,
    StopTrainingOnMaxEpisodes,
)
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from crl.critic_worker import CriticWorker, critic_modules, hand_critic_step
from crl.fastmlp import MlpPlan, accumulate_grad, has_grad_hooks
from crl.plasticity.optimizers import step as optim_step
from crl.policies import ArchMlpExtractor
from crl.system import usable_cores

__all__ = ["FastPPO", "PARALLEL_MIN_WORK"]

#: ``parallel_update=None`` (automatic) uses the critic worker when ``batch_size`` times the
#: critic's parameter count reaches this: below it the two messages per minibatch cost more
#: than the critic's half of the work saves. Dohare's 256x256 nets with minibatches of 128 do
#: about 12 million (Ant) or 9 million (Hopper); SB3's default 64x64 ones about 0.6 million.
PARALLEL_MIN_WORK = 2_000_000

_FIELDS = ("observations", "actions", "values", "log_probs", "advantages", "returns")


_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))
_ENTROPY_CONST = 0.5 + 0.5 * math.log(2 * math.pi)


def _plain_gaussian(policy: Any) -> bool:
    """Whether ``policy`` computes its actions' log-probabilities as SB3's ``ActorCriticPolicy``
    does with a ``DiagGaussianDistribution`` (no gSDE, no override of the distribution methods).
    """
    cls = type(policy)
    return (
        isinstance(policy, ActorCriticPolicy)
        and type(policy.action_dist) is DiagGaussianDistribution
        and all(
            getattr(cls, name) is getattr(ActorCriticPolicy, name)
            for name in (
                "forward",
                "extract_features",
                "get_distribution",
                "_get_action_dist_from_latent",
                "evaluate_actions",
            )
        )
    )


def _latents(policy: Any, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """The actor's and critic's latents of ``obs``, as ``ActorCriticPolicy.forward`` and
    ``evaluate_actions`` compute them (a shared features extractor runs once).
    """
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        return policy.mlp_extractor(features)
    return policy.mlp_extractor.forward_actor(features[0]), policy.mlp_extractor.forward_critic(features[1])


def _gaussian_std(policy: Any, mean: th.Tensor) -> th.Tensor:
    """The standard deviation of SB3's ``DiagGaussianDistribution`` for the mean actions
    ``mean``: ``exp(log_std)`` spread over ``mean``'s shape, op for op as SB3 computes it.
    """
    return th.ones_like(mean) * policy.log_std.exp()


def _gaussian_log_prob(mean: th.Tensor, std: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """``Normal(mean, std).log_prob(actions)`` summed over action dimensions, op for op as
    torch computes it, and ``log(std)``.
    """
    log_scale = std.log()
    return (-((actions - mean) ** 2) / (2 * std**2) - log_scale - _LOG_SQRT_2PI).sum(dim=1), log_scale


def _gaussian_terms(
    policy: Any, obs: th.Tensor, actions: th.Tensor, entropy_grad: bool, critic: bool
) -> tuple[th.Tensor | None, th.Tensor, th.Tensor]:
    """Values (with ``critic``, else ``None``), log-probabilities and entropies of ``actions``
    under ``policy``, with the same torch operations as SB3's ``evaluate_actions`` with a
    ``DiagGaussianDistribution`` over ``torch.distributions.Normal`` (so the same numbers),
    without building the distribution objects and checking their arguments at every minibatch.
    The entropy is computed without gradient unless ``entropy_grad``.
    """
    values = None
    if critic:
        latent_pi, latent_vf = _latents(policy, obs)
        values = policy.value_net(latent_vf)
    else:
        latent_pi = policy.mlp_extractor.forward_actor(
            BasePolicy.extract_features(policy, obs, policy.pi_features_extractor)
        )
    mean = policy.action_net(latent_pi)
    log_prob, log_scale = _gaussian_log_prob(mean, _gaussian_std(policy, mean), actions)
    with th.set_grad_enabled(entropy_grad and th.is_grad_enabled()):
        entropy = (_ENTROPY_CONST + log_scale).sum(dim=1)
    return values, log_prob, entropy


def _gaussian_act(policy: Any, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``policy(obs)`` (actions, values, log-probabilities) with the same torch operations, and
    the same draw from torch's generator, as SB3's ``ActorCriticPolicy.forward`` with a
    ``DiagGaussianDistribution``, without building the distribution objects at every step.
    """
    latent_pi, latent_vf = _latents(policy, obs)
    values = policy.value_net(latent_vf)
    mean = policy.action_net(latent_pi)
    std = _gaussian_std(policy, mean)
    actions = th.normal(mean, std)  # torch.distributions.Normal.sample's draw
    log_prob, _ = _gaussian_log_prob(mean, std, actions)
    return actions.reshape((-1, *policy.action_space.shape)), values, log_prob


def _actor_mean(policy: Any, obs: th.Tensor) -> th.Tensor:
    """The Gaussian policy's mean action, with the operations of the actor's half of
    ``ActorCriticPolicy.forward`` (for an ``MlpExtractor`` or crl's ``ArchMlpExtractor``, whose
    ``forward`` is ``forward_actor`` and ``forward_critic`` side by side).
    """
    features = BasePolicy.extract_features(policy, obs, policy.pi_features_extractor)
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


def _critic_values(policy: Any, obs: th.Tensor) -> th.Tensor:
    """The values of ``obs``, flat, with the operations of the critic's half of ``ActorCriticPolicy.forward``."""
    features = BasePolicy.extract_features(policy, obs, policy.vf_features_extractor)
    return policy.value_net(policy.mlp_extractor.forward_critic(features)).flatten()


#: SB3's callbacks whose ``on_step`` does not change the policy's weights (see :func:`_rollout_safe`).
_SAFE_CALLBACKS = (CheckpointCallback, ProgressBarCallback, StopTrainingOnMaxEpisodes)


def _rollout_safe(callback: BaseCallback) -> bool:
    """Whether no callback in ``callback`` changes the policy's weights inside a rollout
    without calling :meth:`FastPPO.policy_will_change` first (a ``rollout_safe`` class
    attribute declares it; a few of SB3's own callbacks are known not to).
    """
    if type(callback) is CallbackList:
        return all(_rollout_safe(c) for c in callback.callbacks)
    if type(callback) is ConvertCallback:  # what SB3 makes of ``callback=None`` (or of a function)
        return callback.callback is None
    return type(callback) in _SAFE_CALLBACKS or getattr(type(callback), "rollout_safe", False) is True


class _Deferred:
    """The values and log-probabilities of a rollout's steps, computed in batches after the
    steps (:meth:`FastPPO.collect_rollouts`): the inputs are kept per step (the observations
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
        log_prob, _ = _gaussian_log_prob(mean, _gaussian_std(policy, mean), actions)
        return _critic_values(policy, obs).view(n, -1), log_prob.view(n, -1)

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


def _actor_plan(policy: Any) -> MlpPlan | None:
    """A hand-written forward and backward pass (:class:`crl.fastmlp.MlpPlan`) of the actor's
    mean for :func:`_hand_actor_step`, or ``None`` where the policy needs autograd.
    """
    if not _plain_gaussian(policy) or not isinstance(policy.observation_space, spaces.Box):
        return None
    if type(policy.pi_features_extractor) is not FlattenExtractor:
        return None
    log_std = policy.log_std
    if log_std.dtype != th.float32 or log_std.device.type != "cpu" or has_grad_hooks(log_std):
        return None
    return MlpPlan.of(policy.mlp_extractor.policy_net, policy.action_net)


def _critic_plan(policy: Any) -> MlpPlan | None:
    """:class:`crl.fastmlp.MlpPlan` of the critic, or ``None`` where it needs autograd."""
    if not isinstance(policy.observation_space, spaces.Box):
        return None
    if type(policy.vf_features_extractor) is not FlattenExtractor:
        return None
    return MlpPlan.of(*critic_modules(policy))


def _hand_actor_step(
    plan: MlpPlan,
    log_std: th.Tensor,
    features: th.Tensor,
    actions: th.Tensor,
    old_log_prob: th.Tensor,
    advantages: th.Tensor,
    clip_range: float,
    ent_coef: float,
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """PPO's clipped policy loss of a Gaussian policy, its entropy loss and the log-ratios, with
    the gradients of ``policy_loss + ent_coef * entropy_loss`` added to the actor's ``.grad``,
    all by hand: the same math as :func:`_gaussian_terms` and ``backward()`` (up to float
    rounding), including torch's rules at the edges (``minimum`` splits a tie's gradient evenly,
    ``clamp`` passes it at its bounds).
    """
    mean, inputs = plan.forward(features)
    with th.no_grad():
        n = features.shape[0]
        std = log_std.exp()
        log_scale = std.log()
        var = std * std
        diff = actions - mean
        sq = diff * diff
        log_ratio = (-sq / (2 * var) - log_scale - _LOG_SQRT_2PI).sum(dim=1) - old_log_prob  # as SB3
        ratio = log_ratio.exp()
        clipped = ratio.clamp(1 - clip_range, 1 + clip_range)
        surr1 = advantages * ratio
        surr2 = advantages * clipped
        policy_loss = -th.minimum(surr1, surr2).mean()
        entropy_loss = -(_ENTROPY_CONST + log_scale).sum()  # the same entropy on every row
        # d(policy_loss)/d(ratio) = -advantages / n times surr1's share of the minimum (1, a
        # tie's 0.5, or 0: (sign(surr2 - surr1) + 1) / 2), plus surr2's where the clamp passes
        # the gradient (inside its bounds, where it returns the ratio itself: both halves of a tie)
        share = th.where(clipped == ratio, 1.0, (surr2 - surr1).sign_().add_(1.0).mul_(0.5))
        g_log_prob = share.mul_(surr1).mul_(-1.0 / n)[:, None]  # d/d(log_prob) = d/d(ratio) * ratio
        d_mean = diff.div_(var)  # d(log_prob)/d(mean) = (a - mean) / var
        g_mean = g_log_prob * d_mean
        # d(log_prob)/d(log_std) = (a - mean)^2 / var - 1 (through std = exp(log_std))
        g_log_std = (g_log_prob * (sq.div_(var).sub_(1.0))).sum(dim=0)
        if ent_coef != 0.0:
            g_log_std = g_log_std - ent_coef
    plan.backward(inputs, g_mean)
    accumulate_grad(log_std, g_log_std)
    return policy_loss, entropy_loss, log_ratio


def _set_grads_to_none(opt: th.optim.Optimizer) -> None:
    """``opt.zero_grad()`` (``set_to_none=True``) without its profiler record and per-call checks."""
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = None


def _normalized_minibatches(adv: th.Tensor, batch_size: int) -> th.Tensor:
    """An epoch's advantages (in minibatch order) with every minibatch of ``batch_size`` rows
    normalised as SB3's ``PPO.train`` normalises one, ``(a - a.mean()) / (a.std() + 1e-8)``,
    the full minibatches in one batched reduction (the same numbers as one at a time) and a short
    last one by itself (left as it is when it has a single row, as SB3 does).

    Example:
        >>> adv = th.tensor([1.0, 3.0, 0.0, 4.0, 7.0])
        >>> _normalized_minibatches(adv, 2)
        tensor([-0.7071,  0.7071, -0.7071,  0.7071,  7.0000])
    """
    full = len(adv) // batch_size * batch_size
    out = adv.clone()
    if batch_size > 1 and full:
        rows = adv[:full].view(-1, batch_size)
        out[:full] = ((rows - rows.mean(dim=1, keepdim=True)) / (rows.std(dim=1, keepdim=True) + 1e-8)).view(-1)
    rest = adv[full:]
    if len(rest) > 1:
        out[full:] = (rest - rest.mean()) / (rest.std() + 1e-8)
    return out


def _update_stats(losses: th.Tensor, log_ratios: list[th.Tensor], clip_range: float) -> th.Tensor:
    """Per-minibatch statistics, rows of (policy loss, value loss, entropy loss, clip fraction,
    approximate KL), from the losses and the log-ratios kept during the update.
    """
    if len({len(r) for r in log_ratios}) == 1:
        lr = th.stack(log_ratios)
        ratio = th.exp(lr)
        clipped = (th.abs(ratio - 1) > clip_range).float().mean(dim=1)
        kl = ((ratio - 1) - lr).mean(dim=1)
    else:  # a short last minibatch
        clipped = th.stack([(th.abs(th.exp(r) - 1) > clip_range).float().mean() for r in log_ratios])
        kl = th.stack([((th.exp(r) - 1) - r).mean() for r in log_ratios])
    return th.cat([losses, clipped[:, None], kl[:, None]], dim=1)


class FastPPO(PPO):
    """SB3 PPO with a leaner :meth:`train` (same losses, gradients and minibatch order).

    Args:
        parallel_update: compute the critic's half of each minibatch in a worker process
            (``True``), never (``False``), or when it pays (``None``: 2+ usable cores and
            ``batch_size`` x critic parameters >= :data:`PARALLEL_MIN_WORK`).
        hand_gradients: compute the forward and backward passes of plain MLP actors and critics
            (``Linear`` + ``ReLU``/``Tanh`` with a Gaussian policy) by hand, with oneDNN's
            matrix products where torch has them (:mod:`crl.fastmlp`): the same gradients as
            autograd up to float rounding; the update of Dohare's nets takes ~30 % less time
            (``benchmarks/update_step.py``). ``False``: autograd throughout.
        *args, **kwargs: those of :class:`~stable_baselines3.PPO`.
    """

    parallel_update: bool | None = None
    hand_gradients: bool = True
    _critic_worker: CriticWorker | None = None
    _deferred: _Deferred | None = None  # the rollout's deferred values and log-probabilities
    _deferred_exact: dict[Any, bool] | None = None  # which batch sizes give the one-step numbers (see _Deferred)

    def __init__(
        self, *args: Any, parallel_update: bool | None = None, hand_gradients: bool = True, **kwargs: Any
    ) -> None:
        self.parallel_update = parallel_update
        self.hand_gradients = hand_gradients
        super().__init__(*args, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_critic_worker", "_deferred", "_deferred_exact"]

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
        Gaussian policies (:func:`_gaussian_act`). Other policies use SB3's loop.

        Where every callback is rollout-safe, the step computes only the actor's mean and the
        action: the values and log-probabilities, which only the buffer reads, are computed
        for all steps at once after the last one (:class:`_Deferred`; the same numbers,
        checked), and the callbacks see ``values`` and ``log_probs`` as ``None``. A callback
        class declares itself rollout-safe with a class attribute ``rollout_safe = True``: its
        ``on_step`` does not change the policy's weights, or calls :meth:`policy_will_change`
        first (crl's run callback is one). SB3's checkpoint, progress-bar and max-episodes
        callbacks, and ``callback=None``, count as rollout-safe.
        """
        policy = self.policy
        box = isinstance(self.action_space, spaces.Box)
        if self.use_sde or not box or policy.squash_output or not _plain_gaussian(policy):
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
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                if deferred is None:
                    actions_t, values, log_probs = _gaussian_act(policy, obs_tensor)
                else:
                    mean = _actor_mean(policy, obs_tensor)
                    actions_t = th.normal(mean, _gaussian_std(policy, mean))  # _gaussian_act's draw
                    deferred.keep(obs_tensor, mean, actions_t)
                    values = log_probs = None
                    actions_t = actions_t.reshape((-1, *policy.action_space.shape))
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

    def _deferrable(self, callback: BaseCallback, buffer: RolloutBuffer, env: VecEnv, n_steps: int) -> _Deferred | None:
        """A :class:`_Deferred` for this rollout, or ``None`` where the loop computes every step's outputs."""
        policy, space = self.policy, self.observation_space
        if not (
            _rollout_safe(callback)
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
        return _Deferred(n_steps, env.num_envs, space.shape, act_dim, self._deferred_exact)

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
        gaussian = _plain_gaussian(policy)
        zero_grad = _set_grads_to_none if type(opt).zero_grad is th.optim.Optimizer.zero_grad else None
        entropy_grad = self.ent_coef != 0.0
        losses: list[th.Tensor] = []  # per minibatch: policy, value and entropy losses
        log_ratios: list[th.Tensor] = []
        # The critic's half of a minibatch runs in the worker, by hand in this process, or with
        # autograd together with the actor's; the actor's half by hand or with autograd.
        worker = self._worker_for(n)
        actor_plan = _actor_plan(policy) if self.hand_gradients else None
        critic_plan = _critic_plan(policy) if self.hand_gradients and worker is None else None
        if worker is not None or critic_plan is not None:
            vf_features = BasePolicy.extract_features(policy, obs, policy.vf_features_extractor)
        if worker is not None:
            worker.begin(vf_features, ret, self.vf_coef, training=True, hand=self.hand_gradients)
        if actor_plan is not None:
            pi_features = BasePolicy.extract_features(policy, obs, policy.pi_features_extractor)
        try:
            for _ in range(self.n_epochs):
                idx = th.from_numpy(np.random.permutation(n)).to(self.device)
                if worker is not None:
                    worker.epoch(idx)
                # the epoch's rows in minibatch order, gathered once: a minibatch is a slice (a view);
                # observations and returns only where this process's autograd path needs them
                e_acts, e_old, e_adv = acts[idx], old_lp[idx], adv_all[idx]
                e_obs = e_ret = None
                if actor_plan is None or (worker is None and critic_plan is None):
                    e_obs = obs[idx]
                if worker is None:
                    e_ret = ret[idx]
                e_pi = pi_features[idx] if actor_plan is not None else None
                e_vf = vf_features[idx] if critic_plan is not None else None
                if self.normalize_advantage:
                    e_adv = _normalized_minibatches(e_adv, self.batch_size)
                for start in range(0, n, self.batch_size):
                    b = slice(start, min(start + self.batch_size, n))
                    # an intervention may swap modules or add hooks between two minibatches: from
                    # then on, what no longer applies steps aside for the single-process autograd path
                    if worker is not None and not worker.serves(policy):
                        worker = None
                        e_ret = ret[idx]
                    actor = policy.mlp_extractor.policy_net, policy.action_net
                    if actor_plan is not None and not actor_plan.matches(*actor):
                        actor_plan = None
                    if critic_plan is not None and not critic_plan.matches(*critic_modules(policy)):
                        critic_plan = None
                    if e_obs is None and (actor_plan is None or (worker is None and critic_plan is None)):
                        e_obs = obs[idx]
                    if zero_grad is not None:
                        zero_grad(opt)
                    else:
                        opt.zero_grad()
                    if worker is not None:  # the critic's half runs in the worker meanwhile
                        worker.submit(b.start, b.stop)
                    values, actor_loss = None, None
                    if actor_plan is not None:
                        policy_loss, entropy_loss, log_ratio = _hand_actor_step(
                            actor_plan,
                            policy.log_std,
                            e_pi[b],
                            e_acts[b],
                            e_old[b],
                            e_adv[b],
                            clip_range,
                            self.ent_coef,
                        )
                    else:
                        with_critic = worker is None and critic_plan is None
                        if gaussian:
                            values, log_prob, entropy = _gaussian_terms(
                                policy, e_obs[b], e_acts[b], entropy_grad, critic=with_critic
                            )
                        elif with_critic:
                            values, log_prob, entropy = policy.evaluate_actions(e_obs[b], e_acts[b])
                        else:
                            dist = policy.get_distribution(e_obs[b])
                            log_prob, entropy = dist.log_prob(e_acts[b]), dist.entropy()
                        advantages = e_adv[b]
                        log_ratio = log_prob - e_old[b]
                        ratio = th.exp(log_ratio)
                        policy_loss = -th.min(
                            advantages * ratio, advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                        ).mean()
                        entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
                        # with ent_coef == 0 the entropy term adds exact zeros to the gradient: leave it out
                        actor_loss = policy_loss + self.ent_coef * entropy_loss if entropy_grad else policy_loss
                    if worker is not None:
                        if actor_loss is not None:
                            actor_loss.backward()
                        value_loss = worker.collect()
                    elif critic_plan is not None:
                        value_loss, grads = hand_critic_step(critic_plan, e_vf[b], e_ret[b], self.vf_coef)
                        for p, g in zip(critic_plan.params, grads, strict=True):
                            accumulate_grad(p, g)
                        if actor_loss is not None:
                            actor_loss.backward()
                    else:
                        if values is None:  # the actor's half was by hand: the critic's alone
                            values = policy.value_net(
                                policy.mlp_extractor.forward_critic(
                                    BasePolicy.extract_features(policy, e_obs[b], policy.vf_features_extractor)
                                )
                            )
                        value_loss = F.mse_loss(e_ret[b], values.flatten())
                        loss = self.vf_coef * value_loss
                        (loss if actor_loss is None else actor_loss + loss).backward()
                    if clip:
                        th.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                    optim_step(opt)
                    losses.append(th.stack([policy_loss.detach(), value_loss.detach(), entropy_loss.detach()]))
                    log_ratios.append(log_ratio.detach())
                self._n_updates += 1
        finally:
            if self._critic_worker is not None and not self._critic_worker.closed:
                self._critic_worker.end()  # a spinning worker stops polling until the next update
        loss = losses[-1][0] + self.ent_coef * losses[-1][2] + self.vf_coef * losses[-1][1]
        self._log_update(_update_stats(th.stack(losses), log_ratios, clip_range).double(), loss, clip_range, n)

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
