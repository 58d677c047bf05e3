"""SB3 policy subclasses for architecture options SB3's MlpPolicy lacks: LayerNorm after
every hidden Linear, CReLU activations (Abbas et al. 2023), which double the width
seen by the next layer, and dropout after every hidden activation (Srivastava et al. 2014).
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
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from crl.plasticity.nets import CReLU

__all__ = ["CReLU", "ArchMlpExtractor", "ArchActorCriticPolicy"]


class ArchMlpExtractor(nn.Module):
    """SB3's ``MlpExtractor`` with optional LayerNorm, CReLU and dropout (same attributes)."""

    def __init__(
        self,
        feature_dim: int,
        net_arch: dict[str, list[int]],
        activation_fn: type[nn.Module],
        layer_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        crelu = activation_fn is CReLU

        def build(sizes: list[int]) -> tuple[nn.Sequential, int]:
            layers: list[nn.Module] = []
            last = feature_dim
            for size in sizes:
                layers.append(nn.Linear(last, size))
                if layer_norm:
                    layers.append(nn.LayerNorm(size))
                layers.append(activation_fn())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
                last = 2 * size if crelu else size
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
    """``MlpPolicy`` whose hidden layers may carry LayerNorm, CReLU and dropout (probability
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
