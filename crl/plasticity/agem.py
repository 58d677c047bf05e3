"""A-GEM (Chaudhry et al. 2019, "Efficient lifelong learning with A-GEM") for PPO, SAC and TD3.

At every known regime change, a seeded sample of the ending regime's transitions goes to an
episodic memory (``samples`` per regime, at most ``capacity`` in all: when full, every regime
keeps an equal share). Before every optimizer step, a batch from the memory gives the
reference gradient ``g_ref`` of the agent's own loss on past regimes; when the step's gradient
``g`` points against it (``g . g_ref < 0``), it is projected onto the plane orthogonal to it:

    g <- g - (g . g_ref / g_ref . g_ref) g_ref

so that, to first order, the step does not increase the loss on the memory.

Losses on the memory: PPO's clipped surrogate, value and entropy terms with the advantages
and returns stored from the regime's last complete rollout (clip range: the schedule's value
at the start of training); SAC's critic loss (twin soft Q targets with the target critics) for
the critic optimizer and the actor loss for the actor optimizer. Continual World's SAC
projects actor and critic gradients jointly (one dot product over both); SB3's SAC steps the
critic before the actor has a gradient, so crl projects each optimizer's gradient on its own.
TD3 the same way, with SB3 TD3's losses: the critics' summed squared errors against the
clipped double-Q target of the target actor's smoothed action (Gaussian noise of
``target_policy_noise``, clipped at ``target_noise_clip``, drawn from torch's generator as in
SB3's update), and ``-Q_1(s, mu(s))`` for the actor (whose steps come every ``policy_delay``).
Memory: SAC and TD3 sample the transitions stored since the last regime change (Continual World
samples its replay buffer, which it empties at each task change: the same set); PPO samples
the last complete rollout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch.nn import functional as F

from crl.errors import check_int
from crl.plasticity.base import register_intervention
from crl.plasticity.regularisers import ParamIntervention

__all__ = [
    "AGEM",
    "EpisodicMemory",
    "project",
    "ppo_loss",
    "rollout_rows",
    "sac_actor_loss",
    "sac_critic_loss",
    "td3_actor_loss",
    "td3_critic_loss",
]


def rows_since(rb: Any, num_timesteps: int, start: int) -> np.ndarray:
    """The rows of replay buffer ``rb`` (oldest first) written since step ``start`` (``num_timesteps``
    now; one row holds a transition of each of the ``n_envs`` envs), at most those it holds.

    Example:
        >>> from types import SimpleNamespace
        >>> rb = SimpleNamespace(buffer_size=5, full=True, pos=1, n_envs=2)
        >>> rows_since(rb, num_timesteps=20, start=14)  # 3 rows, wrapping past the end
        array([3, 4, 0])
    """
    stored = rb.buffer_size if rb.full else rb.pos
    rows = min(stored, (num_timesteps - start) // rb.n_envs)
    return np.arange(rb.pos - rows, rb.pos) % rb.buffer_size


def rollout_rows(buf: Any) -> dict[str, np.ndarray]:
    """A copy of a PPO rollout buffer's rows (``obs, actions, log_prob, advantages, returns``),
    what :func:`ppo_loss` reads.
    """
    n = buf.pos * buf.n_envs
    return {
        "obs": buf.observations[: buf.pos].reshape(n, *buf.obs_shape).copy(),
        "actions": buf.actions[: buf.pos].reshape(n, -1).copy(),
        "log_prob": buf.log_probs[: buf.pos].reshape(n).copy(),
        "advantages": buf.advantages[: buf.pos].reshape(n).copy(),
        "returns": buf.returns[: buf.pos].reshape(n).copy(),
    }


def project(grads: list[torch.Tensor], ref: list[torch.Tensor]) -> tuple[list[torch.Tensor], bool]:
    """A-GEM's projection of ``grads`` against ``ref`` (both lists of same-shaped tensors, seen
    as one vector). Returns the new gradients and whether they were projected.

    Example:
        >>> g, r = [torch.tensor([1.0, -2.0])], [torch.tensor([0.0, 1.0])]
        >>> new, projected = project(g, r)  # g . r = -2 < 0: remove the component along r
        >>> new[0], projected
        (tensor([1., 0.]), True)
        >>> project([torch.tensor([1.0, 2.0])], r)[1]  # g . r = 2 >= 0: unchanged
        False
    """
    dot = sum((g * r).sum() for g, r in zip(grads, ref, strict=True))
    norm = sum((r * r).sum() for r in ref)
    if float(dot) >= 0.0 or float(norm) == 0.0:
        return grads, False
    scale = dot / norm
    return [g - scale * r for g, r in zip(grads, ref, strict=True)], True


class EpisodicMemory:
    """Per-regime stores of transitions (dicts of equal-length arrays), bounded in all.

    Example:
        >>> mem = EpisodicMemory(per_regime=3, capacity=4, seed=0)
        >>> mem.add({"x": np.arange(10.0)})
        >>> mem.add({"x": np.arange(10.0, 20.0)})
        >>> len(mem), [len(s["x"]) for s in mem.stores]  # 2 regimes share the capacity of 4
        (4, [2, 2])
        >>> sorted(mem.sample(3)["x"].shape)
        [3]
    """

    def __init__(self, per_regime: int, capacity: int, seed: int = 0) -> None:
        self.per_regime, self.capacity = per_regime, capacity
        self.stores: list[dict[str, np.ndarray]] = []
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def __len__(self) -> int:
        return sum(len(next(iter(s.values()))) for s in self.stores)

    def add(self, data: dict[str, np.ndarray]) -> None:
        """Keep a uniform sample of ``per_regime`` rows of ``data`` as a new regime's store."""
        n = len(next(iter(data.values())))
        if n == 0:
            return
        keep = np.sort(self.rng.choice(n, size=min(n, self.per_regime), replace=False))
        self.stores.append({k: np.array(v[keep], copy=True) for k, v in data.items()})
        share = self.capacity // len(self.stores)
        self.stores = [{k: v[:share] for k, v in s.items()} for s in self.stores]

    def sample(self, batch: int) -> dict[str, np.ndarray]:
        """``batch`` rows drawn uniformly (with replacement) from all stores."""
        rows = self.rng.integers(0, len(self), size=batch)
        return {k: np.concatenate([s[k] for s in self.stores])[rows] for k in self.stores[0]}

    def state_dict(self) -> dict[str, Any]:
        return {"stores": self.stores, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stores = [{k: np.array(v, copy=True) for k, v in s.items()} for s in state["stores"]]
        self.rng.bit_generator.state = state["rng"]


def _tensors(model: Any, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=model.device) for k, v in batch.items()}


def ppo_loss(model: Any, batch: dict[str, np.ndarray]) -> torch.Tensor:
    """SB3 PPO's loss on stored ``obs, actions, log_prob, advantages, returns``."""
    b = _tensors(model, batch)
    actions = b["actions"]
    if isinstance(model.action_space, spaces.Discrete):
        actions = actions.long().flatten()
    values, log_prob, entropy = model.policy.evaluate_actions(b["obs"], actions)
    adv = b["advantages"]
    if model.normalize_advantage and len(adv) > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = torch.exp(log_prob - b["log_prob"])
    clip = float(model.clip_range(1.0))
    policy_loss = -torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
    value_loss = F.mse_loss(b["returns"], values.flatten())
    entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
    return policy_loss + model.ent_coef * entropy_loss + model.vf_coef * value_loss


def entropy_coefficient(model: Any) -> torch.Tensor:
    """SAC's entropy coefficient alpha (learned or fixed), without gradient."""
    log_coef = getattr(model, "log_ent_coef", None)
    return torch.exp(log_coef.detach()) if log_coef is not None else model.ent_coef_tensor


def sac_critic_loss(model: Any, batch: dict[str, np.ndarray]) -> torch.Tensor:
    """SB3 SAC's critic loss on stored ``obs, actions, rewards, next_obs, dones``."""
    b = _tensors(model, batch)
    with torch.no_grad():
        next_actions, next_log_prob = model.actor.action_log_prob(b["next_obs"])
        next_q = torch.cat(model.critic_target(b["next_obs"], next_actions), dim=1).min(dim=1, keepdim=True)[0]
        next_q = next_q - entropy_coefficient(model) * next_log_prob.reshape(-1, 1)
        target = b["rewards"] + (1 - b["dones"]) * model.gamma * next_q
    return 0.5 * sum(F.mse_loss(q, target) for q in model.critic(b["obs"], b["actions"]))


def sac_actor_loss(model: Any, batch: dict[str, np.ndarray]) -> torch.Tensor:
    """SB3 SAC's actor loss on stored ``obs``."""
    obs = _tensors(model, batch)["obs"]
    actions, log_prob = model.actor.action_log_prob(obs)
    q = torch.cat(model.critic(obs, actions), dim=1).min(dim=1, keepdim=True)[0]
    return (entropy_coefficient(model) * log_prob.reshape(-1, 1) - q).mean()


def td3_critic_loss(model: Any, batch: dict[str, np.ndarray]) -> torch.Tensor:
    """SB3 TD3's critic loss on stored ``obs, actions, rewards, next_obs, dones``."""
    b = _tensors(model, batch)
    with torch.no_grad():
        noise = b["actions"].clone().normal_(0, model.target_policy_noise)
        noise = noise.clamp(-model.target_noise_clip, model.target_noise_clip)
        next_actions = (model.actor_target(b["next_obs"]) + noise).clamp(-1, 1)
        next_q = torch.cat(model.critic_target(b["next_obs"], next_actions), dim=1).min(dim=1, keepdim=True)[0]
        target = b["rewards"] + (1 - b["dones"]) * model.gamma * next_q
    return sum(F.mse_loss(q, target) for q in model.critic(b["obs"], b["actions"]))


def td3_actor_loss(model: Any, batch: dict[str, np.ndarray]) -> torch.Tensor:
    """SB3 TD3's actor loss on stored ``obs``: ``-mean Q_1(s, mu(s))``."""
    obs = _tensors(model, batch)["obs"]
    return -model.critic.q1_forward(obs, model.actor(obs)).mean()


@register_intervention
class AGEM(ParamIntervention):
    """A-GEM: gradients projected so as not to increase the loss on past regimes' transitions
    (see the module docstring). Defaults: Continual World's SAC (10,000 transitions per task,
    batch 128).

    Args:
        samples: transitions kept per regime.
        batch_size: memory batch of each reference gradient.
        capacity: most transitions kept in all (regimes share it equally).
        seed: the memory's sampling stream (a run derives it from its seed).

    Example:
        >>> AGEM(samples=100, batch_size=8).memory.per_regime
        100
    """

    name = "agem"
    needs_boundaries = True

    def __init__(self, samples: int = 10_000, batch_size: int = 128, capacity: int = 100_000, seed: int = 0) -> None:
        self.samples = check_int("samples", samples, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.memory = EpisodicMemory(self.samples, check_int("capacity", capacity, minimum=1), seed=int(seed))
        self.projections = 0
        self._rollout: dict[str, np.ndarray] | None = None
        self._regime_start = 0

    def _setup(self) -> None:
        if not (hasattr(self.model, "replay_buffer") or hasattr(self.model, "rollout_buffer")):
            raise TypeError("agem needs an SB3 PPO, SAC or TD3 model (its loss gives the reference gradient)")
        self._regime_start = int(self.model.num_timesteps)

    # -- the memory ----------------------------------------------------------
    def on_rollout_end(self) -> None:
        buf = getattr(self.model, "rollout_buffer", None)
        if buf is not None:
            self._rollout = rollout_rows(buf)

    def _regime_transitions(self) -> dict[str, np.ndarray]:
        rb = self.model.replay_buffer
        idx = rows_since(rb, int(self.model.num_timesteps), self._regime_start)
        rows = len(idx)
        next_obs = (
            rb.next_observations[idx] if not rb.optimize_memory_usage else rb.observations[(idx + 1) % rb.buffer_size]
        )
        dones = rb.dones[idx] * (1 - rb.timeouts[idx]) if rb.handle_timeout_termination else rb.dones[idx]
        n = rows * rb.n_envs
        return {
            "obs": rb.observations[idx].reshape(n, *rb.obs_shape),
            "actions": rb.actions[idx].reshape(n, rb.action_dim),
            "rewards": rb.rewards[idx].reshape(n, 1),
            "next_obs": next_obs.reshape(n, *rb.obs_shape),
            "dones": dones.reshape(n, 1).astype(np.float32),
        }

    def _on_regime_change(self, regime: int) -> None:
        if hasattr(self.model, "replay_buffer"):
            self.memory.add(self._regime_transitions())
        elif self._rollout is not None:
            self.memory.add(self._rollout)
        self._regime_start = int(self.model.num_timesteps)

    # -- the projection ------------------------------------------------------
    def reference_loss(self, optimizer: torch.optim.Optimizer, batch: dict[str, np.ndarray]) -> torch.Tensor:
        """The loss whose gradient is ``optimizer``'s reference on a memory ``batch``."""
        m = self.model
        if not hasattr(m, "replay_buffer"):
            return ppo_loss(m, batch)
        if hasattr(m, "actor_target"):  # TD3
            return td3_actor_loss(m, batch) if optimizer is m.actor.optimizer else td3_critic_loss(m, batch)
        return sac_actor_loss(m, batch) if optimizer is m.actor.optimizer else sac_critic_loss(m, batch)

    def _before_step(self, optimizer: torch.optim.Optimizer) -> None:
        if len(self.memory) == 0:
            return
        params = [p for _, p, opt in self.params if opt is optimizer and p.grad is not None]
        if not params:
            return
        batch = self.memory.sample(self.batch_size)
        with torch.enable_grad():
            ref = torch.autograd.grad(self.reference_loss(optimizer, batch), params, allow_unused=True)
        ref = [torch.zeros_like(p) if r is None else r for p, r in zip(params, ref, strict=True)]
        new, projected = project([p.grad for p in params], ref)
        if projected:
            for p, g in zip(params, new, strict=True):
                p.grad.copy_(g)
            self.projections += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "memory": self.memory.state_dict(),
            "projections": self.projections,
            "rollout": self._rollout,
            "regime_start": self._regime_start,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.projections = int(state["projections"])
        self._rollout = state["rollout"]
        self._regime_start = int(state["regime_start"])
