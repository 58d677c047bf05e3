"""UPGD: utility-based perturbed gradient descent (Elsayed & Mahmood, ICLR 2024).

The adaptive variant the paper uses for PPO: an Adam step whose size, and a small Gaussian
perturbation, are gated per weight by ``1 - s`` where ``s`` is the weight's scaled utility.
Useful weights (large ``s``) are protected from change (against forgetting); useless ones
keep being updated and perturbed (against loss of plasticity).

Per weight ``w`` with gradient ``g``, at step ``t``::

    u     <- beta_u * u + (1 - beta_u) * (-g * w)          # first-order utility, EMA
    m, v  <- Adam's moments (beta1, beta2), bias-corrected to m_hat, v_hat
    s     =  sigmoid((u / (1 - beta_u**t)) / max(u))       # max over every weight of the net
    w     <- (1 - lr * weight_decay) * w - lr * (m_hat / (sqrt(v_hat) + eps) + xi) * (1 - s)
    xi    ~  N(0, sigma**2)

This follows the authors' code (``mohmdelsayed/upgd``): the maximum is taken over the
*uncorrected* utilities while the numerator is bias-corrected, so early in training the
scaled utilities of the most useful weights exceed 1 before the sigmoid. When the maximum
is exactly 0 (every utility <= 0), crl divides by the smallest positive float instead of 0
(their code yields NaN there).

Batched networks: a parameter with attribute ``_crl_batched = True`` holds independent
networks along dim 0 (the supervised probe); the maximum utility is then taken per network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from crl.errors import ConfigError, check_non_negative

__all__ = ["UPGD", "check_unit_interval"]


def check_unit_interval(**values: float) -> None:
    """Raise ``ConfigError`` naming the first value outside [0, 1)."""
    for k, v in values.items():
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"{k} must be in [0, 1), got {v!r}")


def _batched(p: torch.Tensor) -> bool:
    return bool(getattr(p, "_crl_batched", False))


class UPGD(torch.optim.Optimizer):
    """Adaptive UPGD (the variant used for PPO in Elsayed & Mahmood 2024).

    Args:
        params: parameters or parameter groups.
        lr: step size (SB3 rewrites ``param_group["lr"]`` every update; it is read each step).
        weight_decay: decoupled decay, multiplied by ``lr`` (paper: 1e-3).
        beta_utility: EMA factor of the utility (0.999).
        sigma: standard deviation of the perturbation (1e-3).
        betas: Adam's moment factors (0.9, 0.999).
        eps: Adam's epsilon (1e-5, as the authors' code).
        adaptive: ``False`` gives the paper's first-order (non-adaptive) UPGD used in its
            supervised streams: the gated step is ``(g + xi) * (1 - s)``, no moments.
        generator: where the perturbations are drawn (``None``: torch's global generator).
            The draws are the same either way: one ``randn`` of each parameter's shape per
            step, in parameter order (the probe's batched learner relies on it).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
        >>> opt = UPGD([w], lr=0.1, sigma=0.0, weight_decay=0.0)
        >>> w.grad = torch.tensor([0.5, 0.5])
        >>> opt.step()
        >>> w.data  # the useful weight (u = -g*w > 0) is protected; the other takes a full step
        tensor([ 0.9000, -1.0000])
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        weight_decay: float = 1e-3,
        beta_utility: float = 0.999,
        sigma: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-5,
        adaptive: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        lr, weight_decay = check_non_negative("lr", lr), check_non_negative("weight_decay", weight_decay)
        sigma, eps = check_non_negative("sigma", sigma), check_non_negative("eps", eps, strict=True)
        if len(tuple(betas)) != 2:
            raise ConfigError(f"betas must be two numbers, got {betas!r}")
        check_unit_interval(beta_utility=beta_utility, beta1=betas[0], beta2=betas[1])
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            beta_utility=beta_utility,
            sigma=sigma,
            betas=tuple(betas),
            eps=eps,
            adaptive=bool(adaptive),
        )
        super().__init__(params, defaults)
        self.generator = generator

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        gmax: torch.Tensor | None = None  # max utility over the whole network (per network if batched)
        batched_max: dict[int, torch.Tensor] = {}
        for group in self.param_groups:
            bu, (b1, b2) = group["beta_utility"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["utility"] = torch.zeros_like(p)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                state["utility"].mul_(bu).add_(-g * p, alpha=1 - bu)
                if group["adaptive"]:
                    state["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                    state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                u = state["utility"]
                if _batched(p):
                    m = u.reshape(u.shape[0], -1).amax(1)
                    key = u.shape[0]
                    batched_max[key] = torch.maximum(batched_max[key], m) if key in batched_max else m
                else:
                    m = u.max()
                    gmax = m if gmax is None else torch.maximum(gmax, m)
        tiny = torch.finfo(torch.float32).tiny
        for group in self.param_groups:
            lr, wd, sigma, eps = group["lr"], group["weight_decay"], group["sigma"], group["eps"]
            bu, (b1, b2) = group["beta_utility"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                t = state["step"]
                if _batched(p):
                    denom = batched_max[p.shape[0]].reshape(-1, *([1] * (p.dim() - 1)))
                else:
                    assert gmax is not None
                    denom = gmax
                denom = torch.where(denom == 0, torch.full_like(denom, tiny), denom)
                scaled = torch.sigmoid(state["utility"] / (1 - bu**t) / denom)
                if group["adaptive"]:
                    update = (state["exp_avg"] / (1 - b1**t)) / ((state["exp_avg_sq"] / (1 - b2**t)).sqrt() + eps)
                else:
                    update = p.grad
                if sigma > 0:
                    noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype, device=p.device)
                    update = update + noise * sigma
                p.mul_(1 - lr * wd).add_(update * (1 - scaled), alpha=-lr)
        return loss
