"""Views of MLPs (Linear + activation) inside SB3 models and plain ``nn.Sequential``.

An intervention never needs to know whether it acts on PPO's policy, SAC's critics or the
supervised probe: it gets :class:`MLPView` objects, each a chain of :class:`HiddenLayer`
(incoming ``nn.Linear``, the activation module after it, the outgoing ``nn.Linear`` s
that read its units) and the optimizer that updates it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["BatchedLinear", "CReLU", "HiddenLayer", "MLPView", "find_mlps", "init_rows", "INIT_FNS"]


class CReLU(nn.Module):
    """Concatenated ReLU (Abbas et al. 2023): ``[relu(x), relu(-x)]`` (width x 2).

    Example:
        >>> CReLU()(torch.tensor([[1.0, -2.0]]))
        tensor([[1., 0., 0., 2.]])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(x), torch.relu(-x)], dim=-1)


class BatchedLinear(nn.Linear):
    """``n_nets`` independent linear layers in one module: weight ``(n_nets, out, in)``, input
    ``(n_nets, batch, in)``. Many seeds of a small network then train in one set of tensor
    operations (the supervised probe), and the interventions treat each network on its own:
    its parameters carry ``_crl_batched = True`` (see :class:`crl.plasticity.upgd.UPGD`).

    Example:
        >>> layer = BatchedLinear(3, 4, 2)
        >>> layer(torch.ones(3, 5, 4)).shape, layer.weight.shape
        (torch.Size([3, 5, 2]), torch.Size([3, 2, 4]))
    """

    def __init__(self, n_nets: int, in_features: int, out_features: int, bias: bool = True) -> None:
        nn.Module.__init__(self)
        self.n_nets, self.in_features, self.out_features = n_nets, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n_nets, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(n_nets, out_features)) if bias else None
        for p in self.parameters():
            p._crl_batched = True  # type: ignore[attr-defined]
        bound = 1.0 / math.sqrt(in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.bmm(x, self.weight.transpose(1, 2))
        return out if self.bias is None else out + self.bias.unsqueeze(1)


_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, CReLU)
_NON_NEGATIVE = (nn.ReLU, nn.Sigmoid, CReLU)


def _lecun_uniform_rows(w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    bound = math.sqrt(3.0 / w.shape[-1])
    return (torch.rand(w.shape, generator=gen) * 2 - 1) * bound


def _kaiming_uniform_rows(w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    bound = math.sqrt(6.0 / w.shape[-1])  # gain sqrt(2) for ReLU: sqrt(3) * sqrt(2) / sqrt(fan_in)
    return (torch.rand(w.shape, generator=gen) * 2 - 1) * bound


def _torch_default_rows(w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    bound = 1.0 / math.sqrt(w.shape[-1])  # nn.Linear's default kaiming_uniform(a=sqrt(5))
    return (torch.rand(w.shape, generator=gen) * 2 - 1) * bound


#: How to redraw incoming weights of re-initialised units, by init name.
INIT_FNS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "lecun_uniform": _lecun_uniform_rows,
    "kaiming_uniform": _kaiming_uniform_rows,
    "torch_default": _torch_default_rows,
}


def init_rows(weight: torch.Tensor, rows: torch.Tensor, init: str, gen: torch.Generator) -> None:
    """Redraw ``weight[rows]`` from the init distribution ``init`` (in place)."""
    if rows.numel() == 0:
        return
    fresh = INIT_FNS[init](weight[rows], gen).to(weight.dtype)
    weight.data[rows] = fresh


@dataclass
class HiddenLayer:
    """One hidden layer: ``act(inp(x))``, read by ``outs``."""

    inp: nn.Linear
    act: nn.Module
    outs: list[nn.Linear]
    name: str
    features: torch.Tensor | None = None
    """Post-activation features of the last training-mode forward pass (batch x outputs)."""
    norm: nn.LayerNorm | None = None
    """A LayerNorm between ``inp`` and ``act``, if any."""

    @property
    def width(self) -> int:
        return self.inp.out_features

    @property
    def batched(self) -> bool:
        """Whether the layer holds independent networks along dim 0 (:class:`BatchedLinear`)."""
        return self.inp.weight.dim() == 3

    @property
    def doubled(self) -> bool:
        """Whether the activation doubles the width (CReLU): unit i feeds outputs i and i + width."""
        return isinstance(self.act, CReLU)

    def unit_activity(self, h: torch.Tensor) -> torch.Tensor:
        """|features| per unit (batch x units, or nets x batch x units); CReLU's halves added.
        Activations whose outputs are never negative (ReLU, CReLU, sigmoid) skip the ``abs``:
        the same numbers, one pass over the features less.
        """
        a = h if self.batched else h.reshape(-1, h.shape[-1])
        if not isinstance(self.act, _NON_NEGATIVE):
            a = a.abs()
        return a[..., : self.width] + a[..., self.width :] if self.doubled else a

    def out_columns(self, idx: torch.Tensor) -> torch.Tensor:
        """Columns of the outgoing weights that read units ``idx``."""
        return torch.cat([idx, idx + self.width]) if self.doubled else idx

    def outgoing_magnitude(self) -> torch.Tensor:
        """mean_k |W_out[k, i]| per unit (over every outgoing layer; CReLU halves averaged)."""
        if len(self.outs) == 1:
            w = self.outs[0].weight.detach().abs().mean(-2)  # per net if batched
        else:
            w = torch.cat([o.weight.detach().abs() for o in self.outs], -2).mean(-2)
        return (w[..., : self.width] + w[..., self.width :]) / 2 if self.doubled else w


@dataclass
class MLPView:
    """A chain of hidden layers and the optimizer that updates them."""

    name: str
    layers: list[HiddenLayer]
    optimizer: torch.optim.Optimizer | None
    output: list[nn.Linear] = field(default_factory=list)
    targets: list[nn.Module] = field(default_factory=list)
    """Target copies kept consistent after surgery (SAC's ``critic_target``)."""
    module: nn.Module | None = None
    """The module holding the chain (what a target copies)."""

    def parameters(self) -> list[nn.Parameter]:
        ps: list[nn.Parameter] = []
        for layer in self.layers:
            ps += list(layer.inp.parameters())
        for out in self.output:
            ps += list(out.parameters())
        return ps


def _chain(name: str, seq: nn.Module, heads: list[nn.Linear], optimizer: Any) -> MLPView:
    layers: list[HiddenLayer] = []
    current: nn.Linear | None = None  # a Linear not yet followed by an activation
    norm: nn.LayerNorm | None = None
    output: list[nn.Linear] = []
    for m in seq.modules():
        if isinstance(m, nn.Linear):
            if layers and not layers[-1].outs:
                layers[-1].outs.append(m)
            current, norm = m, None
        elif isinstance(m, nn.LayerNorm) and current is not None:
            norm = m
        elif isinstance(m, _ACTIVATIONS) and current is not None:
            layers.append(HiddenLayer(inp=current, act=m, outs=[], name=str(len(layers)), norm=norm))
            current = None
    if current is not None:  # the sequence ends with its output Linear
        output = [current, *heads]
    if layers and not layers[-1].outs:
        layers[-1].outs.extend(heads)
    if current is None:
        output = list(heads)
    return MLPView(name=name, layers=layers, optimizer=optimizer, output=output, module=seq)


def find_mlps(model: Any, optimizer: torch.optim.Optimizer | None = None) -> list[MLPView]:
    """The MLPs of an SB3 PPO/A2C/SAC model, or of an ``nn.Sequential`` (whose optimizer is
    ``optimizer`` or its ``.optimizer`` attribute).

    Example:
        >>> seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> (view,) = find_mlps(seq, torch.optim.SGD(seq.parameters(), lr=0.1))
        >>> [layer.width for layer in view.layers], view.layers[0].outs[0] is seq[2]
        ([4, 4], True)
    """
    if isinstance(model, nn.Sequential):
        return [_chain("net", model, [], optimizer or getattr(model, "optimizer", None))]
    policy = getattr(model, "policy", model)
    views = []
    if hasattr(policy, "mlp_extractor"):  # PPO / A2C
        ext = policy.mlp_extractor
        views.append(_chain("pi", ext.policy_net, [policy.action_net], policy.optimizer))
        views.append(_chain("vf", ext.value_net, [policy.value_net], policy.optimizer))
    elif hasattr(policy, "actor") and hasattr(policy, "critic"):  # SAC / TD3
        actor = policy.actor
        heads = [h for h in (getattr(actor, "mu", None), getattr(actor, "log_std", None)) if isinstance(h, nn.Linear)]
        views.append(_chain("actor", actor.latent_pi, heads, actor.optimizer))
        for i, q in enumerate(policy.critic.q_networks):
            v = _chain(f"qf{i}", q, [], policy.critic.optimizer)
            target = getattr(policy, "critic_target", None)
            if target is not None:
                v.targets.append(target.q_networks[i])
            views.append(v)
    else:
        raise TypeError(f"no MLP found in {type(model).__name__}")
    return views


def capture_features(views: list[MLPView]) -> list[Any]:
    """Register forward hooks storing each hidden layer's post-activation features during
    training-mode forward passes (rollouts run in eval mode and are not recorded).
    """
    handles = []
    for view in views:
        for layer in view.layers:

            def hook(module: nn.Module, args: Any, out: torch.Tensor, layer: HiddenLayer = layer) -> None:
                if module.training and torch.is_grad_enabled():
                    layer.features = out.detach()

            hook._crl_features = True  # type: ignore[attr-defined]  # crl.critic_worker replays these
            handles.append(layer.act.register_forward_hook(hook))
    return handles
