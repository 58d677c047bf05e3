"""SB3's diagonal-Gaussian policy terms, op for op, without building distribution objects.

SB3's ``ActorCriticPolicy`` with a ``DiagGaussianDistribution`` computes its actions'
log-probabilities and entropies through ``torch.distributions.Normal``, which builds and
argument-checks a distribution object at every rollout step and minibatch. These functions run
the same torch operations on the same tensors (so the same numbers, and the same draw from
torch's generator when acting) without the objects; :func:`hand_actor_step` computes PPO's
clipped policy loss and its gradients by hand on a :class:`crl.fast.mlp.MlpPlan` of the actor.

Example:
    >>> mean, std = th.zeros(2, 1), th.ones(2, 1)
    >>> log_prob, log_scale = gaussian_log_prob(mean, std, th.zeros(2, 1))
    >>> bool(th.allclose(log_prob, th.distributions.Normal(mean, std).log_prob(th.zeros(2, 1)).sum(1)))
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch as th
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy

from crl.fast.mlp import MlpPlan, accumulate_grad

__all__ = [
    "ENTROPY_CONST",
    "LOG_SQRT_2PI",
    "actor_mean",
    "critic_values",
    "gaussian_act",
    "gaussian_log_prob",
    "gaussian_std",
    "gaussian_terms",
    "hand_actor_step",
    "latents",
    "plain_gaussian",
]

#: ``log(sqrt(2 pi))``, the constant of a Normal's log-density.
LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))
#: A Normal's entropy less ``log(std)``.
ENTROPY_CONST = 0.5 + 0.5 * math.log(2 * math.pi)


def plain_gaussian(policy: Any) -> bool:
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


def latents(policy: Any, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """The actor's and critic's latents of ``obs``, as ``ActorCriticPolicy.forward`` and
    ``evaluate_actions`` compute them (a shared features extractor runs once).
    """
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        return policy.mlp_extractor(features)
    return policy.mlp_extractor.forward_actor(features[0]), policy.mlp_extractor.forward_critic(features[1])


def gaussian_std(policy: Any, mean: th.Tensor) -> th.Tensor:
    """The standard deviation of SB3's ``DiagGaussianDistribution`` for the mean actions
    ``mean``: ``exp(log_std)`` spread over ``mean``'s shape, op for op as SB3 computes it.
    """
    return th.ones_like(mean) * policy.log_std.exp()


def gaussian_log_prob(mean: th.Tensor, std: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """``Normal(mean, std).log_prob(actions)`` summed over action dimensions, op for op as
    torch computes it, and ``log(std)``.
    """
    log_scale = std.log()
    return (-((actions - mean) ** 2) / (2 * std**2) - log_scale - LOG_SQRT_2PI).sum(dim=1), log_scale


def gaussian_terms(
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
        latent_pi, latent_vf = latents(policy, obs)
        values = policy.value_net(latent_vf)
    else:
        latent_pi = policy.mlp_extractor.forward_actor(
            BasePolicy.extract_features(policy, obs, policy.pi_features_extractor)
        )
    mean = policy.action_net(latent_pi)
    log_prob, log_scale = gaussian_log_prob(mean, gaussian_std(policy, mean), actions)
    with th.set_grad_enabled(entropy_grad and th.is_grad_enabled()):
        entropy = (ENTROPY_CONST + log_scale).sum(dim=1)
    return values, log_prob, entropy


def gaussian_act(policy: Any, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``policy(obs)`` (actions, values, log-probabilities) with the same torch operations, and
    the same draw from torch's generator, as SB3's ``ActorCriticPolicy.forward`` with a
    ``DiagGaussianDistribution``, without building the distribution objects at every step.
    """
    latent_pi, latent_vf = latents(policy, obs)
    values = policy.value_net(latent_vf)
    mean = policy.action_net(latent_pi)
    std = gaussian_std(policy, mean)
    actions = th.normal(mean, std)  # torch.distributions.Normal.sample's draw
    log_prob, _ = gaussian_log_prob(mean, std, actions)
    return actions.reshape((-1, *policy.action_space.shape)), values, log_prob


def actor_mean(policy: Any, obs: th.Tensor) -> th.Tensor:
    """The Gaussian policy's mean action, with the operations of the actor's half of
    ``ActorCriticPolicy.forward`` (for an ``MlpExtractor`` or crl's ``ArchMlpExtractor``, whose
    ``forward`` is ``forward_actor`` and ``forward_critic`` side by side).
    """
    features = BasePolicy.extract_features(policy, obs, policy.pi_features_extractor)
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


def critic_values(policy: Any, obs: th.Tensor) -> th.Tensor:
    """The values of ``obs``, flat, with the operations of the critic's half of ``ActorCriticPolicy.forward``."""
    features = BasePolicy.extract_features(policy, obs, policy.vf_features_extractor)
    return policy.value_net(policy.mlp_extractor.forward_critic(features)).flatten()


def hand_actor_step(
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
    all by hand: the same math as :func:`gaussian_terms` and ``backward()`` (up to float
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
        log_ratio = (-sq / (2 * var) - log_scale - LOG_SQRT_2PI).sum(dim=1) - old_log_prob  # as SB3
        ratio = log_ratio.exp()
        clipped = ratio.clamp(1 - clip_range, 1 + clip_range)
        surr1 = advantages * ratio
        surr2 = advantages * clipped
        policy_loss = -th.minimum(surr1, surr2).mean()
        entropy_loss = -(ENTROPY_CONST + log_scale).sum()  # the same entropy on every row
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
