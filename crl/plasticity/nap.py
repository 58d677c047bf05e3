"""Normalize-and-Project (NaP; Lyle et al., NeurIPS 2024, "Normalization and effective learning
rates in reinforcement learning").

A LayerNorm before every hidden activation (``network.layer_norm: true``) makes each hidden layer
invariant to the scale of its incoming parameters, so growing weights silently shrink the
effective learning rate. NaP makes that rate constant again: after the optimizer's update, each
layer's parameters are projected back onto the sphere of their initial norm,
``theta_l <- theta_l * ||theta_l^0|| / ||theta_l||``. With the LayerNorm after it, projecting a
hidden ``Linear`` leaves the network's function unchanged (up to LayerNorm's eps): only the
effective step size changes. Projecting the LayerNorm gains and offsets and the heads does change
it: it bounds the scale of the features and of the outputs.

What crl projects, per :class:`~crl.plasticity.nets.MLPView` (PPO's policy and value nets, SAC's
actor and critics, a plain ``nn.Sequential``):

* each hidden ``Linear``'s weight and bias together (the group the LayerNorm after it is invariant
  to: rescaling the weight alone would not be, once the bias is not zero);
* each LayerNorm's gain and offset together (``norm_params``: the paper's joint projection of
  scale and offset for homogeneous activations such as ReLU);
* each output ``Linear``'s weight and bias together (``output``, as Plasticine projects every
  weight matrix; the heads are not scale-invariant, so this bounds the outputs' scale).

Plasticine (``plasticine/*_nap.py``) rescales weight matrices only, every 10 updates; crl projects
after every ``every``-th step of each optimizer (1: every step). Optimizer states are left as
they are. A hidden layer without a LayerNorm is refused: without it the projection changes what
the network computes.

Example:
    >>> net = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 1))
    >>> net.optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    >>> nap = NormalizeAndProject()
    >>> nap.attach(net)
    >>> before = [float(r) for r in nap.radii]
    >>> net(torch.randn(4, 3)).pow(2).mean().backward()
    >>> net.optimizer.step()  # the update, then the projection
    >>> [round(float(nap.group_norm(g)), 4) for g in nap.groups] == [round(r, 4) for r in before]
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from crl.errors import ConfigError, check_int
from crl.plasticity.base import Intervention, register_intervention
from crl.plasticity.nets import MLPView, find_mlps

__all__ = ["NormalizeAndProject", "projection_groups"]


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def projection_groups(view: MLPView, norm_params: bool = True, output: bool = True) -> list[list[nn.Parameter]]:
    """The parameter groups NaP keeps at their initial norm in ``view`` (see the module
    docstring); raises :class:`~crl.errors.ConfigError` for a hidden layer without LayerNorm.

    Example:
        >>> seq = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 1))
        >>> [len(g) for g in projection_groups(find_mlps(seq)[0])]
        [2, 2, 2]
    """
    groups: list[list[nn.Parameter]] = []
    for layer in view.layers:
        if layer.norm is None:
            raise ConfigError(
                f"nap: hidden layer {layer.path or layer.name} of {view.name} has no LayerNorm; "
                "NaP normalises before projecting: set network.layer_norm: true"
            )
        groups.append([p for p in (layer.inp.weight, layer.inp.bias) if p is not None])
        if norm_params and layer.norm.weight is not None:
            groups.append([p for p in (layer.norm.weight, layer.norm.bias) if p is not None])
    if output:
        groups += [[p for p in (lin.weight, lin.bias) if p is not None] for lin in view.output]
    return groups


@register_intervention
class NormalizeAndProject(Intervention):
    """Normalize-and-Project (Lyle et al. 2024): after every ``every``-th step of each optimizer,
    every parameter group (:func:`projection_groups`) is rescaled to the norm it had when the
    intervention was attached. A group of a batched network (:class:`~crl.plasticity.nets.BatchedLinear`)
    has one norm per network.

    Args:
        every: project after every ``every``-th optimizer step (1: after each update;
            Plasticine uses 10).
        norm_params: also project each LayerNorm's gain and offset jointly.
        output: also project the output layers (weight and bias).
    """

    name = "nap"

    def __init__(self, every: int = 1, norm_params: bool = True, output: bool = True) -> None:
        self.every = check_int("every", every, minimum=1)
        self.norm_params = _check_bool("norm_params", norm_params)
        self.output = _check_bool("output", output)
        self.groups: list[list[nn.Parameter]] = []
        self.radii: list[torch.Tensor] = []
        self.counts: list[int] = []
        self.projections = 0

    def _on_attach(self, model: Any) -> None:
        opt = getattr(model, "optimizer", None) if isinstance(model, nn.Module) else None
        self._owners: list[torch.optim.Optimizer | None] = []
        seen: set[int] = set()
        for view in find_mlps(model, opt):
            for group in projection_groups(view, self.norm_params, self.output):
                if id(group[0]) not in seen:
                    seen.add(id(group[0]))
                    self.groups.append(group)
                    self._owners.append(view.optimizer)
        with torch.no_grad():
            self.radii = [self.group_norm(g) for g in self.groups]
        self.optimizers: list[torch.optim.Optimizer] = []
        for o in self._owners:
            if o is not None and all(o is not k for k in self.optimizers):
                self.optimizers.append(o)
                o.register_step_post_hook(self._post_step)
        self.counts = [0] * len(self.optimizers)

    @staticmethod
    def group_norm(group: list[nn.Parameter]) -> torch.Tensor:
        """The L2 norm of a group's parameters together (one per network if batched)."""
        batched = getattr(group[0], "_crl_batched", False)
        sq = [p.detach().double().pow(2) for p in group]
        if batched:
            return torch.stack([s.flatten(1).sum(1) for s in sq]).sum(0).sqrt()
        return torch.stack([s.sum() for s in sq]).sum().sqrt()

    def project(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Rescale every group (of ``optimizer`` only, if given) to its initial norm."""
        with torch.no_grad():
            for group, radius, owner in zip(self.groups, self.radii, self._owners, strict=True):
                if optimizer is not None and owner is not optimizer:
                    continue
                scale = radius / self.group_norm(group).clamp(min=1e-12)
                for p in group:
                    s = scale.view(-1, *[1] * (p.dim() - 1)) if scale.dim() else scale
                    p.mul_(s.to(p.dtype))
        self.projections += 1

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        i = next(k for k, o in enumerate(self.optimizers) if o is optimizer)
        self.counts[i] += 1
        if self.counts[i] % self.every == 0:
            self.project(optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {"radii": [r.clone() for r in self.radii], "counts": list(self.counts), "projections": self.projections}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["radii"]) != len(self.groups):
            raise ValueError(f"nap: the checkpoint has {len(state['radii'])} groups, this network {len(self.groups)}")
        self.radii = [r.clone() for r in state["radii"]]
        self.counts = [int(c) for c in state["counts"]]
        self.projections = int(state["projections"])
