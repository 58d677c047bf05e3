"""SB3 policy subclasses for architecture options SB3's MlpPolicy lacks: LayerNorm after
every hidden Linear, CReLU activations (Abbas et al. 2023) and deep Fourier features
(Lewandowski et al. 2025), which double the width seen by the next layer, and dropout after
every hidden activation (Srivastava et al. 2014).
Only ``_build_mlp_extractor`` is overridden: no fork of SB3.

A hidden layer is ``Linear [-> LayerNorm] -> activation [-> Dropout]``. Dropout follows SB3's
training mode: :meth:`~stable_baselines3.common.policies.BasePolicy.set_training_mode` is off
while PPO collects rollouts and while crl evaluates (no dropout: the full network acts, and the
rollout's log-probabilities and values are dropout-free), and on during the update (fresh masks
at every forward pass). PPO's ratio ``pi_new(a|s) / pi_old(a|s)`` therefore compares a dropped-out
network with the full one: it differs from 1 even before the first gradient step, and the clip
range also bounds that noise. This is SB3's behaviour, kept as it is (no "consistent dropout",
Hausknecht & Wagener 2022, which would reuse the rollout's masks).

Example:
    >>> ext = ArchMlpExtractor(3, {"pi": [8], "vf": [8]}, nn.ReLU, dropout=0.5)
    >>> [type(m).__name__ for m in ext.policy_net]
    ['Linear', 'ReLU', 'Dropout']
"""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3.common.policies import ActorCriticPolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.sac.policies import Actor, SACPolicy
from torch import nn

from crl.plasticity.nets import DOUBLING, CReLU

__all__ = ["CReLU", "ArchMlpExtractor", "ArchActorCriticPolicy", "ArchSACPolicy", "hidden_stack"]


def hidden_stack(
    in_dim: int, sizes: list[int], activation_fn: type[nn.Module], layer_norm: bool = False, dropout: float = 0.0
) -> tuple[list[nn.Module], int]:
    """The hidden layers ``Linear [-> LayerNorm] -> activation [-> Dropout]`` for ``sizes``, and
    the width the next layer reads (twice the last size after CReLU or DFF).

    Example:
        >>> from crl.plasticity.nets import DFF
        >>> layers, last = hidden_stack(3, [8], DFF, layer_norm=True)
        >>> [type(m).__name__ for m in layers], last
        (['Linear', 'LayerNorm', 'DFF'], 16)
    """
    doubling = issubclass(activation_fn, DOUBLING)  # CReLU, DFF: the next layer reads 2 x size
    layers: list[nn.Module] = []
    last = in_dim
    for size in sizes:
        layers.append(nn.Linear(last, size))
        if layer_norm:
            layers.append(nn.LayerNorm(size))
        layers.append(activation_fn())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        last = 2 * size if doubling else size
    return layers, last


class ArchMlpExtractor(nn.Module):
    """SB3's ``MlpExtractor`` with optional LayerNorm, CReLU or DFF, and dropout (same attributes)."""

    def __init__(
        self,
        feature_dim: int,
        net_arch: dict[str, list[int]],
        activation_fn: type[nn.Module],
        layer_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()

        def build(sizes: list[int]) -> tuple[nn.Sequential, int]:
            layers, last = hidden_stack(feature_dim, sizes, activation_fn, layer_norm, dropout)
            return nn.Sequential(*layers), last

        self.policy_net, self.latent_dim_pi = build(list(net_arch.get("pi", [])))
        self.value_net, self.latent_dim_vf = build(list(net_arch.get("vf", [])))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy_net(features), self.value_net(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.policy_net(features)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_net(features)


class ArchActorCriticPolicy(ActorCriticPolicy):
    """``MlpPolicy`` whose hidden layers may carry LayerNorm, CReLU or DFF, and dropout (probability
    ``dropout`` after every hidden activation; see the module docstring for when it acts).
    """

    def __init__(self, *args: Any, layer_norm: bool = False, dropout: float = 0.0, **kwargs: Any) -> None:
        self.layer_norm = layer_norm
        self.dropout = dropout
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        arch = self.net_arch if isinstance(self.net_arch, dict) else {"pi": self.net_arch, "vf": self.net_arch}
        self.mlp_extractor = ArchMlpExtractor(
            self.features_dim, arch, self.activation_fn, layer_norm=self.layer_norm, dropout=self.dropout
        ).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "layer_norm": self.layer_norm, "dropout": self.dropout}


class ArchSACPolicy(SACPolicy):
    """SAC's ``MlpPolicy`` whose actor and critics' hidden layers may carry LayerNorm (before the
    activation) and CReLU or DFF (which double the width the next layer reads). SB3 builds its
    networks; :meth:`make_actor` and :meth:`make_critic` then replace the actor's ``latent_pi``,
    ``mu`` and ``log_std`` and each critic's ``qf<i>`` (same attribute names, so SB3's SAC,
    saving and loading work unchanged). gSDE (``use_sde``) is not supported.

    Example:
        >>> import gymnasium as gym
        >>> from stable_baselines3 import SAC
        >>> from crl.plasticity.nets import DFF
        >>> kw = {"net_arch": [8], "activation_fn": DFF, "layer_norm": True}
        >>> model = SAC(ArchSACPolicy, gym.make("Pendulum-v1"), policy_kwargs=kw, buffer_size=10)
        >>> [type(m).__name__ for m in model.critic.qf0], model.actor.mu.in_features
        (['Linear', 'LayerNorm', 'DFF', 'Linear'], 16)
    """

    def __init__(self, *args: Any, layer_norm: bool = False, **kwargs: Any) -> None:
        self.layer_norm = layer_norm
        if kwargs.get("use_sde"):
            raise ValueError("ArchSACPolicy does not support gSDE (use_sde)")
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: Any = None) -> Actor:
        actor = super().make_actor(features_extractor)
        layers, last = hidden_stack(
            actor.features_dim, list(actor.net_arch), actor.activation_fn, layer_norm=self.layer_norm
        )
        action_dim = get_action_dim(self.action_space)
        actor.latent_pi = nn.Sequential(*layers)
        actor.mu = nn.Linear(last, action_dim)
        actor.log_std = nn.Linear(last, action_dim)
        return actor.to(self.device)

    def make_critic(self, features_extractor: Any = None) -> ContinuousCritic:
        critic = super().make_critic(features_extractor)
        kw = self.critic_kwargs
        in_dim = critic.q_networks[0][0].in_features  # features + actions
        for idx in range(len(critic.q_networks)):
            layers, last = hidden_stack(in_dim, list(kw["net_arch"]), kw["activation_fn"], layer_norm=self.layer_norm)
            q_net = nn.Sequential(*layers, nn.Linear(last, 1))
            critic.add_module(f"qf{idx}", q_net)
            critic.q_networks[idx] = q_net
        return critic.to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "layer_norm": self.layer_norm}
