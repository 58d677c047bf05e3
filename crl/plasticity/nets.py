"""The one MLP walker: which modules are activations, and how ``Linear`` [+ ``LayerNorm``] +
activation modules form the hidden layers of an MLP inside SB3 models and plain ``nn.Sequential``.

Everything in crl that looks at hidden layers walks them here: the interventions
(:mod:`crl.plasticity.units`, :mod:`crl.plasticity.regularisers`, :mod:`crl.plasticity.forgetting`),
the diagnostics (:mod:`crl.diagnostics`), the agents' activation names and the fast path's
hand-written passes.

* :data:`ACTIVATIONS`: activation modules by name (what ``network.activation`` of an agent
  names); :func:`is_activation` and :func:`activation_name` read it.
* :func:`hidden_layers`: the :class:`HiddenLayer` s of one module, in registration order: each
  ``Linear`` followed (after an optional ``LayerNorm``) by an activation. The layer's features
  are the activation's output; :class:`CReLU` and :class:`DFF` double their width (unit ``i``
  feeds outputs ``i`` and ``i + width``). Other modules (``Dropout``
  after the activation, ``network.dropout``) are walked through: the next ``Linear`` reads the
  layer's units at the same indices, and the features are taken before the dropout.
* :func:`find_mlps`: the :class:`MLPView` s of an SB3 model (PPO's policy and value nets, SAC's
  and TD3's actor and critics; never the target nets, which follow their online nets) or an
  ``nn.Sequential``. TD3's actor ends its ``mu`` with a ``Tanh`` that squashes the action: it
  is the output's, not a hidden layer's (:func:`mark_output_squash`). An intervention never needs to know whether it
  acts on PPO's policy, SAC's critics or the supervised probe: it gets views, each a chain of
  hidden layers (incoming ``nn.Linear``, the activation module after it, the outgoing
  ``nn.Linear`` s that read its units) and the optimizer that updates it.

Example:
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), CReLU(), nn.Linear(8, 1))
    >>> [(layer.path, layer.width, activation_name(layer.act), layer.doubled) for layer in hidden_layers(net)]
    [('0', 4, 'crelu', True)]
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.1), nn.Linear(4, 1))
    >>> [(layer.path, layer.outs == [net[3]]) for layer in hidden_layers(net)]
    [('0', True)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "BatchedLinear",
    "CReLU",
    "DFF",
    "DOUBLING",
    "HiddenLayer",
    "INIT_FNS",
    "MLPView",
    "PARALLEL_HEADS",
    "activation_name",
    "capture_features",
    "find_mlps",
    "hidden_layers",
    "init_rows",
    "is_activation",
    "linears",
    "mark_lateral",
    "mark_output_squash",
]


class CReLU(nn.Module):
    """Concatenated ReLU (Abbas et al. 2023): ``[relu(x), relu(-x)]`` (width x 2).

    Example:
        >>> CReLU()(torch.tensor([[1.0, -2.0]]))
        tensor([[1., 0., 0., 2.]])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(x), torch.relu(-x)], dim=-1)


class DFF(nn.Module):
    """Deep Fourier features (Lewandowski et al., ICLR 2025, "Plastic learning with deep Fourier
    features"): ``[sin(x), cos(x)]`` of every pre-activation ``x`` (width x 2), so each unit is
    always near a linear regime of one of its two outputs and never saturates or goes dormant.

    Example:
        >>> DFF()(torch.tensor([[0.0, 1.0]]))  # [sin 0, sin 1, cos 0, cos 1]
        tensor([[0.0000, 0.8415, 1.0000, 0.5403]])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


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


#: Activation modules by name: the names an agent's ``network.activation`` may take, and
#: every module class the walker treats as an activation. Add an entry to make a new
#: activation known to the agents, the interventions and the diagnostics at once.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "mish": nn.Mish,
    "crelu": CReLU,
    "dff": DFF,
}

#: Activations that double the width: unit ``i`` of the Linear before feeds outputs ``i`` and
#: ``i + width`` (the next Linear reads ``2 * width`` columns).
DOUBLING: tuple[type[nn.Module], ...] = (CReLU, DFF)

#: Activations whose outputs are never negative (the ``abs`` of their features is a no-op).
_NON_NEGATIVE = ("relu", "sigmoid", "softplus", "crelu")


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an activation: an instance of a class in :data:`ACTIVATIONS`
    (subclasses included).

    Example:
        >>> is_activation(nn.ReLU()), is_activation(CReLU()), is_activation(nn.LayerNorm(3))
        (True, True, False)
    """
    return isinstance(module, tuple(ACTIVATIONS.values()))


def activation_name(module: nn.Module) -> str | None:
    """The :data:`ACTIVATIONS` name of ``module``'s exact class, or ``None``.

    A subclass has no name (it may compute something else): code that computes an activation
    by its name (the fast path's hand-written passes) must leave it alone.

    Example:
        >>> activation_name(nn.Tanh()), activation_name(CReLU()), activation_name(nn.Linear(1, 1))
        ('tanh', 'crelu', None)
        >>> class MyReLU(nn.ReLU): ...
        >>> activation_name(MyReLU()), is_activation(MyReLU())
        (None, True)
    """
    return next((name for name, cls in ACTIVATIONS.items() if type(module) is cls), None)


def _never_negative(module: nn.Module) -> bool:
    return any(isinstance(module, ACTIVATIONS[name]) for name in _NON_NEGATIVE)


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
    """One hidden layer: ``act(norm(inp(x)))``, read by ``outs``.

    Its features (what :func:`capture_features` and the diagnostics record) are the
    activation's output: ``width`` columns, ``2 * width`` for :class:`CReLU` and :class:`DFF`.
    """

    inp: nn.Linear
    act: nn.Module
    outs: list[nn.Linear]
    name: str
    features: torch.Tensor | None = None
    """Post-activation features of the last training-mode forward pass (batch x outputs)."""
    norm: nn.LayerNorm | None = None
    """A LayerNorm between ``inp`` and ``act``, if any."""
    path: str = ""
    """The name of ``inp`` in the module walked (``named_modules``), e.g. ``"latent_pi.0"``."""

    @property
    def width(self) -> int:
        """The number of units (rows of ``inp``)."""
        return self.inp.out_features

    @property
    def batched(self) -> bool:
        """Whether the layer holds independent networks along dim 0 (:class:`BatchedLinear`)."""
        return self.inp.weight.dim() == 3

    @property
    def doubled(self) -> bool:
        """Whether the activation doubles the width (CReLU, DFF): unit i feeds outputs i and i + width."""
        return isinstance(self.act, DOUBLING)

    def units(self, h: Any) -> Any:
        """Features per unit (``... x units``): ``h`` itself, or the absolute values of a doubling
        activation's two halves added: ``relu(x) + relu(-x) = |x|`` for CReLU (a unit inactive
        only where ``x = 0``), ``|sin x| + |cos x|`` (between 1 and sqrt 2: never inactive) for
        DFF. Works on torch tensors and numpy arrays.

        Example:
            >>> (layer,) = hidden_layers(nn.Sequential(nn.Linear(1, 2), CReLU()))
            >>> layer.units(torch.tensor([[1.0, 0.0, 0.0, 3.0]]))
            tensor([[1., 3.]])
            >>> (layer,) = hidden_layers(nn.Sequential(nn.Linear(1, 2), DFF()))
            >>> layer.units(torch.tensor([[0.0, -0.6, -1.0, 0.8]]))
            tensor([[1.0000, 1.4000]])
        """
        if not self.doubled:
            return h
        lo, hi = h[..., : self.width], h[..., self.width :]
        return lo + hi if isinstance(self.act, CReLU) else abs(lo) + abs(hi)

    def unit_activity(self, h: torch.Tensor) -> torch.Tensor:
        """|features| per unit (batch x units, or nets x batch x units); the halves of a doubling
        activation (CReLU, DFF) added.
        Activations whose outputs are never negative (ReLU, CReLU, sigmoid) skip the ``abs``:
        the same numbers, one pass over the features less.
        """
        a = h if self.batched else h.reshape(-1, h.shape[-1])
        if not _never_negative(self.act):
            a = a.abs()
        return self.units(a)

    def out_columns(self, idx: torch.Tensor) -> torch.Tensor:
        """Columns of the outgoing weights that read units ``idx``."""
        return torch.cat([idx, idx + self.width]) if self.doubled else idx

    def outgoing_magnitude(self) -> torch.Tensor:
        """mean_k |W_out[k, i]| per unit (over every outgoing layer; a doubling activation's halves averaged)."""
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


#: The attribute :func:`mark_output_squash` sets on an output's squashing activation.
OUTPUT_SQUASH = "crl_output_squash"


def mark_output_squash(net: nn.Module) -> None:
    """Mark the activation that ends the ``mu`` of every SB3 TD3 ``Actor`` inside ``net``
    (``mu = Sequential(..., Linear, Tanh)``: the Tanh squashes the action into [-1, 1]) as the
    output's, so the walker does not take the action head for a hidden layer. SAC's ``mu`` is a
    plain ``Linear`` (its squashing is in the distribution) and is left alone.

    Example:
        >>> actor = nn.Module()
        >>> actor.mu = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1), nn.Tanh())
        >>> [layer.path for layer in hidden_layers(actor)]  # walking marks it
        ['mu.0']
        >>> [layer.path for layer in hidden_layers(actor.mu)], _walk(actor.mu)[1] == [actor.mu[2]]
        (['0'], True)
    """
    for m in net.modules():
        mu = getattr(m, "mu", None)
        if isinstance(mu, nn.Sequential) and len(mu) >= 2 and isinstance(mu[-2], nn.Linear) and is_activation(mu[-1]):
            setattr(mu[-1], OUTPUT_SQUASH, True)


#: The attribute :func:`mark_lateral` sets on the modules of a lateral connection.
LATERAL = "crl_lateral"


def mark_lateral(module: nn.Module) -> None:
    """Mark every module inside ``module`` as part of a lateral connection between the columns of
    a progressive network (:mod:`crl.plasticity.progressive`): the walker leaves them out, so a
    column's hidden layers are its own ``Linear`` + activation pairs.

    Example:
        >>> adapter = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> mark_lateral(adapter)
        >>> hidden_layers(nn.Sequential(nn.Linear(3, 2), nn.ReLU(), adapter))[0].outs
        []
    """
    for m in module.modules():
        setattr(m, LATERAL, True)


#: The attribute of a module whose ``Linear`` s are parallel output heads that all read the
#: same features (one head per task: :class:`crl.plasticity.multihead.TaskHeads`).
PARALLEL_HEADS = "crl_parallel_heads"


def linears(module: nn.Module) -> list[nn.Linear]:
    """The output ``Linear`` s that ``module`` stands for: itself if it is one, every head of a
    module marked with :data:`PARALLEL_HEADS`, none otherwise.

    Example:
        >>> heads = nn.ModuleList([nn.Linear(4, 1), nn.Linear(4, 1)])
        >>> setattr(heads, PARALLEL_HEADS, True)
        >>> len(linears(heads)), len(linears(nn.Linear(2, 2))), linears(nn.ReLU())
        (2, 1, [])
    """
    if isinstance(module, nn.Linear):
        return [module]
    if getattr(module, PARALLEL_HEADS, False):
        return [m for m in module.modules() if isinstance(m, nn.Linear)]
    return []


def _walk(net: nn.Module) -> tuple[list[HiddenLayer], list[nn.Linear]]:
    """The hidden layers of ``net`` and the ``Linear`` s after the last of them (one, or the
    parallel heads of a :data:`PARALLEL_HEADS` module), if any.
    """
    mark_output_squash(net)
    layers: list[HiddenLayer] = []
    current: list[nn.Linear] = []  # Linears not yet followed by an activation
    path, norm, heads = "", None, None  # heads: the name prefix of the parallel heads walked
    for name, m in net.named_modules():
        if getattr(m, LATERAL, False):
            continue
        if heads is not None and name.startswith(heads):
            continue  # inside parallel heads: taken together with their module
        found = linears(m)
        if getattr(m, PARALLEL_HEADS, False):
            heads = f"{name}."
        if found:
            if layers and not layers[-1].outs:
                layers[-1].outs.extend(found)
            current, path, norm = found, name, None
        elif isinstance(m, nn.LayerNorm) and len(current) == 1:
            norm = m
        elif is_activation(m) and len(current) == 1 and not getattr(m, OUTPUT_SQUASH, False):
            layers.append(HiddenLayer(inp=current[0], act=m, outs=[], name=str(len(layers)), norm=norm, path=path))
            current = []
    return layers, current


def hidden_layers(net: nn.Module) -> list[HiddenLayer]:
    """The hidden layers of ``net``: every ``Linear`` (in registration order) followed, after
    an optional ``LayerNorm``, by an activation (:func:`is_activation`). Each layer's ``outs``
    holds the next ``Linear`` of ``net``, if any; ``name`` is its index, ``path`` the name of
    its ``Linear`` in ``net``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh())
        >>> [(layer.name, layer.path, layer.norm is net[1]) for layer in hidden_layers(net)]
        [('0', '0', True), ('1', '3', False)]
    """
    return _walk(net)[0]


def _chain(name: str, seq: nn.Module, head_modules: list[nn.Module], optimizer: Any) -> MLPView:
    layers, last = _walk(seq)
    heads = [h for m in head_modules for h in linears(m)]  # a head per task: every one of them
    if layers and not layers[-1].outs:
        layers[-1].outs.extend(heads)
    output = [*last, *heads]  # the sequence may end with its output Linear(s)
    return MLPView(name=name, layers=layers, optimizer=optimizer, output=output, module=seq)


def _chains(name: str, net: nn.Module, heads: list[nn.Module], optimizer: Any) -> list[MLPView]:
    """One view of ``net``, or one per column of a progressive network (``<name>.col<k>``,
    each ending with the column's own output layer).
    """
    if getattr(net, "crl_columns", False):
        return [_chain(f"{name}.col{k}", column, [], optimizer) for k, column in enumerate(net.columns)]  # type: ignore[arg-type]
    return [_chain(name, net, heads, optimizer)]


def _column_targets(target: nn.Module) -> list[nn.Module]:
    return list(target.columns) if getattr(target, "crl_columns", False) else [target]  # type: ignore[arg-type]


def find_mlps(model: Any, optimizer: torch.optim.Optimizer | None = None) -> list[MLPView]:
    """The MLPs of an SB3 PPO/A2C/SAC/TD3 model, or of an ``nn.Sequential`` (whose optimizer is
    ``optimizer`` or its ``.optimizer`` attribute). Target nets are no views of their own: a
    view's ``targets`` are the copies kept consistent (SAC's and TD3's target critics, TD3's
    target actor).

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
        views += _chains("pi", ext.policy_net, [policy.action_net], policy.optimizer)
        views += _chains("vf", ext.value_net, [policy.value_net], policy.optimizer)
    elif hasattr(policy, "actor") and hasattr(policy, "critic"):  # SAC / TD3
        actor = policy.actor
        if isinstance(getattr(actor, "mu", None), nn.Sequential):  # TD3: mu = the whole deterministic actor
            mark_output_squash(policy)
            views.append(_chain("actor", actor.mu, [], actor.optimizer))
            target = getattr(policy, "actor_target", None)
            if target is not None:
                views[-1].targets.append(target.mu)
        else:
            heads = [h for h in (actor.mu, getattr(actor, "log_std", None)) if isinstance(h, nn.Module)]
            views += _chains("actor", actor.latent_pi, heads, actor.optimizer)
        for i, q in enumerate(policy.critic.q_networks):
            vs = _chains(f"qf{i}", q, [], policy.critic.optimizer)
            target = getattr(policy, "critic_target", None)
            if target is not None:
                for v, t in zip(vs, _column_targets(target.q_networks[i]), strict=True):
                    v.targets.append(t)
            views += vs
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

            hook._crl_features = True  # type: ignore[attr-defined]  # crl.fast.critic_worker replays these
            handles.append(layer.act.register_forward_hook(hook))
    return handles
