"""Forgetting methods for boundary-aware agents: online EWC, MAS and L2 to the previous
regime's parameters (as Continual World implements them for SAC, Wolczyk et al. 2021).

At every known regime change, each method computes per-parameter importances ``Omega`` on
states of the regime that just ended, adds them to the importances of earlier regimes
(``Omega <- decay * Omega + Omega_new``; ``decay`` 1 sums them, as Continual World does),
and anchors ``theta*`` to the current parameters. From then on the loss carries
``(strength / 2) * sum_i Omega_i (theta_i - theta*_i)^2``, whose gradient
``strength * Omega * (theta - theta*)`` is added before every optimizer step.

Importances (per parameter, averaged over the states of the ending regime):

- ``ewc``: the diagonal Fisher of the Gaussian policy, ``sum_j (d mu_j)^2 / sigma_j^2 +
  2 (d log sigma_j)^2`` (the Fisher of a Gaussian in its mean and log-std), plus for the
  critic the squared gradients of its outputs (PPO's value, SAC's and TD3's Q-values). TD3's
  actor is deterministic: it has no Fisher of its own, and crl takes the squared gradients of
  its action, ``sum_j (d mu_j)^2``: the Fisher of a Gaussian ``N(mu(s), sigma^2)`` around it
  with ``sigma = 1`` (its exploration noise's ``sigma`` would scale the actor's importances
  by ``1 / sigma^2``; crl does not read it);
- ``mas`` (Aljundi et al. 2018): ``|d ||f(x)||^2 / d theta|`` with ``f`` the actor's outputs
  ``[mu, log sigma]`` (TD3: its action ``mu``) and the critic's outputs;
- ``l2_prev``: 1 for every parameter;
- ``si`` (Zenke et al. 2017): the path integral of the task loss along the parameters'
  trajectory during the regime, ``omega = -sum_steps g * delta_theta`` (``g`` the
  unregularised gradient the optimizer was given, ``delta_theta`` that step's change),
  consolidated as ``Omega <- max(0, decay * Omega + omega / (Delta^2 + xi))`` with ``Delta`` the
  parameters' total change over the regime; it needs no states.

States: PPO keeps the observations of its last complete rollout (plus the current partial
one); SAC and TD3 take the most recent transitions of their replay buffer. A plain ``nn.Module``
(the supervised probe) is given its batch explicitly through :meth:`AnchorPenalty.consolidate`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from crl.errors import ConfigError, check_int, check_non_negative
from crl.plasticity.base import register_intervention
from crl.plasticity.regularisers import ParamIntervention

__all__ = ["AnchorPenalty", "EWC", "MAS", "L2Prev", "SynapticIntelligence", "output_functions"]


class _Outputs(nn.Module):
    """``forward(obs, act)`` -> a vector of one network's outputs for ONE state (no batch)."""

    def __init__(self, owner: nn.Module, fn: Any) -> None:
        super().__init__()
        self.owner = owner
        self.fn = fn

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.fn(self.owner, obs.unsqueeze(0), act.unsqueeze(0)).reshape(-1)


def _ppo_actor(policy: nn.Module, obs: torch.Tensor, act: torch.Tensor, fisher: bool) -> torch.Tensor:
    features = policy.extract_features(obs, policy.pi_features_extractor)
    mean = policy.action_net(policy.mlp_extractor.forward_actor(features))
    log_std = getattr(policy, "log_std", None)
    if not isinstance(log_std, torch.Tensor):  # discrete actions: logits
        if not fisher:
            return mean
        logp = torch.log_softmax(mean, -1)  # sum_a p_a (d log p_a)^2 is the categorical Fisher
        return logp * logp.exp().detach().sqrt()
    log_std = log_std.expand_as(mean)
    if fisher:
        return torch.cat([mean / log_std.exp().detach(), log_std * 2**0.5], -1)
    return torch.cat([mean, log_std], -1)


def _ppo_critic(policy: nn.Module, obs: torch.Tensor, act: torch.Tensor, fisher: bool) -> torch.Tensor:
    return policy.predict_values(obs)


def _sac_actor(actor: nn.Module, obs: torch.Tensor, act: torch.Tensor, fisher: bool) -> torch.Tensor:
    mean, log_std, _ = actor.get_action_dist_params(obs)
    if fisher:
        return torch.cat([mean / log_std.exp().detach(), log_std * 2**0.5], -1)
    return torch.cat([mean, log_std], -1)


def _td3_actor(actor: nn.Module, obs: torch.Tensor, act: torch.Tensor, fisher: bool) -> torch.Tensor:
    return actor(obs)  # the deterministic action (see the module docstring for the Fisher)


def _sac_critic(critic: nn.Module, obs: torch.Tensor, act: torch.Tensor, fisher: bool) -> torch.Tensor:
    return torch.cat(critic(obs, act), -1)


def _sequential(net: nn.Module, obs: torch.Tensor, act: torch.Tensor, fisher: bool) -> torch.Tensor:
    return net(obs)


def output_functions(model: Any, fisher: bool) -> list[tuple[nn.Module, Any]]:
    """``(module, f)`` pairs whose per-state output vectors define the importances: PPO's
    actor and value net, SAC's and TD3's actor and critics, or a plain module's outputs. With
    ``fisher``, the actor's outputs are scaled so that the sum of squared Jacobian rows is
    the Gaussian policy's Fisher (``mu / sigma`` with ``sigma`` held fixed, ``sqrt(2) log sigma``);
    TD3's deterministic actor gives its action as it is (``sigma = 1``).
    """
    if isinstance(model, nn.Module):
        pairs = [(model, _sequential)]
    elif hasattr(model.policy, "mlp_extractor"):
        pairs = [(model.policy, _ppo_actor), (model.policy, _ppo_critic)]
    else:
        actor = _sac_actor if hasattr(model.actor, "get_action_dist_params") else _td3_actor
        pairs = [(model.actor, actor), (model.critic, _sac_critic)]
    return [(m, lambda o, x, a, f=f: f(o, x, a, fisher)) for m, f in pairs]


class AnchorPenalty(ParamIntervention):
    """Shared machinery of the quadratic anchor penalties (see the module docstring).

    Args:
        strength: lambda of ``(lambda / 2) sum Omega (theta - theta*)^2``.
        decay: factor on the importances of earlier regimes (1: summed, as Continual World).
        samples: states used to compute the importances at a regime change.
    """

    needs_boundaries = True
    #: Whether importances are computed from states (L2-to-previous needs none).
    needs_states = True

    def __init__(self, strength: float = 1e4, decay: float = 1.0, samples: int = 1024) -> None:
        strength = check_non_negative("strength", strength)
        if not 0.0 <= float(decay) <= 1.0:
            raise ConfigError(f"decay must be in [0, 1], got {decay!r}")
        self.strength, self.decay, self.samples = strength, float(decay), check_int("samples", samples, minimum=1)
        self.omega: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.consolidations = 0
        self._last_rollout: np.ndarray | None = None

    # -- the penalty ---------------------------------------------------------
    def _before_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self.omega:
            return
        for n, p, opt in self.params:
            if opt is optimizer and p.grad is not None and n in self.omega:
                p.grad.add_(self.omega[n] * (p - self.anchor[n]), alpha=self.strength)

    def penalty(self) -> torch.Tensor:
        """``(strength / 2) * sum Omega (theta - theta*)^2`` (differentiable)."""
        total = torch.zeros(())
        for n, p, _ in self.params:
            if n in self.omega:
                total = total + 0.5 * self.strength * (self.omega[n] * (p - self.anchor[n]) ** 2).sum()
        return total

    # -- consolidation -------------------------------------------------------
    def importance(self, obs: torch.Tensor, act: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter importances on a batch of states (and actions, for SAC's critics)."""
        return {n: torch.ones_like(p) for n, p, _ in self.params}

    def consolidate(self, obs: torch.Tensor | None = None, act: torch.Tensor | None = None) -> None:
        """Accumulate importances on ``obs`` (default: the states of the ending regime) and
        anchor to the current parameters.
        """
        if obs is None and self.needs_states:
            obs, act = self._regime_states()
        if obs is None:
            obs = torch.zeros(0, 0)
        new = self.importance(obs, act if act is not None else obs[:, :0])
        for n, p, _ in self.params:
            if n in new:
                old = self.omega.get(n)
                self.omega[n] = new[n].detach().clone() if old is None else self.decay * old + new[n].detach()
            self.anchor[n] = p.detach().clone()
        self.consolidations += 1

    def _on_regime_change(self, regime: int) -> None:
        self.consolidate()

    def on_rollout_end(self) -> None:
        buf = getattr(self.model, "rollout_buffer", None)
        if buf is not None:
            self._last_rollout = np.array(buf.observations[: buf.pos], copy=True)

    def _regime_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        if isinstance(m, nn.Module):
            raise ValueError(f"{self.name}: pass the regime's states to consolidate(obs) for a plain module")
        if hasattr(m, "replay_buffer"):
            rb = m.replay_buffer
            end = rb.buffer_size if rb.full else rb.pos
            idx = (np.arange(rb.pos - min(end, self.samples), rb.pos)) % rb.buffer_size
            obs = rb.observations[idx].reshape(-1, *rb.obs_shape)
            act = rb.actions[idx].reshape(-1, rb.action_dim)
        else:
            buf = m.rollout_buffer
            parts = [] if self._last_rollout is None else [self._last_rollout]
            parts.append(buf.observations[: buf.pos])
            obs = np.concatenate([p.reshape(-1, *buf.obs_shape) for p in parts])
            act = np.zeros((len(obs), 0), dtype=np.float32)
        obs, act = obs[-self.samples :], act[-self.samples :]
        policy = m.policy
        return (
            torch.as_tensor(obs, dtype=torch.float32, device=policy.device),
            torch.as_tensor(act, dtype=torch.float32, device=policy.device),
        )

    def _per_state_jacobians(self, fisher: bool, obs: torch.Tensor, act: torch.Tensor, chunk: int = 32):
        """Yield ``(names, {name: per-state Jacobian (states x outputs x *shape)})`` chunks."""
        ours = {id(p): n for n, p, _ in self.params}
        for owner, fn in output_functions(self.model, fisher):
            wrapper = _Outputs(owner, fn)
            params = {k: v for k, v in wrapper.named_parameters() if id(v) in ours}
            if params:  # keep only the parameters these outputs depend on
                with torch.enable_grad():
                    out = wrapper(obs[0], act[0]).sum()
                    grads = torch.autograd.grad(out, list(params.values()), allow_unused=True)
                params = {k: v for (k, v), g in zip(params.items(), grads, strict=True) if g is not None}
            if not params:
                continue

            def f(ps: dict[str, torch.Tensor], o: torch.Tensor, a: torch.Tensor, wrapper=wrapper) -> torch.Tensor:
                return functional_call(wrapper, ps, (o, a))

            detached = {k: v.detach() for k, v in params.items()}
            for i in range(0, len(obs), chunk):
                yield f, detached, {k: ours[id(v)] for k, v in params.items()}, obs[i : i + chunk], act[i : i + chunk]

    def _mean_over_states(
        self, fisher: bool, obs: torch.Tensor, act: torch.Tensor, per_chunk: Any
    ) -> dict[str, torch.Tensor]:
        """Average over states of ``per_chunk(f, params, obs, act)`` (per-parameter sums over a chunk)."""
        total: dict[str, torch.Tensor] = {}
        if len(obs) == 0:  # no state of the ending regime seen: nothing learnt about importances
            return total
        for f, ps, names, o, a in self._per_state_jacobians(fisher, obs, act):
            for k, v in per_chunk(f, ps, o, a).items():
                total[names[k]] = total[names[k]] + v if names[k] in total else v
        return {k: v / len(obs) for k, v in total.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "omega": self.omega,
            "anchor": self.anchor,
            "consolidations": self.consolidations,
            "last_rollout": self._last_rollout,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.omega = {k: v.clone() for k, v in state["omega"].items()}
        self.anchor = {k: v.clone() for k, v in state["anchor"].items()}
        self.consolidations = int(state["consolidations"])
        self._last_rollout = state["last_rollout"]


@register_intervention
class L2Prev(AnchorPenalty):
    """L2 to the previous regime's parameters: ``Omega = 1`` for every parameter.

    Args:
        strength: lambda (Continual World's SAC default 1e5).
        decay: unused by the constant importance beyond keeping it at most 1 per regime.
        samples: unused (no states needed).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 1))
        >>> net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> iv = L2Prev(strength=1.0, decay=0.0)
        >>> iv.attach(net)
        >>> iv.consolidate()  # anchor to the current parameters
        >>> with torch.no_grad():
        ...     net[0].bias += 2.0
        >>> round(float(iv.penalty().detach()), 4)  # (1/2) * 1 * 2^2
        2.0
    """

    name = "l2_prev"
    needs_states = False

    def __init__(self, strength: float = 1e5, decay: float = 0.0, samples: int = 1) -> None:
        super().__init__(strength=strength, decay=decay, samples=samples)


@register_intervention
class EWC(AnchorPenalty):
    """Online elastic weight consolidation (Kirkpatrick et al. 2017; online form of Schwarz
    et al. 2018), with the Gaussian-policy Fisher for the actor and squared output gradients
    for the critic. Defaults: Continual World's SAC (strength 1e4, importances summed).

    Example:
        >>> net = nn.Sequential(nn.Linear(1, 1, bias=False))
        >>> net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> iv = EWC(strength=1.0)
        >>> iv.attach(net)
        >>> iv.consolidate(torch.tensor([[1.0], [3.0]]))  # d out / d w = x: F = mean(x^2) = 5
        >>> iv.omega["0.weight"]
        tensor([[5.]])
    """

    name = "ewc"

    def importance(self, obs: torch.Tensor, act: torch.Tensor) -> dict[str, torch.Tensor]:
        def per_chunk(f: Any, ps: dict[str, torch.Tensor], o: torch.Tensor, a: torch.Tensor) -> dict[str, torch.Tensor]:
            jac = vmap(jacrev(f), in_dims=(None, 0, 0))(ps, o, a)  # k -> (states, outputs, *shape)
            return {k: (j**2).sum(dim=(0, 1)) for k, j in jac.items()}

        return self._mean_over_states(True, obs, act, per_chunk)


@register_intervention
class MAS(AnchorPenalty):
    """Memory-aware synapses (Aljundi et al. 2018): importance ``|d ||f(x)||^2 / d theta|``
    averaged over states, ``f`` the actor's ``[mu, log sigma]`` and the critic's outputs.
    Defaults: Continual World's SAC (strength 1e4, importances summed).

    Example:
        >>> net = nn.Sequential(nn.Linear(1, 1, bias=False))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(2.0)
        >>> net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> iv = MAS(strength=1.0)
        >>> iv.attach(net)
        >>> iv.consolidate(torch.tensor([[1.0], [-1.0]]))  # |d (w x)^2 / dw| = |2 w x^2| = 4
        >>> iv.omega["0.weight"]
        tensor([[4.]])
    """

    name = "mas"

    def importance(self, obs: torch.Tensor, act: torch.Tensor) -> dict[str, torch.Tensor]:
        from torch.func import grad

        def per_chunk(f: Any, ps: dict[str, torch.Tensor], o: torch.Tensor, a: torch.Tensor) -> dict[str, torch.Tensor]:
            g = vmap(grad(lambda p, x, y: (f(p, x, y) ** 2).sum()), in_dims=(None, 0, 0))(ps, o, a)
            return {k: v.abs().sum(0) for k, v in g.items()}

        return self._mean_over_states(False, obs, act, per_chunk)


@register_intervention
class SynapticIntelligence(AnchorPenalty):
    """Synaptic intelligence (Zenke, Poole & Ganguli 2017): importances from the path integral
    of the loss during a regime, a quadratic penalty to the previous regime's parameters.

    At every optimizer step, with ``g`` the gradient the optimizer was given before this
    penalty is added (the "unregularised" gradient of the authors' code) and ``delta`` the
    step's parameter change, ``omega -= g * delta``. At a regime change,
    ``Omega <- max(0, decay * Omega + omega / ((theta - theta_start)^2 + xi))`` (the authors'
    code clips at 0), ``omega`` restarts at 0 and ``theta*`` and ``theta_start`` become the
    current parameters. The loss then carries ``c * sum Omega (theta - theta*)^2`` (the paper's
    form, without a 1/2).

    Args:
        c: the paper's strength ``c`` (0.1 on permuted MNIST in the paper; there is no
            published RL value).
        xi: damping of the total change (0.1 in the authors' permuted-MNIST run, 1e-3 on split
            CIFAR).
        decay: factor on earlier regimes' importances (1: summed, as the paper does).

    Example:
        >>> net = nn.Sequential(nn.Linear(1, 1, bias=False))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(1.0)
        >>> net.optimizer = torch.optim.SGD(net.parameters(), lr=0.25)
        >>> iv = SynapticIntelligence(c=1.0, xi=0.0)
        >>> iv.attach(net)
        >>> (net(torch.ones(1, 1)) ** 2).sum().backward()  # loss w^2: g = 2, step -0.5
        >>> net.optimizer.step()
        >>> iv.omega_running["0.weight"]  # -g * delta = -2 * -0.5
        tensor([[1.]])
        >>> iv.consolidate()  # Omega = 1 / 0.5^2
        >>> iv.omega["0.weight"]
        tensor([[4.]])
    """

    name = "si"
    needs_states = False

    def __init__(self, c: float = 0.1, xi: float = 0.1, decay: float = 1.0) -> None:
        c = check_non_negative("c", c)
        super().__init__(strength=2.0 * c, decay=decay, samples=1)
        self.c, self.xi = c, check_non_negative("xi", xi)
        self.omega_running: dict[str, torch.Tensor] = {}
        self.start: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}
        self._before: dict[str, torch.Tensor] = {}

    def _setup(self) -> None:
        for n, p, _ in self.params:
            self.omega_running[n] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            self.start[n] = p.detach().clone()

    def _before_step(self, optimizer: torch.optim.Optimizer) -> None:
        for n, p, opt in self.params:
            if opt is optimizer and p.grad is not None:
                self._grad[n] = p.grad.detach().clone()
                self._before[n] = p.detach().clone()
        super()._before_step(optimizer)  # then the penalty's gradient

    def _after_step(self, optimizer: torch.optim.Optimizer) -> None:
        for n, p, opt in self.params:
            if opt is optimizer and n in self._grad:
                self.omega_running[n].sub_(self._grad.pop(n) * (p.detach() - self._before.pop(n)))

    def importance(self, obs: torch.Tensor, act: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: self.omega_running[n] / ((p.detach() - self.start[n]) ** 2 + self.xi) for n, p, _ in self.params}

    def consolidate(self, obs: torch.Tensor | None = None, act: torch.Tensor | None = None) -> None:
        """Turn this regime's path integral into importances and restart it (no states needed)."""
        super().consolidate(obs, act)
        for n, p, _ in self.params:
            self.omega[n].clamp_(min=0.0)
            self.omega_running[n].zero_()
            self.start[n] = p.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "omega_running": self.omega_running, "start": self.start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.omega_running = {k: v.clone() for k, v in state["omega_running"].items()}
        self.start = {k: v.clone() for k, v in state["start"].items()}
