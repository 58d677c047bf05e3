"""SB3 policy subclasses for architecture options SB3's MlpPolicy lacks: LayerNorm after
every hidden Linear, and CReLU activations (Abbas et al. 2023), which double the width
seen by the next layer. Only ``_build_mlp_extractor`` is overridden: no fork of SB3.
"""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from crl.plasticity.nets import CReLU

__all__ = ["CReLU", "ArchMlpExtractor", "ArchActorCriticPolicy"]


class ArchMlpExtractor(nn.Module):
    """SB3's ``MlpExtractor`` with optional LayerNorm and CReLU (same attributes)."""

    def __init__(
        self, feature_dim: int, net_arch: dict[str, list[int]], activation_fn: type[nn.Module], layer_norm: bool = False
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
    """``MlpPolicy`` whose hidden layers may carry LayerNorm and CReLU."""

    def __init__(self, *args: Any, layer_norm: bool = False, **kwargs: Any) -> None:
        self.layer_norm = layer_norm
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        arch = self.net_arch if isinstance(self.net_arch, dict) else {"pi": self.net_arch, "vf": self.net_arch}
        self.mlp_extractor = ArchMlpExtractor(
            self.features_dim, arch, self.activation_fn, layer_norm=self.layer_norm
        ).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "layer_norm": self.layer_norm}
