"""One PPO update of :class:`crl.fast.FastPPO`: the ways of computing a minibatch's gradients,
chosen once per update.

PPO's loss ``policy_loss + ent_coef * entropy_loss + vf_coef * value_loss`` is an actor term
and a critic term. FastPPO computes each half by one strategy, chosen when the update starts
(:func:`choose_halves`) from its options and the policy:

=========================  =========================================================================
actor half                 when
=========================  =========================================================================
:class:`HandActor`         ``hand_gradients`` and a plain Gaussian MLP actor (:func:`actor_plan`)
:class:`AutogradActor`     otherwise (any SB3 actor-critic policy, discrete actions included)
=========================  =========================================================================

=========================  =========================================================================
critic half                when
=========================  =========================================================================
:class:`WorkerCritic`      the update has a critic worker (``parallel_update``)
:class:`HandCritic`        no worker, ``hand_gradients`` and a plain MLP critic (:func:`critic_plan`)
:class:`AutogradCritic`    otherwise; one backward pass with the actor's loss when that is by autograd
=========================  =========================================================================

Every strategy computes the gradients of SB3's ``PPO.train`` (the same numbers, or the same up
to float rounding for the hand-written ones) into the parameters' ``.grad``.

**Fallback inside an update.** An intervention may swap modules or add hooks between two
minibatches (plasticity injection replaces the value head in an optimizer post-hook). Before
each minibatch, :meth:`Update.minibatch` asks each half whether it still applies to the policy
(:meth:`ActorHalf.applies`, :meth:`CriticHalf.applies`); one that does not is replaced by its
autograd strategy for the rest of the update. :attr:`Update.paths` records the strategies taken
and from which minibatch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from torch.nn import functional as F

from crl.fast.adam import step as optimizer_step
from crl.fast.critic_worker import CriticWorker, critic_modules, hand_critic_step
from crl.fast.gaussian import gaussian_terms, hand_actor_step, plain_gaussian
from crl.fast.mlp import MlpPlan, accumulate_grad, has_grad_hooks

__all__ = [
    "ActorHalf",
    "ActorResult",
    "AutogradActor",
    "AutogradCritic",
    "CriticHalf",
    "Epoch",
    "HandActor",
    "HandCritic",
    "Minibatch",
    "Rollout",
    "Settings",
    "Update",
    "WorkerCritic",
    "actor_plan",
    "choose_halves",
    "critic_plan",
    "normalized_minibatches",
    "set_grads_to_none",
    "update_stats",
]


# -- the data of an update -----------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What an update reads of FastPPO's options, fixed when it starts."""

    clip_range: float
    ent_coef: float
    vf_coef: float
    batch_size: int
    normalize_advantage: bool
    #: the actor's distribution is SB3's plain diagonal Gaussian (:func:`crl.fast.gaussian.plain_gaussian`)
    gaussian: bool

    @property
    def entropy_grad(self) -> bool:
        """Whether the entropy term enters the backward pass (with ``ent_coef`` 0 it adds exact zeros)."""
        return self.ent_coef != 0.0


#: The features a half of the update may read, by the policy's features extractor that computes them.
_EXTRACTORS = {"pi_features": "pi_features_extractor", "vf_features": "vf_features_extractor"}


class Rollout:
    """The rollout as flat tensors by name (``observations``, ``actions``, ``values``,
    ``log_probs``, ``advantages``, ``returns``), and the actor's and critic's features of its
    observations (``pi_features``, ``vf_features``), computed once, on first use.
    """

    def __init__(self, policy: Any, tensors: dict[str, th.Tensor]) -> None:
        self.policy = policy
        self._columns = dict(tensors)
        if isinstance(policy.action_space, spaces.Discrete):
            self._columns["actions"] = self._columns["actions"].long().flatten()
        self.n = int(self._columns["observations"].shape[0])

    def column(self, name: str) -> th.Tensor:
        """The tensor ``name``, one row per sample."""
        if name not in self._columns:
            extractor = getattr(self.policy, _EXTRACTORS[name])
            self._columns[name] = BasePolicy.extract_features(self.policy, self._columns["observations"], extractor)
        return self._columns[name]


class Epoch:
    """An epoch's rows in minibatch order (``idx``, a permutation of the rollout's rows),
    gathered once per field and on first use: a minibatch is then a slice (a view). The
    advantages of every minibatch are normalised in one batched reduction.
    """

    def __init__(self, rollout: Rollout, idx: th.Tensor, settings: Settings) -> None:
        self.rollout, self.idx = rollout, idx
        self.actions = rollout.column("actions")[idx]
        self.old_log_prob = rollout.column("log_probs")[idx]
        adv = rollout.column("advantages")[idx]
        self.advantages = normalized_minibatches(adv, settings.batch_size) if settings.normalize_advantage else adv
        self._gathered: dict[str, th.Tensor] = {}

    def rows(self, name: str) -> th.Tensor:
        """The rollout's column ``name`` (:meth:`Rollout.column`) in this epoch's order."""
        if name not in self._gathered:
            self._gathered[name] = self.rollout.column(name)[self.idx]
        return self._gathered[name]

    def minibatches(self, batch_size: int) -> list[Minibatch]:
        """The epoch's minibatches, in order (a short last one where ``batch_size`` does not divide the rows)."""
        n = self.rollout.n
        return [Minibatch(self, slice(start, min(start + batch_size, n))) for start in range(0, n, batch_size)]


@dataclass
class Minibatch:
    """Rows ``rows`` (a slice) of an :class:`Epoch`."""

    epoch: Epoch
    rows: slice

    def get(self, name: str) -> th.Tensor:
        """The minibatch's rows of the field ``name`` (see :meth:`Epoch.rows`)."""
        return self.epoch.rows(name)[self.rows]

    @property
    def actions(self) -> th.Tensor:
        return self.epoch.actions[self.rows]

    @property
    def old_log_prob(self) -> th.Tensor:
        return self.epoch.old_log_prob[self.rows]

    @property
    def advantages(self) -> th.Tensor:
        return self.epoch.advantages[self.rows]


@dataclass
class ActorResult:
    """The actor's half of a minibatch: its losses and log-ratios; ``loss``, the actor's loss
    still to be backpropagated (``None`` where the gradients are already in ``.grad``), and
    ``values``, the critic's values where the actor's forward pass computed them too.
    """

    policy_loss: th.Tensor
    entropy_loss: th.Tensor
    log_ratio: th.Tensor
    loss: th.Tensor | None = None
    values: th.Tensor | None = None


def set_grads_to_none(opt: th.optim.Optimizer) -> None:
    """``opt.zero_grad()`` (``set_to_none=True``) without its profiler record and per-call checks."""
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = None


def normalized_minibatches(adv: th.Tensor, batch_size: int) -> th.Tensor:
    """An epoch's advantages (in minibatch order) with every minibatch of ``batch_size`` rows
    normalised as SB3's ``PPO.train`` normalises one, ``(a - a.mean()) / (a.std() + 1e-8)``,
    the full minibatches in one batched reduction (the same numbers as one at a time) and a short
    last one by itself (left as it is when it has a single row, as SB3 does).

    Example:
        >>> adv = th.tensor([1.0, 3.0, 0.0, 4.0, 7.0])
        >>> normalized_minibatches(adv, 2)
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


def update_stats(losses: th.Tensor, log_ratios: list[th.Tensor], clip_range: float) -> th.Tensor:
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


# -- the actor's half ------------------------------------------------------------------------


class ActorHalf:
    """How a minibatch's actor loss and gradients are computed (the interface of the actor's strategies)."""

    name = "actor"

    def applies(self, policy: Any) -> bool:
        """Whether this strategy still computes ``policy``'s actor (see the module docstring)."""
        return True

    def run(self, mb: Minibatch, with_values: bool) -> ActorResult:
        """The actor's half of ``mb``; with ``with_values``, the critic's values from the same forward pass."""
        raise NotImplementedError


class HandActor(ActorHalf):
    """The actor's forward and backward pass by hand (:func:`crl.fast.gaussian.hand_actor_step`)."""

    name = "hand"

    def __init__(self, plan: MlpPlan, policy: Any, settings: Settings) -> None:
        self.plan, self.policy, self.settings = plan, policy, settings

    def applies(self, policy: Any) -> bool:
        return self.plan.matches(policy.mlp_extractor.policy_net, policy.action_net)

    def run(self, mb: Minibatch, with_values: bool) -> ActorResult:
        s = self.settings
        policy_loss, entropy_loss, log_ratio = hand_actor_step(
            self.plan,
            self.policy.log_std,
            mb.get("pi_features"),
            mb.actions,
            mb.old_log_prob,
            mb.advantages,
            s.clip_range,
            s.ent_coef,
        )
        return ActorResult(policy_loss, entropy_loss, log_ratio)


class AutogradActor(ActorHalf):
    """The actor's loss through autograd, op for op as SB3's ``PPO.train`` (leaner for Gaussian
    policies: :func:`crl.fast.gaussian.gaussian_terms`); its backward pass is left to the critic's half.
    """

    name = "autograd"

    def __init__(self, policy: Any, settings: Settings) -> None:
        self.policy, self.settings = policy, settings

    def run(self, mb: Minibatch, with_values: bool) -> ActorResult:
        policy, s = self.policy, self.settings
        obs, actions = mb.get("observations"), mb.actions
        values = None
        if s.gaussian:
            values, log_prob, entropy = gaussian_terms(policy, obs, actions, s.entropy_grad, critic=with_values)
        elif with_values:
            values, log_prob, entropy = policy.evaluate_actions(obs, actions)
        else:
            dist = policy.get_distribution(obs)
            log_prob, entropy = dist.log_prob(actions), dist.entropy()
        advantages = mb.advantages
        log_ratio = log_prob - mb.old_log_prob
        ratio = th.exp(log_ratio)
        clip = s.clip_range
        policy_loss = -th.min(advantages * ratio, advantages * th.clamp(ratio, 1 - clip, 1 + clip)).mean()
        entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
        # with ent_coef == 0 the entropy term adds exact zeros to the gradient: leave it out
        loss = policy_loss + s.ent_coef * entropy_loss if s.entropy_grad else policy_loss
        return ActorResult(policy_loss, entropy_loss, log_ratio, loss, values)


# -- the critic's half -----------------------------------------------------------------------


class CriticHalf:
    """How a minibatch's value loss and critic gradients are computed, and the backward pass
    of an actor loss left by autograd (:attr:`ActorResult.loss`).
    """

    name = "critic"
    #: whether the actor's autograd forward pass computes the values too (one backward pass)
    joint = False

    def applies(self, policy: Any) -> bool:
        """Whether this strategy still computes ``policy``'s critic (see the module docstring)."""
        return True

    def start_epoch(self, idx: th.Tensor) -> None:
        """A new epoch, its rows in the order ``idx``."""

    def submit(self, mb: Minibatch) -> None:
        """Called before the actor's half of ``mb``."""

    def finish(self, mb: Minibatch, actor: ActorResult) -> th.Tensor:
        """Put the critic's gradients (and the actor's, if left to backpropagate) into ``.grad``;
        the value loss.
        """
        raise NotImplementedError


class WorkerCritic(CriticHalf):
    """The critic's half in the critic worker's process, while the trainer computes the actor's."""

    name = "worker"

    def __init__(self, worker: CriticWorker, rollout: Rollout, settings: Settings, hand: bool) -> None:
        self.worker = worker
        features, returns = rollout.column("vf_features"), rollout.column("returns")
        worker.begin(features, returns, settings.vf_coef, training=True, hand=hand)

    def applies(self, policy: Any) -> bool:
        return self.worker.serves(policy)

    def start_epoch(self, idx: th.Tensor) -> None:
        self.worker.epoch(idx)

    def submit(self, mb: Minibatch) -> None:
        self.worker.submit(mb.rows.start, mb.rows.stop)

    def finish(self, mb: Minibatch, actor: ActorResult) -> th.Tensor:
        if actor.loss is not None:
            actor.loss.backward()
        return self.worker.collect()


class HandCritic(CriticHalf):
    """The critic's forward and backward pass by hand (:func:`crl.fast.critic_worker.hand_critic_step`)."""

    name = "hand"

    def __init__(self, plan: MlpPlan, rollout: Rollout, settings: Settings) -> None:
        self.plan, self.vf_coef = plan, settings.vf_coef
        rollout.column("vf_features")  # computed once, before the first epoch

    def applies(self, policy: Any) -> bool:
        return self.plan.matches(*critic_modules(policy))

    def finish(self, mb: Minibatch, actor: ActorResult) -> th.Tensor:
        value_loss, grads = hand_critic_step(self.plan, mb.get("vf_features"), mb.get("returns"), self.vf_coef)
        for p, g in zip(self.plan.params, grads, strict=True):
            accumulate_grad(p, g)
        if actor.loss is not None:
            actor.loss.backward()
        return value_loss


class AutogradCritic(CriticHalf):
    """The value loss through autograd, backpropagated with the actor's loss in one pass."""

    name = "autograd"
    joint = True

    def __init__(self, policy: Any, settings: Settings) -> None:
        self.policy, self.vf_coef = policy, settings.vf_coef

    def finish(self, mb: Minibatch, actor: ActorResult) -> th.Tensor:
        values = actor.values
        if values is None:  # the actor's half was by hand: the critic's alone
            policy = self.policy
            features = BasePolicy.extract_features(policy, mb.get("observations"), policy.vf_features_extractor)
            values = policy.value_net(policy.mlp_extractor.forward_critic(features))
        value_loss = F.mse_loss(mb.get("returns"), values.flatten())
        loss = self.vf_coef * value_loss
        (loss if actor.loss is None else actor.loss + loss).backward()
        return value_loss


# -- choosing the halves ---------------------------------------------------------------------


def actor_plan(policy: Any) -> MlpPlan | None:
    """A hand-written forward and backward pass (:class:`crl.fast.mlp.MlpPlan`) of the actor's
    mean for :class:`HandActor`, or ``None`` where the policy needs autograd.
    """
    if not plain_gaussian(policy) or not isinstance(policy.observation_space, spaces.Box):
        return None
    if type(policy.pi_features_extractor) is not FlattenExtractor:
        return None
    log_std = policy.log_std
    if log_std.dtype != th.float32 or log_std.device.type != "cpu" or has_grad_hooks(log_std):
        return None
    return MlpPlan.of(policy.mlp_extractor.policy_net, policy.action_net)


def critic_plan(policy: Any) -> MlpPlan | None:
    """:class:`crl.fast.mlp.MlpPlan` of the critic for :class:`HandCritic`, or ``None`` where it needs autograd."""
    if not isinstance(policy.observation_space, spaces.Box):
        return None
    if type(policy.vf_features_extractor) is not FlattenExtractor:
        return None
    return MlpPlan.of(*critic_modules(policy))


def choose_halves(
    policy: Any, rollout: Rollout, settings: Settings, worker: CriticWorker | None, hand: bool
) -> tuple[ActorHalf, CriticHalf]:
    """The strategies of an update's two halves (see the module docstring's tables): the
    critic worker ``worker`` if any, hand-written passes with ``hand`` where they apply,
    autograd otherwise. A worker starts its update here (:meth:`CriticWorker.begin`).
    """
    critic: CriticHalf
    if worker is not None:
        critic = WorkerCritic(worker, rollout, settings, hand)
    elif hand and (plan := critic_plan(policy)) is not None:
        critic = HandCritic(plan, rollout, settings)
    else:
        critic = AutogradCritic(policy, settings)
    actor: ActorHalf = AutogradActor(policy, settings)
    if hand and (plan := actor_plan(policy)) is not None:
        actor = HandActor(plan, policy, settings)
        rollout.column("pi_features")  # computed once, before the first epoch
    return actor, critic


# -- the update ------------------------------------------------------------------------------


class Update:
    """One PPO update: epochs of minibatches, each through the update's :class:`ActorHalf` and
    :class:`CriticHalf`, then gradient clipping and the optimizer step; keeps every
    minibatch's losses and log-ratios for :meth:`stats`.

    Args:
        policy: the SB3 policy.
        optimizer: its optimizer (stepped with :func:`crl.fast.adam.step`).
        rollout, settings: the update's data and options.
        halves: the strategies (:func:`choose_halves`).
        max_grad_norm: ``clip_grad_norm_``'s bound (``inf``: no clipping).
    """

    def __init__(
        self,
        policy: Any,
        optimizer: th.optim.Optimizer,
        rollout: Rollout,
        settings: Settings,
        halves: tuple[ActorHalf, CriticHalf],
        max_grad_norm: float,
    ) -> None:
        self.policy, self.optimizer, self.rollout, self.settings = policy, optimizer, rollout, settings
        self.actor, self.critic = halves
        own = type(optimizer).zero_grad is th.optim.Optimizer.zero_grad
        self._zero_grad: Callable[[], None] = (lambda: set_grads_to_none(optimizer)) if own else optimizer.zero_grad
        self.max_grad_norm = max_grad_norm
        self._clipped = list(policy.parameters()) if math.isfinite(max_grad_norm) else None
        self.losses: list[th.Tensor] = []  # per minibatch: policy, value and entropy losses
        self.log_ratios: list[th.Tensor] = []
        #: the strategies taken, ``(first minibatch, actor half, critic half)``: one entry, and
        #: one more at each fallback (see the module docstring)
        self.paths: list[tuple[int, str, str]] = [(0, self.actor.name, self.critic.name)]

    def epoch(self, idx: th.Tensor) -> None:
        """One pass over the rollout, its rows in the order ``idx``."""
        self.critic.start_epoch(idx)
        for mb in Epoch(self.rollout, idx, self.settings).minibatches(self.settings.batch_size):
            self.minibatch(mb)

    def fall_back(self) -> None:
        """Replace a half that no longer applies to the policy by its autograd strategy."""
        critic_ok, actor_ok = self.critic.applies(self.policy), self.actor.applies(self.policy)
        if critic_ok and actor_ok:
            return
        if not critic_ok:
            self.critic = AutogradCritic(self.policy, self.settings)
        if not actor_ok:
            self.actor = AutogradActor(self.policy, self.settings)
        self.paths.append((len(self.losses), self.actor.name, self.critic.name))

    def minibatch(self, mb: Minibatch) -> None:
        """One gradient step on ``mb``."""
        self.fall_back()
        self._zero_grad()
        self.critic.submit(mb)  # a worker computes the critic's half meanwhile
        actor = self.actor.run(mb, with_values=self.critic.joint)
        value_loss = self.critic.finish(mb, actor)
        if self._clipped is not None:
            th.nn.utils.clip_grad_norm_(self._clipped, self.max_grad_norm)
        optimizer_step(self.optimizer)
        self.losses.append(th.stack([actor.policy_loss.detach(), value_loss.detach(), actor.entropy_loss.detach()]))
        self.log_ratios.append(actor.log_ratio.detach())

    def stats(self) -> tuple[th.Tensor, th.Tensor]:
        """Rows of per-minibatch statistics (:func:`update_stats`, float64) and the last minibatch's total loss."""
        s, last = self.settings, self.losses[-1]
        loss = last[0] + s.ent_coef * last[2] + s.vf_coef * last[1]
        return update_stats(th.stack(self.losses), self.log_ratios, s.clip_range).double(), loss
