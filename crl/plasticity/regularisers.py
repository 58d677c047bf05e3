"""Interventions that change the loss or constrain the weights: L2 Init, Parseval
regularisation, weight clipping, and the optimizer-moment reset at regime changes.

They act through optimizer step hooks, like the unit interventions: a penalty adds its
gradient to ``param.grad`` in a step *pre*-hook (after SB3's gradient clipping, which is off
in Dohare's PPO), a constraint edits the weights in a step *post*-hook. Learning-rate
schedules are unaffected: the optimizer reads ``param_group["lr"]`` as usual.

Parameters are found through :func:`crl.plasticity.nets.find_mlps` (PPO's policy and value
nets, SAC's actor and critics, a plain ``nn.Sequential``); normalisation parameters
(LayerNorm) are never regularised or clipped by Parseval and weight clipping.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from crl.errors import ConfigError, check_non_negative
from crl.plasticity.base import Intervention, register_intervention
from crl.plasticity.nets import MLPView, find_mlps

__all__ = [
    "ParamIntervention",
    "L2Init",
    "Parseval",
    "WeightClip",
    "OptimizerReset",
    "INIT_BOUNDS",
    "model_optimizers",
    "optimized_parameters",
]


def _views(model: Any) -> list[MLPView]:
    opt = getattr(model, "optimizer", None) if isinstance(model, nn.Module) else None
    return find_mlps(model, opt)


def model_optimizers(model: Any) -> list[torch.optim.Optimizer]:
    """The optimizers updating ``model``'s networks (SAC's entropy optimizer excluded)."""
    found: list[torch.optim.Optimizer] = []
    for view in _views(model):
        if view.optimizer is not None and all(view.optimizer is not o for o in found):
            found.append(view.optimizer)
    return found


def optimized_parameters(model: Any) -> list[tuple[str, nn.Parameter, torch.optim.Optimizer]]:
    """``(name, parameter, optimizer)`` for every parameter an optimizer of ``model`` updates,
    named as in the policy's (or module's) ``named_parameters()``.
    """
    root = model if isinstance(model, nn.Module) else model.policy
    names = {id(p): n for n, p in root.named_parameters()}
    out = []
    for opt in model_optimizers(model):
        for group in opt.param_groups:
            for p in group["params"]:
                out.append((names.get(id(p), f"param{len(out)}"), p, opt))
    return out


class ParamIntervention(Intervention):
    """Shared plumbing: the optimized parameters, and step hooks on their optimizers.

    Subclasses override :meth:`_before_step` (add penalty gradients) and/or
    :meth:`_after_step` (constrain weights); both get one optimizer and run under no_grad.
    A subclass whose hooks touch only that optimizer's parameters and gradients and draw no
    random numbers sets :attr:`local_step_hooks` (:func:`crl.fast.adam.local_hooks`).
    """

    #: Whether the step hooks act only on the stepped optimizer's own parameters and draw nothing.
    local_step_hooks = False

    def _on_attach(self, model: Any) -> None:
        self.params = optimized_parameters(model)
        self.optimizers = model_optimizers(model)
        self._setup()
        for opt in self.optimizers:
            opt.register_step_pre_hook(self._pre)
            opt.register_step_post_hook(self._post)

    def _setup(self) -> None:
        """Hook: per-parameter state once the parameters are known."""

    def _pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            self._before_step(optimizer)

    def _post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            self._after_step(optimizer)

    def _before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook: called before every step of ``optimizer``."""

    def _after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook: called after every step of ``optimizer``."""


@register_intervention
class L2Init(ParamIntervention):
    """L2 Init (Kumar et al. 2023, "regenerative regularisation"): the loss gets
    ``strength * ||theta - theta_0||^2``, pulling every parameter towards its initial value.

    The gradient ``2 * strength * (theta - theta_0)`` is added before each optimizer step.
    ``theta_0`` is taken when the intervention is attached (the freshly initialised net) and
    saved in the checkpoint.

    Args:
        strength: lambda (Kumar et al. sweep 1e-2 ... 1e-4).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> iv = L2Init(strength=0.5)
        >>> iv.attach(net)
        >>> with torch.no_grad():
        ...     net[2].bias += 1.0  # move away from theta_0, no loss gradient
        >>> net(torch.zeros(1, 2)).sum().mul(0).backward()  # a zero loss gradient
        >>> net.optimizer.step()  # grad 2 * 0.5 * 1.0 = 1.0, so bias moves back by lr * 1.0
        >>> round(float(net[2].bias.detach() - iv.theta0["2.bias"]), 6)
        0.9
    """

    name = "l2_init"
    local_step_hooks = True

    def __init__(self, strength: float = 1e-3) -> None:
        self.strength = check_non_negative("strength", strength)
        self.theta0: dict[str, torch.Tensor] = {}

    def _setup(self) -> None:
        self.theta0 = {n: p.detach().clone() for n, p, _ in self.params}

    def _before_step(self, optimizer: torch.optim.Optimizer) -> None:
        for n, p, opt in self.params:
            if opt is optimizer and p.grad is not None:
                p.grad.add_(p - self.theta0[n], alpha=2 * self.strength)

    def penalty(self) -> torch.Tensor:
        """``strength * ||theta - theta_0||^2`` (differentiable; for tests and logging)."""
        return self.strength * sum(((p - self.theta0[n]) ** 2).sum() for n, p, _ in self.params)

    def state_dict(self) -> dict[str, Any]:
        return {"theta0": self.theta0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.theta0 = {n: t.clone() for n, t in state["theta0"].items()}


def _hidden_weights(model: Any) -> list[tuple[nn.Parameter, torch.optim.Optimizer | None]]:
    """Incoming weight matrices of every hidden layer (output layers and norms excluded)."""
    out = []
    for view in _views(model):
        for layer in view.layers:
            out.append((layer.inp.weight, view.optimizer))
    return out


@register_intervention
class Parseval(ParamIntervention):
    """Parseval regularisation (Chung et al. 2024): the loss gets
    ``strength * ||W W^T - scale * I||_F^2`` for the weight matrix ``W`` (units x inputs) of
    every hidden layer, keeping the rows of each layer near-orthogonal. The output layers
    are not regularised (as in the paper); biases and normalisation parameters neither.

    The gradient ``4 * strength * (W W^T - scale * I) W`` is added before each step.

    Args:
        strength: lambda; the paper tunes it per benchmark, crl's default 1e-3 is a
            starting point, not a published number.
        scale: s, the target squared row norm (1: rows of unit length).

    Example:
        >>> w = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> Parseval.gradient(w, strength=1.0, scale=1.0)  # 4 (WW^T - I) W
        tensor([[ 0.,  0.],
                [ 0., 24.]])
    """

    name = "parseval"
    local_step_hooks = True

    def __init__(self, strength: float = 1e-3, scale: float = 1.0) -> None:
        self.strength = check_non_negative("strength", strength)
        self.scale = check_non_negative("scale", scale, strict=True)

    def _setup(self) -> None:
        self.weights = _hidden_weights(self.model)

    @staticmethod
    def gradient(w: torch.Tensor, strength: float, scale: float) -> torch.Tensor:
        """``d/dW strength * ||W W^T - scale I||_F^2`` (batched over leading dims)."""
        gram = w @ w.transpose(-1, -2)
        eye = torch.eye(w.shape[-2], dtype=w.dtype, device=w.device)
        return 4 * strength * (gram - scale * eye) @ w

    def _before_step(self, optimizer: torch.optim.Optimizer) -> None:
        for w, opt in self.weights:
            if opt is optimizer and w.grad is not None:
                w.grad.add_(self.gradient(w, self.strength, self.scale))

    def penalty(self) -> torch.Tensor:
        """The regulariser's value (differentiable)."""
        total = torch.zeros(())
        for w, _ in self.weights:
            eye = torch.eye(w.shape[-2], dtype=w.dtype)
            total = total + self.strength * ((w @ w.transpose(-1, -2) - self.scale * eye) ** 2).sum()
        return total


#: Support bound of each init distribution of ``crl.plasticity.nets.INIT_FNS``, by fan-in.
INIT_BOUNDS: dict[str, Callable[[int], float]] = {
    "lecun_uniform": lambda fan_in: math.sqrt(3.0 / fan_in),
    "kaiming_uniform": lambda fan_in: math.sqrt(6.0 / fan_in),
    "torch_default": lambda fan_in: 1.0 / math.sqrt(fan_in),
}


@register_intervention
class WeightClip(ParamIntervention):
    """Weight clipping (Elsayed et al. 2024): after every optimizer step, each weight and
    bias of a linear layer is clipped to ``[-kappa * s_l, kappa * s_l]``, ``s_l`` the bound of
    the layer's initial uniform distribution (``INIT_BOUNDS[init](fan_in)``). Output layers
    are clipped too (the authors' default); normalisation parameters and PPO's ``log_std``
    are not.

    Args:
        kappa: the clipping factor (1, the authors' reference implementation's default).
        init: the init distribution the bound comes from (the agent's ``network.init``).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> net.optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
        >>> WeightClip(kappa=1.0).attach(net)
        >>> net(torch.ones(1, 3)).sum().mul(100).backward()
        >>> net.optimizer.step()
        >>> bool(net[0].weight.abs().max() <= 1.0 + 1e-6)  # sqrt(3 / 3)
        True
    """

    name = "weight_clip"
    local_step_hooks = True

    def __init__(self, kappa: float = 1.0, init: str = "lecun_uniform") -> None:
        self.kappa = check_non_negative("kappa", kappa, strict=True)
        if init not in INIT_BOUNDS:
            raise ConfigError(f"init must be one of {', '.join(INIT_BOUNDS)}, got {init!r}")
        self.init = init

    def _setup(self) -> None:
        self.clips: list[tuple[nn.Parameter, float, torch.optim.Optimizer | None]] = []
        seen: set[int] = set()
        for view in _views(self.model):
            linears = [layer.inp for layer in view.layers] + [o for layer in view.layers for o in layer.outs]
            for lin in [*linears, *view.output]:
                if id(lin) in seen:
                    continue
                seen.add(id(lin))
                bound = self.kappa * INIT_BOUNDS[self.init](lin.weight.shape[-1])
                for p in (lin.weight, lin.bias):
                    if p is not None:
                        self.clips.append((p, bound, view.optimizer))

    def _after_step(self, optimizer: torch.optim.Optimizer) -> None:
        for p, bound, opt in self.clips:
            if opt is optimizer:
                p.clamp_(-bound, bound)


@register_intervention
class OptimizerReset(ParamIntervention):
    """Reset the optimizer's state (Adam's moments and step count) at every known regime
    change, so the first updates of a new regime are not steered by stale moments.
    Boundary-aware agents only.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 1))
        >>> net.optimizer = torch.optim.Adam(net.parameters())
        >>> iv = OptimizerReset()
        >>> iv.attach(net)
        >>> net(torch.ones(1, 2)).sum().backward(); net.optimizer.step()
        >>> len(net.optimizer.state), iv.on_regime_change(1), len(net.optimizer.state)
        (2, None, 0)
    """

    name = "reset_optimizer"
    local_step_hooks = True
    needs_boundaries = True

    def __init__(self) -> None:
        self.resets = 0

    def _on_regime_change(self, regime: int) -> None:
        for opt in self.optimizers:
            opt.state.clear()
        self.resets += 1

    def state_dict(self) -> dict[str, Any]:
        return {"resets": self.resets}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.resets = int(state["resets"])
