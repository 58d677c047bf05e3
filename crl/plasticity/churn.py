"""C-CHAIN: churn reduction (Tang et al., ICML 2025, "Mitigating Plasticity Loss in Continual
Reinforcement Learning by Reducing Churn"; CHAIN, Tang & Berseth, NeurIPS 2024, for SAC).

*Churn* is the change an update makes to the network's outputs on states it was not trained
on. Before every optimizer step, a reference batch is drawn (apart from the training batch),
and the gradient of a churn loss is added to the step's gradient: the distance between the
network's outputs now (``theta``) and before the previous step (``theta^-``), on the
reference batch.

PPO (C-CHAIN, the authors' continual DMC code): the policy's Gaussian means,

    L = lambda * mean_{s, j} (mu_theta(s)_j - mu_theta^-(s)_j)^2,

on a minibatch of the current rollout (as large as the training minibatch), with ``lambda``
adjusted after every update: ``initial_coef`` for the first ``warmup`` updates, then
``target_scale * mean |L_pi| / (mean L_churn + 1e-8)`` over the last ``window`` updates, so the
churn loss stays a fixed fraction of the policy loss. ``value_coef`` > 0 adds
``value_coef * mean (V_theta(s) - V_theta^-(s))^2`` (the authors regularise PPO's policy only).

SAC (CHAIN's ``sac_dcr``): on a replay batch of ``(s, a)`` (as large as the training batch,
one per gradient step, shared by the critic and the actor steps), the critic's step gets
``value_coef / 2 * sum_i mean (Q_i(s, a) - Q_i^-(s, a))^2`` (the authors' ratio to the critic
loss, whose SB3 form carries a factor 1/2) and the actor's step gets
``policy_coef * mean |min_i Q_i(s, a~) - alpha log pi(a~|s)| * KL(pi_theta(.|s) || pi_theta^-(.|s))``,
the KL of the pre-tanh Gaussians summed over actions, clipped to [0, 100] and averaged.

Where crl differs from the authors' code: the penalty's gradient is added after SB3's gradient
clipping (off in Dohare's PPO); PPO's policy loss in ``lambda``'s ratio is the clipped surrogate
on the reference minibatch at the update's last step (the authors': on its training minibatch),
and SAC's actor-objective scale is taken on the reference batch with actions drawn from the
intervention's own generator (the authors': on the training batch); the first step has no
``theta^-`` and no penalty (the authors' PPO starts one step later and restarts the history and
``lambda`` at each task, which crl's boundary-free agents are not told).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.func import functional_call

from crl.errors import check_int, check_non_negative
from crl.plasticity.agem import entropy_coefficient
from crl.plasticity.base import register_intervention
from crl.plasticity.distill import gaussian_kl
from crl.plasticity.regularisers import ParamIntervention

__all__ = ["CChain", "clipped_kl", "mean_churn"]


def mean_churn(now: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """``mean (now - before)^2``: the churn of an output between two parameter values.

    Example:
        >>> mean_churn(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]))
        tensor(2.5000)
    """
    return ((now - before) ** 2).mean()


def clipped_kl(mu: torch.Tensor, log_std: torch.Tensor, mu0: torch.Tensor, log_std0: torch.Tensor) -> torch.Tensor:
    """:func:`crl.plasticity.distill.gaussian_kl` ``KL(N(mu, sigma) || N(mu0, sigma0))`` per
    row, clipped to [0, 100] (as the authors) and averaged over the batch.

    Example:
        >>> z = torch.zeros(1, 2)
        >>> clipped_kl(z + 1.0, z, z, z)  # two dims of (1 - 0)^2 / 2
        tensor(1.)
    """
    return gaussian_kl(mu, log_std, mu0, log_std0).clamp(0.0, 100.0).mean()


class _Call(nn.Module):
    """``fn(root, *args)`` as a module, so ``functional_call`` can run it with other parameters."""

    def __init__(self, root: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.root, self.fn = root, fn

    def forward(self, *args: Any) -> Any:
        return self.fn(self.root, *args)


def _ppo_mean(policy: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    features = policy.extract_features(obs, policy.pi_features_extractor)
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


def _ppo_value(policy: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    return policy.predict_values(obs)


def _sac_dist(policy: nn.Module, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, log_std, _ = policy.actor.get_action_dist_params(obs)
    return mean, log_std


def _td3_action(policy: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    return policy.actor(obs)


def _sac_q(policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return torch.cat(policy.critic(obs, actions), dim=1)


@register_intervention
class CChain(ParamIntervention):
    """C-CHAIN churn reduction for PPO and SAC (see the module docstring).

    Args:
        target_scale: PPO: the churn loss's target fraction of the policy loss.
        initial_coef: PPO: lambda for the first ``warmup`` updates.
        warmup: PPO: updates before lambda follows the losses.
        window: PPO: updates averaged in lambda's ratio.
        policy_coef: SAC: the KL's coefficient, relative to the actor objective's scale.
        value_coef: the value churn's coefficient (default: SAC 0.1, PPO 0, the authors').
        batch_size: the reference batch (0: the agent's ``batch_size``).
        seed: the reference batches' stream (a run derives it from its seed).

    Example:
        >>> CChain().target_scale, CChain().policy_coef
        (0.05, 0.0005)
    """

    name = "cchain"

    def __init__(
        self,
        target_scale: float = 0.05,
        initial_coef: float = 100.0,
        warmup: int = 50,
        window: int = 100,
        policy_coef: float = 5e-4,
        value_coef: float | None = None,
        batch_size: int = 0,
        seed: int = 0,
    ) -> None:
        self.target_scale = check_non_negative("target_scale", target_scale)
        self.coef = check_non_negative("initial_coef", initial_coef)
        self.warmup = check_int("warmup", warmup)
        self.window = check_int("window", window, minimum=1)
        self.policy_coef = check_non_negative("policy_coef", policy_coef)
        self.value_coef = None if value_coef is None else check_non_negative("value_coef", value_coef)
        self.batch_size = check_int("batch_size", batch_size)
        self.rng = np.random.Generator(np.random.PCG64(int(seed)))
        self.gen = torch.Generator().manual_seed(int(seed))
        self.prev: dict[int, dict[str, torch.Tensor]] = {}  # theta^- per optimizer (its index)
        self.history: list[tuple[float, float]] = []  # PPO: (|policy loss|, churn) per update
        self.last: tuple[float, float] | None = None
        self.updates = 0
        self._batch: dict[str, torch.Tensor] | None = None

    def _setup(self) -> None:
        m = self.model
        self.ppo = hasattr(m, "rollout_buffer")
        if not (self.ppo or hasattr(m, "replay_buffer")):
            raise TypeError("cchain needs an SB3 PPO or SAC model (its reference batches come from their buffers)")
        if self.ppo and not isinstance(m.action_space, spaces.Box):
            raise TypeError("cchain for PPO needs a Box action space (it regularises the Gaussian policy's means)")
        self.deterministic = not self.ppo and not hasattr(m.policy.actor, "get_action_dist_params")  # TD3
        if self.value_coef is None:
            self.value_coef = 0.0 if self.ppo else 0.1
        self.n = self.batch_size or int(m.batch_size)
        self._calls = {k: _Call(m.policy, f) for k, f in (("mean", _ppo_mean), ("value", _ppo_value))}
        self._calls.update(dist=_Call(m.policy, _sac_dist), q=_Call(m.policy, _sac_q))
        self._calls.update(action=_Call(m.policy, _td3_action))
        self._index = {id(opt): i for i, opt in enumerate(self.optimizers)}

    # -- reference batches ---------------------------------------------------
    def _rollout_batch(self) -> dict[str, torch.Tensor]:
        buf = self.model.rollout_buffer
        obs = buf.observations.reshape(-1, *buf.obs_shape)
        rows = self.rng.choice(len(obs), size=min(self.n, len(obs)), replace=False)
        flat = {
            "obs": obs,
            "actions": buf.actions.reshape(len(obs), -1),
            "log_prob": buf.log_probs.reshape(-1),
            "advantages": buf.advantages.reshape(-1),
        }
        return {k: torch.as_tensor(v[rows], device=self.model.device).float() for k, v in flat.items()}

    def _replay_batch(self) -> dict[str, torch.Tensor]:
        rb = self.model.replay_buffer
        stored = rb.buffer_size if rb.full else rb.pos
        rows, envs = self.rng.integers(0, stored, size=self.n), self.rng.integers(0, rb.n_envs, size=self.n)
        data = {"obs": rb.observations[rows, envs], "actions": rb.actions[rows, envs]}
        return {k: torch.as_tensor(v, device=self.model.device).float() for k, v in data.items()}

    def _before(self, name: str, *args: torch.Tensor, params: dict[str, torch.Tensor]) -> Any:
        with torch.no_grad():
            return functional_call(self._calls[name], {f"root.{n}": t for n, t in params.items()}, args)

    # -- the penalties -------------------------------------------------------
    def _ppo_loss(self, prev: dict[str, torch.Tensor]) -> torch.Tensor:
        b, policy = self._rollout_batch(), self.model.policy
        mean = self._calls["mean"](b["obs"])
        churn = mean_churn(mean, self._before("mean", b["obs"], params=prev))
        with torch.no_grad():  # the clipped surrogate on the reference batch: lambda's ratio
            log_std = policy.log_std.expand_as(mean)
            log_prob = (-((b["actions"] - mean) ** 2) / (2 * torch.exp(2 * log_std)) - log_std).sum(-1)
            log_prob -= 0.5 * np.log(2 * np.pi) * mean.shape[-1]
            ratio, adv = torch.exp(log_prob - b["log_prob"]), b["advantages"]
            if self.model.normalize_advantage and len(adv) > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            clip = float(self.model.clip_range(1.0))
            policy_loss = -torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
        self.last = (abs(float(policy_loss)), float(churn.detach()))
        loss = self.coef * churn
        if self.value_coef:
            value = self._calls["value"](b["obs"])
            loss = loss + self.value_coef * mean_churn(value, self._before("value", b["obs"], params=prev))
        return loss

    def _critic_loss(self, prev: dict[str, torch.Tensor]) -> torch.Tensor:
        b = self._batch = self._replay_batch()
        q = self._calls["q"](b["obs"], b["actions"])
        q0 = self._before("q", b["obs"], b["actions"], params=prev)
        return self.value_coef / 2 * sum(mean_churn(q[:, i], q0[:, i]) for i in range(q.shape[1]))

    def _actor_loss(self, prev: dict[str, torch.Tensor]) -> torch.Tensor:
        b = self._batch if self._batch is not None else self._replay_batch()
        self._batch = None
        if self.deterministic:
            return self._deterministic_actor_loss(b, prev)
        mean, log_std = self._calls["dist"](b["obs"])
        kl = clipped_kl(mean, log_std, *self._before("dist", b["obs"], params=prev))
        with torch.no_grad():  # the actor objective's scale (the authors' TD3+BC-like coefficient)
            std = log_std.exp()
            x = mean + std * torch.randn(mean.shape, generator=self.gen).to(mean.device)
            a = torch.tanh(x)
            log_pi = (-((x - mean) ** 2) / (2 * std**2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
            log_pi -= torch.log(1 - a**2 + 1e-6).sum(-1)
            q = self._calls["q"](b["obs"], a).min(dim=1).values
            scale = (q - entropy_coefficient(self.model) * log_pi).abs().mean()
        return self.policy_coef * scale * kl

    def _deterministic_actor_loss(self, b: dict[str, torch.Tensor], prev: dict[str, torch.Tensor]) -> torch.Tensor:
        """TD3: the churn of the actions, ``mean (a - a_before)^2`` (the KL of unit Gaussians up to
        a factor 2), scaled by the actor objective ``mean |min Q(s, a)|`` as for SAC.
        """
        a = self._calls["action"](b["obs"])
        churn = mean_churn(a, self._before("action", b["obs"], params=prev))
        with torch.no_grad():
            scale = self._calls["q"](b["obs"], a).min(dim=1).values.abs().mean()
        return self.policy_coef * scale * churn

    def _before_step(self, optimizer: torch.optim.Optimizer) -> None:
        i = self._index[id(optimizer)]
        mine = [(n, p) for n, p, opt in self.params if opt is optimizer]
        prev = self.prev.get(i)
        if prev is not None:
            with torch.enable_grad():
                if self.ppo:
                    loss = self._ppo_loss(prev)
                elif optimizer is self.model.critic.optimizer:
                    loss = self._critic_loss(prev)
                else:
                    loss = self._actor_loss(prev)
                grads = torch.autograd.grad(loss, [p for _, p in mine], allow_unused=True)
            for (_, p), g in zip(mine, grads, strict=True):
                if g is not None and p.grad is not None:
                    p.grad.add_(g)
        self.prev[i] = {n: p.detach().clone() for n, p in mine}  # theta^- of the next step

    # -- PPO's lambda --------------------------------------------------------
    def on_rollout_end(self) -> None:
        """After an update (before the next one): lambda from the recent losses (PPO)."""
        if self.last is None:
            return
        self.history = [*self.history, self.last][-self.window :]
        self.last = None
        self.updates += 1
        if self.updates >= self.warmup:
            policy_loss, churn = np.mean(self.history, axis=0)
            self.coef = self.target_scale * float(policy_loss) / (float(churn) + 1e-8)

    def state_dict(self) -> dict[str, Any]:
        return {
            "prev": self.prev,
            "rng": self.rng.bit_generator.state,
            "gen": self.gen.get_state(),
            "coef": self.coef,
            "history": list(self.history),
            "last": self.last,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prev = {int(i): {n: t.clone() for n, t in p.items()} for i, p in state["prev"].items()}
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["gen"])
        self.coef = float(state["coef"])
        self.history = [tuple(h) for h in state["history"]]
        self.last = None if state["last"] is None else tuple(state["last"])
        self.updates = int(state["updates"])
