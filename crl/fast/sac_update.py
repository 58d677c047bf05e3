"""One gradient step of stable-baselines3's SAC, by hand: the same losses and gradients, fewer operations.

SB3's ``SAC.train`` runs a gradient step through ``torch.distributions`` objects, module calls
and autograd's graph (about 60 small torch operations and three backward passes per step).
:class:`SacPlan` holds the actor and the critics of an SB3 ``SACPolicy`` whose networks are
plain MLPs (``Linear`` + ``ReLU``/``Tanh``, a ``Flatten`` features extractor) and
:func:`gradient_step` computes, with the same random draws in the same order:

- the actor's squashed Gaussian actions and log-probabilities (with SB3's ``1e-6`` in the
  tanh correction) for the batch's observations and next observations;
- the entropy coefficient's loss and step (automatic entropy tuning), or the fixed coefficient;
- the soft Bellman target from the target critics, the critics' loss and its gradients;
- the actor's loss ``mean(alpha * log_prob - min_k Q_k(s, a_pi))`` and its gradients through
  the (updated) critics' input, the tanh squashing and the clamped log-std head;

writing the gradients into the parameters' ``.grad`` and stepping the same optimizers
(:func:`crl.fast.adam.step`: their hooks run), then the Polyak update of the target critics as
one ``torch._foreach`` pair. The matrix products use torch's own kernels (:func:`linear`).
Numbers equal SB3's up to float rounding (tested).

One difference is visible after a step: SB3's actor-loss backward also leaves the actor loss's
gradient with respect to the critics' parameters in the critics' ``.grad`` (added to the
critic loss's, unused: the next step zeroes it). Here the critics' ``.grad`` holds the critic
loss's gradient, the one their optimizer stepped with.

Feature-capture hooks (:func:`crl.plasticity.nets.capture_features`) are called as the module
calls of SB3's step would call them: the actor on the observations, the critics on the
replayed actions and then on the actor's actions; never in the no-grad target computation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor
from torch import nn
from torch.nn import functional as F

from crl.fast.mlp import MlpPlan, accumulate_grad, global_module_hooks
from crl.plasticity.nets import activation_name

__all__ = [
    "Batch",
    "Chain",
    "SQUASH_EPS",
    "SacPlan",
    "SquashedActor",
    "StepOut",
    "action_grad_rows",
    "actor_loss_grads",
    "actor_step",
    "call_forward_hooks",
    "critic_grads",
    "critic_loss",
    "critic_step",
    "entropy_step",
    "grad_off",
    "gradient_step",
    "head_grads",
    "min_rows",
    "module_parameters",
    "polyak",
    "polyak_update",
    "q_values",
    "replay_rows",
    "sample_batch",
    "set_grads",
    "signature",
    "soft_target",
    "stepper_in_mode",
    "step_actor",
    "unsupported",
    "weight_grad",
]

#: SB3's ``SquashedDiagGaussianDistribution`` epsilon in ``log(1 - tanh(u)^2 + eps)``.
SQUASH_EPS = 1e-6
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def linear(x: th.Tensor, w: th.Tensor, b: th.Tensor | None, relu: bool = False) -> th.Tensor:
    """``x @ w.T + b`` (then ReLU) with torch's own kernels (``addmm``/``mm``; call under ``no_grad``).

    Not oneDNN (as :func:`crl.fast.mlp.onednn_linear_preferred` may choose for PPO): on the
    2-core AVX2 EPYC these SAC products were measured on, oneDNN took 1.1-1.3x as long for
    256-row products, 2-20x for the thin ones of SAC's heads and inputs, and 60x for a column
    slice of a weight; on a 2-core AVX-512 Xeon 1.05-1.3x for the 256x256 products and 1.5-4.4x
    for the thin ones. AVX-512 CPUs of other vendors are not measured for SAC.
    """
    out = F.linear(x, w, b)  # ATen's addmm(b, x, w.t()) (mm without a bias), one call from Python
    return out.relu_() if relu else out


_GRAD_OFF = contextlib.nullcontext()


def grad_off() -> contextlib.AbstractContextManager[Any]:
    """``torch.no_grad()`` where autograd is on, else a shared do-nothing context.

    A gradient step enters ``torch.no_grad()`` once (:func:`gradient_step`) and its ~60 helper
    calls then skip the ~1.6 us of a ``no_grad`` context each (one-off timing on the 2-core
    Xeon: ~0.2 us here); called on their own, the helpers still run without autograd.

    Example:
        >>> with grad_off():
        ...     th.is_grad_enabled()
        False
        >>> with th.no_grad(), grad_off():
        ...     th.is_grad_enabled()
        False
    """
    return th.no_grad() if th.is_grad_enabled() else _GRAD_OFF


def stepper_in_mode(step: Callable[[th.optim.Optimizer], None], mode: bool) -> Callable[[th.optim.Optimizer], None]:
    """``step`` run with autograd's mode set to ``mode`` (restored after): inside a gradient
    step run under ``no_grad``, the optimizers' hooks still see the mode SB3's ``train`` would
    give them (the caller's, autograd on in SB3), in case a hook uses autograd.

    Example:
        >>> seen = []
        >>> with th.no_grad():
        ...     stepper_in_mode(lambda opt: seen.append(th.is_grad_enabled()), True)(None)
        ...     th.is_grad_enabled()
        False
        >>> seen
        [True]
    """

    def run(opt: th.optim.Optimizer) -> None:
        with th.set_grad_enabled(mode):
            step(opt)

    return run


class Batch(NamedTuple):
    """A replay batch as SB3's ``ReplayBufferSamples`` holds it (``discounts``: gamma, or per row)."""

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | float


class StepOut(NamedTuple):
    """A gradient step's logged values (tensors: no sync per step)."""

    critic_loss: th.Tensor
    actor_loss: th.Tensor
    ent_coef: th.Tensor
    ent_coef_loss: th.Tensor | None


def sample_batch(buffer: Any, batch_size: int, gamma: float, into: Batch | None = None) -> Batch:
    """``buffer.sample(batch_size)`` of SB3's plain ``ReplayBuffer`` (not memory-optimised, no
    ``VecNormalize``): the same two draws from NumPy's global generator, the same rows, gathered
    with ``np.take`` on flat views of the buffer's arrays (faster than their fancy indexing: a
    Hopper batch 64 us against 81, one-off timing on the 2-core Xeon). ``into``: float32 tensors
    of the batch's shapes (a worker's shared buffers, so that the batch needs no copy there) to
    write the rows into where the buffer's actions are float32 (SB3's rewards and dones always
    are; observations become float32 either way, as SB3's ``preprocess_obs`` makes them); else
    new tensors, as without ``into``.

    Example:
        >>> from gymnasium import spaces
        >>> from stable_baselines3.common.buffers import ReplayBuffer
        >>> buf = ReplayBuffer(10, spaces.Box(-1, 1, (2,)), spaces.Box(-1, 1, (1,)))
        >>> for i in range(3):
        ...     buf.add(np.full(2, i), np.full(2, i + 1), np.zeros(1), np.ones(1), np.zeros(1), [{}])
        >>> b = sample_batch(buf, 4, 0.99)
        >>> b.observations.shape, b.rewards.shape, b.discounts
        (torch.Size([4, 2]), torch.Size([4, 1]), 0.99)
        >>> out = Batch(th.zeros(4, 2), th.zeros(4, 1), th.zeros(4, 2), th.zeros(4, 1), th.zeros(4, 1), 0.0)
        >>> sample_batch(buf, 4, 0.99, into=out).observations is out.observations
        True
    """
    upper = buffer.buffer_size if buffer.full else buffer.pos
    inds = np.random.randint(0, upper, size=batch_size)
    envs = np.random.randint(0, high=buffer.n_envs, size=(batch_size,))
    flat = inds * buffer.n_envs + envs
    obs, next_obs, actions = (
        replay_rows(a, flat, inds, envs) for a in (buffer.observations, buffer.next_observations, buffer.actions)
    )
    dones = replay_rows(buffer.dones, flat, inds, envs) * (1 - replay_rows(buffer.timeouts, flat, inds, envs))
    rewards = replay_rows(buffer.rewards, flat, inds, envs)
    if into is None or buffer.actions.dtype != np.float32:
        return Batch(
            th.from_numpy(obs).float(),  # SB3's preprocess_obs: .float()
            th.from_numpy(actions),
            th.from_numpy(next_obs).float(),
            th.from_numpy(dones.reshape(-1, 1)),
            th.from_numpy(rewards.reshape(-1, 1)),
            gamma,
        )
    for t, x in zip(into[:5], (obs, actions, next_obs, dones, rewards), strict=True):
        t.numpy()[...] = x.reshape(t.shape)  # float64 observations rounded as .float() rounds them
    return into._replace(discounts=gamma)


def replay_rows(a: np.ndarray, flat: np.ndarray, inds: np.ndarray, envs: np.ndarray) -> np.ndarray:
    """``a[inds, envs]`` (a replay array's rows ``inds`` of envs ``envs``), as ``np.take`` of the
    rows ``flat = inds * n_envs + envs`` of ``a``'s flat view where ``a`` is contiguous.

    Example:
        >>> a = np.arange(24.0).reshape(4, 2, 3)
        >>> inds, envs = np.array([3, 0, 3]), np.array([1, 0, 0])
        >>> bool((replay_rows(a, inds * 2 + envs, inds, envs) == a[inds, envs]).all())
        True
    """
    if not a.flags.c_contiguous:
        return a[inds, envs]
    return np.take(a.reshape(a.shape[0] * a.shape[1], *a.shape[2:]), flat, axis=0)


def call_forward_hooks(acts: list[nn.Module], outs: list[th.Tensor]) -> None:
    """Call the forward hooks of the activations ``acts`` with their outputs ``outs``, as the
    module calls of SB3's training step call them: with autograd on (crl's feature capture
    records only then), also inside a hand step run under ``no_grad``.

    Example:
        >>> act, seen = nn.ReLU(), []
        >>> _ = act.register_forward_hook(lambda m, i, o: seen.append(th.is_grad_enabled()))
        >>> with th.no_grad():
        ...     call_forward_hooks([act], [th.zeros(1)])
        >>> seen
        [True]
    """
    hooked = [(act, out) for act, out in zip(acts, outs, strict=True) if act._forward_hooks]
    if hooked:
        with th.enable_grad():
            for act, out in hooked:
                for hook in list(act._forward_hooks.values()):
                    hook(act, (), out)


@dataclass
class Chain:
    """Hidden layers (``Linear`` then ``ReLU``/``Tanh``) of a plain MLP, by hand, with the
    forward hooks (crl's feature capture) of its activations called as module calls would.
    """

    linears: list[nn.Linear]
    kinds: list[str]
    acts: list[nn.Module]

    @classmethod
    def of(cls, mods: list[nn.Module]) -> Chain:
        return cls(list(mods[0::2]), [str(activation_name(a)) for a in mods[1::2]], list(mods[1::2]))  # type: ignore[arg-type]

    def params(self) -> list[th.Tensor]:
        return [p for lin in self.linears for p in (lin.weight, lin.bias)]

    def forward(self, x: th.Tensor, hooks: bool) -> list[th.Tensor]:
        """The input of every layer and the chain's output, last (hooks called when ``hooks``)."""
        out = [x]
        with grad_off():
            for lin, kind in zip(self.linears, self.kinds, strict=True):
                h = linear(out[-1], lin.weight, lin.bias, relu=kind == "relu")
                out.append(h.tanh_() if kind == "tanh" else h)
        if hooks:
            call_forward_hooks(self.acts, out[1:])
        return out

    def prefix(self, n: int) -> Chain:
        """The first ``n`` layers as a chain of their own (the same modules)."""
        return Chain(self.linears[:n], self.kinds[:n], self.acts[:n])

    def act_backward(self, k: int, g: th.Tensor, out: th.Tensor) -> th.Tensor:
        """``g`` (the gradient at layer ``k``'s output ``out``) through its activation."""
        with grad_off():
            if self.kinds[k] == "relu":
                return th.ops.aten.threshold_backward(g, out, 0)
            return th.ops.aten.tanh_backward(g, out)

    def backward(self, outs: list[th.Tensor], g: th.Tensor, params: bool = True) -> tuple[list[th.Tensor], th.Tensor]:
        """The gradients of ``(chain(x) * g).sum()``: per parameter (in :meth:`params`' order,
        empty unless ``params``) and with respect to the activation's input of the first layer
        (``g`` through the first ``Linear`` is left to the caller).
        """
        grads: list[th.Tensor] = []
        with grad_off():
            for k in range(len(self.linears) - 1, -1, -1):
                g = self.act_backward(k, g, outs[k + 1])
                if params:
                    grads[:0] = [weight_grad(g, outs[k]), g.sum(0)]
                if k > 0:
                    g = g @ self.linears[k].weight
        return grads, g


def weight_grad(g: th.Tensor, x: th.Tensor) -> th.Tensor:
    """A ``Linear`` layer's weight gradient ``g.T @ x`` from the gradient ``g`` at its output and
    its input ``x`` (rows: the batch). For a layer narrower at the input than at the output
    (e.g. a first layer) it is computed as ``(x.T @ g).T``: on the 2-core AVX2 EPYC,
    ``g.T @ x`` took 167 us for a 256x256 gradient and an 11-column input, ``(x.T @ g).T`` 35 us.

    Example:
        >>> g, x = th.randn(8, 5), th.randn(8, 2)
        >>> th.allclose(weight_grad(g, x), g.T @ x)
        True
    """
    with grad_off():
        if x.shape[1] < g.shape[1]:
            return (x.t() @ g).t().contiguous()
        return g.t() @ x


def _head_grads(g: th.Tensor, h: th.Tensor) -> list[th.Tensor]:
    with grad_off():
        return [g.t() @ h, g.sum(0)]


def _plain_mlp(seq: nn.Module, head: nn.Module | None) -> str | None:
    """Why ``seq`` (then ``head``) is no plain MLP the hand passes cover (``None`` when it is)."""
    if not isinstance(seq, nn.Sequential):
        return f"{type(seq).__name__} is not a Sequential"
    mods = list(seq)
    if head is None:
        if not mods:
            return "an empty network"
        mods, head = mods[:-1], mods[-1]
    return MlpPlan.unsupported(nn.Sequential(*mods), head)


def unsupported(policy: Any) -> str | None:
    """Why :class:`SacPlan` does not cover ``policy`` (``None`` when it does): SB3's SAC
    ``Actor`` and ``ContinuousCritic`` of plain MLPs on flat observations, without gSDE and
    without hooks other than crl's feature capture on the activations.
    """
    actor, critic, target = policy.actor, policy.critic, policy.critic_target
    if type(actor) is not Actor or actor.use_sde or type(actor.log_std) is not nn.Linear:
        return "the actor is not SB3's plain Actor (gSDE or another class)"
    if type(critic) is not ContinuousCritic or type(target) is not ContinuousCritic:
        return "the critic is not SB3's ContinuousCritic"
    if global_module_hooks():
        return "global module hooks are registered"
    fes = (actor.features_extractor, critic.features_extractor, target.features_extractor)
    for m in (policy, actor, critic, target, *fes):
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return f"{type(m).__name__} has hooks"
    if any(type(fe) is not FlattenExtractor for fe in fes):
        return "a features extractor is not a FlattenExtractor"
    for seq, head in [(actor.latent_pi, actor.mu), (actor.latent_pi, actor.log_std)]:
        if why := _plain_mlp(seq, head):
            return f"actor: {why}"
    for q in [*critic.q_networks, *target.q_networks]:
        if why := _plain_mlp(q, None):
            return f"critic: {why}"
    for net in (critic, target):
        inside = {id(p) for q in net.q_networks for p in q.parameters()}
        if any(id(p) not in inside for p in net.parameters()):
            return "the critic has parameters outside its q_networks"
    return None


def signature(modules: list[nn.Module]) -> tuple[Any, ...]:
    """What :meth:`SacPlan.matches` compares: per module, its children, its parameters' ids and
    its hooks (a layer or parameter swapped, a hook added or removed), and whether global hooks
    are set. Parameters enter by id (``==`` on two tensors compares their values): whoever keeps a
    signature keeps those parameters alive too (:func:`module_parameters`), so that no new
    parameter takes an old one's id.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> before = signature(list(net.modules()))
        >>> kept = module_parameters(list(net.modules()))
        >>> net[0].weight = nn.Parameter(net[0].weight.detach().clone())  # the same values
        >>> signature(list(net.modules())) == before
        False
    """
    return (
        global_module_hooks(),
        tuple(
            (
                tuple(m._modules.values()),
                tuple(map(id, m._parameters.values())),
                tuple(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(m._backward_pre_hooks),
            )
            for m in modules
        ),
    )


def module_parameters(modules: list[nn.Module]) -> list[th.Tensor]:
    """Every parameter held directly by one of ``modules`` (what :func:`signature` identifies by id)."""
    return [p for m in modules for p in m._parameters.values() if p is not None]


class SacPlan:
    """The hand passes of a SAC policy's actor, critics and target critics (see the module
    docstring). Build it with :meth:`of`; :meth:`matches` says whether the policy still has
    these modules and hooks (an intervention may swap a layer or add a hook).
    """

    def __init__(self, policy: Any) -> None:
        actor = policy.actor
        self.policy = policy
        self.actor = Chain.of(list(actor.latent_pi))
        self.mu, self.log_std = actor.mu, actor.log_std
        self.pi = SquashedActor(self.actor, self.mu, self.log_std)
        self.critics = [(Chain.of(list(q)[:-1]), q[-1]) for q in policy.critic.q_networks]
        self.targets = [(Chain.of(list(q)[:-1]), q[-1]) for q in policy.critic_target.q_networks]
        self.modules = [m for net in (actor, policy.critic) for m in net.modules()]
        self.critic_params = list(policy.critic.parameters())
        self.target_params = list(policy.critic_target.parameters())
        self.obs_dim = self.critics[0][0].linears[0].in_features - actor.mu.out_features
        self.all_modules = list(policy.modules())
        self._signature = self._hooks()
        self._pinned = module_parameters(self.all_modules)  # their ids are in the signature

    @classmethod
    def of(cls, policy: Any) -> SacPlan | None:
        """A plan for ``policy``, or ``None`` where :func:`unsupported` gives a reason."""
        return None if unsupported(policy) is not None else cls(policy)

    def _hooks(self) -> tuple[Any, ...]:
        return signature(self.all_modules)

    def matches(self, policy: Any) -> bool:
        """Whether ``policy`` still has this plan's modules, parameters and hooks."""
        return policy is self.policy and self._hooks() == self._signature

    def set_training(self, mode: bool) -> None:
        """``policy.set_training_mode(mode)`` for these plain modules (flags only, as ``Module.train`` sets them)."""
        self.policy.__dict__["training"] = mode
        for m in self.modules:
            m.__dict__["training"] = mode

    def head_weights(self) -> tuple[th.Tensor, th.Tensor]:
        """The mean and log-std heads side by side (:meth:`SquashedActor.head_weights`)."""
        return self.pi.head_weights()

    def heads(self, h: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """:meth:`SquashedActor.heads` of the actor's latent ``h``."""
        return self.pi.heads(h)

    def actor_act(self, obs: th.Tensor) -> th.Tensor:
        """SB3's ``actor(obs)`` (a squashed action, sampled), without hooks: what ``predict`` acts with."""
        return self.pi.act(obs)

    def actor_sample(self, obs: th.Tensor, hooks: bool, eps: th.Tensor | None = None) -> dict[str, th.Tensor]:
        """SB3's ``actor.action_log_prob(obs)`` (:meth:`SquashedActor.sample`, noise ``eps`` or drawn)."""
        return self.pi.sample(obs, hooks, eps)


@dataclass
class SquashedActor:
    """SB3's SAC ``Actor`` by hand: the latent ``chain``, then the ``mu`` and ``log_std`` heads
    of a Gaussian squashed by ``tanh`` (the log-std clamped to SB3's bounds).
    """

    chain: Chain
    mu: nn.Linear
    log_std: nn.Linear

    def params(self) -> list[th.Tensor]:
        """The chain's parameters, then the heads' weights and biases (the actor's optimizer order)."""
        return [*self.chain.params(), self.mu.weight, self.mu.bias, self.log_std.weight, self.log_std.bias]

    def head_weights(self) -> tuple[th.Tensor, th.Tensor]:
        """The mean and log-std heads side by side (one product for both)."""
        with grad_off():
            return th.cat([self.mu.weight, self.log_std.weight]), th.cat([self.mu.bias, self.log_std.bias])

    def heads(self, h: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """The mean actions and the (unclamped) log-stds of the actor's latent ``h``, and the
        heads' weights side by side (:meth:`head_weights`).
        """
        w, b = self.head_weights()
        with grad_off():
            out = linear(h, w, b)
        n = self.mu.out_features
        return out[:, :n], out[:, n:], w

    def act(self, obs: th.Tensor) -> th.Tensor:
        """SB3's ``actor(obs)`` (a squashed action, sampled), without hooks: each head its own
        product as in SB3 (one or a few rows: the side-by-side heads of :meth:`heads` pay for
        their concatenation here), and the standard deviation ``exp(log_std)`` without SB3's
        product with ones (the same numbers).
        """
        h = self.chain.forward(obs, hooks=False)[-1]
        with grad_off():
            mean = linear(h, self.mu.weight, self.mu.bias)
            log_std = th.clamp(linear(h, self.log_std.weight, self.log_std.bias), LOG_STD_MIN, LOG_STD_MAX)
            return th.tanh(mean + th.empty(mean.shape).normal_() * log_std.exp())

    def sample(self, obs: th.Tensor, hooks: bool, eps: th.Tensor | None = None) -> dict[str, th.Tensor]:
        """SB3's ``actor.action_log_prob(obs)``: squashed actions and log-probabilities, with
        what the actor's backward needs. The Gaussian noise is ``eps``, or (``None``) the same
        draw from torch's generator as ``rsample``: ``torch.empty(mean.shape).normal_()``.
        """
        outs = self.chain.forward(obs, hooks)
        mean, raw_log_std, w_heads = self.heads(outs[-1])
        with grad_off():
            log_std = th.clamp(raw_log_std, LOG_STD_MIN, LOG_STD_MAX)
            std = log_std.exp()  # SB3's ones_like(mean) * exp(log_std): the same numbers
            if eps is None:
                eps = th.empty(mean.shape).normal_()
            u = mean + eps * std
            a = th.tanh(u)
            log_prob = (-((u - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI).sum(dim=1)
            log_prob -= th.sum(th.log(1 - a**2 + SQUASH_EPS), dim=1)
        return {
            "outs": outs,
            "w_heads": w_heads,
            "raw_log_std": raw_log_std,
            "std": std,
            "eps": eps,
            "a": a,
            "log_prob": log_prob,
        }


def q_values(
    pairs: list[tuple[Chain, nn.Linear]], x: th.Tensor, hooks: bool
) -> tuple[list[th.Tensor], list[list[th.Tensor]]]:
    """Each critic's Q-values of ``x`` (observations and actions side by side) and its layers' inputs."""
    qs, saved = [], []
    for chain, head in pairs:
        outs = chain.forward(x, hooks)
        with grad_off():
            qs.append(linear(outs[-1], head.weight, head.bias))
        saved.append(outs)
    return qs, saved


def set_grads(opt: th.optim.Optimizer, params: list[th.Tensor], grads: list[th.Tensor]) -> None:
    """``opt.zero_grad()`` then the gradients added as ``backward()`` would add them."""
    if type(opt).zero_grad is th.optim.Optimizer.zero_grad:
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = None
    else:
        opt.zero_grad()
    for p, g in zip(params, grads, strict=True):
        accumulate_grad(p, g)


def entropy_step(model: Any, log_prob: th.Tensor, step: Any) -> tuple[th.Tensor, th.Tensor | None]:
    """The entropy coefficient of this step, and (automatic tuning) its loss, after its
    optimizer's step (``step(opt)``).
    """
    log_ent_coef, opt = model.log_ent_coef, model.ent_coef_optimizer
    if opt is None or log_ent_coef is None:
        return model.ent_coef_tensor, None
    ent_coef = th.exp(log_ent_coef.detach())
    with grad_off():
        err = log_prob + model.target_entropy
        loss = -(log_ent_coef * err).mean()
        grad = (err * (-1.0 / err.numel())).sum().reshape(log_ent_coef.shape)
    set_grads(opt, [log_ent_coef], [grad])
    step(opt)
    return ent_coef, loss


def soft_target(next_qs: th.Tensor, next_log_prob: th.Tensor, ent_coef: th.Tensor, batch: Batch) -> th.Tensor:
    """The soft Bellman target of ``batch`` from the target critics' Q-values ``next_qs``
    (rows x critics) and the log-probabilities of the actor's next actions.
    """
    with grad_off():
        next_q, _ = th.min(next_qs, dim=1, keepdim=True)
        next_q = next_q - ent_coef * next_log_prob.reshape(-1, 1)
        return batch.rewards + (1 - batch.dones) * batch.discounts * next_q


def critic_grads(
    chain: Chain, head: nn.Linear, q: th.Tensor, outs: list[th.Tensor], target: th.Tensor
) -> list[th.Tensor]:
    """One critic's gradients of its half-MSE loss ``0.5 * mean((q - target)^2)`` (in :meth:`Chain.params`
    order, then the head's weight and bias), from its Q-values ``q`` and its layers' inputs ``outs``.
    """
    with grad_off():
        g = (q - target) * (1.0 / target.shape[0])  # d(0.5 * mse)/dq
        g_h = g * head.weight  # g @ W for a one-unit head
        body, _ = chain.backward(outs, g_h)
        return [*body, *_head_grads(g, outs[-1])]


def critic_loss(qs: list[th.Tensor], target: th.Tensor) -> th.Tensor:
    """The critics' loss ``0.5 * sum_k mse(q_k, target)``, as SB3 sums it."""
    with grad_off():
        return 0.5 * sum(((q - target) ** 2).mean() for q in qs)  # type: ignore[return-value]


def critic_step(plan: SacPlan, model: Any, batch: Batch, ent_coef: th.Tensor, step: Any) -> th.Tensor:
    """The soft Bellman target, the critics' loss and their optimizer's step; returns the loss."""
    with grad_off():
        nxt = plan.actor_sample(batch.next_observations, hooks=False)
        next_qs, _ = q_values(plan.targets, th.cat([batch.next_observations, nxt["a"]], dim=1), hooks=False)
        target = soft_target(th.cat(next_qs, dim=1), nxt["log_prob"], ent_coef, batch)
    qs, saved = q_values(plan.critics, th.cat([batch.observations, batch.actions], dim=1), hooks=True)
    loss = critic_loss(qs, target)
    grads: list[th.Tensor] = []
    for (chain, head), q, outs in zip(plan.critics, qs, saved, strict=True):
        grads += critic_grads(chain, head, q, outs, target)
    opt = model.critic.optimizer
    set_grads(opt, plan.critic_params, grads)
    step(opt)
    return loss


def action_grad_rows(chain: Chain, head: nn.Linear, outs: list[th.Tensor], rows: th.Tensor, obs_dim: int) -> th.Tensor:
    """The gradient of one critic's Q-value with respect to the action input, on the rows
    ``rows`` of its layers' inputs ``outs`` (the rows whose minimum is this critic's).
    """
    with grad_off():
        g_h = head.weight.expand(len(rows), -1)  # d(min_q)/d(h) on these rows
        _, g_first = chain.backward([o.index_select(0, rows) for o in outs], g_h, params=False)
        return (chain.linears[0].weight[:, obs_dim:].t() @ g_first.t()).t()  # faster than g @ W[:, od:]


def min_rows(qs: th.Tensor) -> tuple[th.Tensor, list[th.Tensor]]:
    """``min_k Q_k`` of the Q-values ``qs`` (rows x critics) and, per critic, the rows whose
    minimum it is (torch's ``min`` over a dimension sends a row's gradient to the critic it picked).
    """
    with grad_off():
        min_q, idx = th.min(qs, dim=1, keepdim=True)
        return min_q, [(idx[:, 0] == k).nonzero()[:, 0] for k in range(qs.shape[1])]


def _action_grad(plan: SacPlan, obs: th.Tensor, a: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """``min_k Q_k(obs, a)`` under the (updated) critics, and its gradient with respect to ``a``."""
    qs, saved = q_values(plan.critics, th.cat([obs, a], dim=1), hooks=True)
    min_q, rows = min_rows(th.cat(qs, dim=1))
    with grad_off():
        g_a = th.empty_like(a)
        for (chain, head), outs, r in zip(plan.critics, saved, rows, strict=True):
            g_a[r] = action_grad_rows(chain, head, outs, r, plan.obs_dim)
    return min_q, g_a


def actor_loss_grads(
    cur: dict[str, th.Tensor], min_q: th.Tensor, dq_da: th.Tensor, ent_coef: th.Tensor
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """The actor's loss ``mean(alpha * log_prob - min_k Q_k)`` of the sample ``cur``
    (:meth:`SquashedActor.sample`), its gradient with respect to the heads' outputs (mean and
    log-std side by side) and with respect to the latent, from ``min_k Q_k`` of the actions and
    its gradient ``dq_da`` with respect to them (through the tanh squashing, the Gaussian's
    reparameterisation and the log-std clamp).
    """
    with grad_off():
        log_prob, a, eps, std = cur["log_prob"].reshape(-1, 1), cur["a"], cur["eps"], cur["std"]
        n = a.shape[0]
        loss = (ent_coef * log_prob - min_q).mean()
        c = ent_coef / n  # d(loss)/d(log_prob) per row
        one_minus = 1 - a**2
        # d(loss)/du through a = tanh(u) and through the tanh correction -log(1 - a^2 + eps)
        g_u = dq_da * (-1.0 / n) * one_minus + c * (2 * a * one_minus / (one_minus + SQUASH_EPS))
        g_mean = g_u  # the Gaussian term's own d/d(mean) cancels: u - mean = eps * std
        raw = cur["raw_log_std"]
        inside = (raw >= LOG_STD_MIN) & (raw <= LOG_STD_MAX)  # clamp passes the gradient at its bounds
        g_log_std = (g_u * eps * std - c) * inside  # u = mean + eps * exp(log_std); -log(std) term
        g_heads = th.cat([g_mean, g_log_std], dim=1)
        return loss, g_heads, g_heads @ cur["w_heads"]


def head_grads(g_heads: th.Tensor, h: th.Tensor, n_act: int) -> list[th.Tensor]:
    """The mean head's and the log-std head's weight and bias gradients from ``g_heads`` (the
    gradient at both heads' outputs side by side) and the latent ``h``.
    """
    w_grad, b_grad = _head_grads(g_heads, h)
    return [w_grad[:n_act], b_grad[:n_act], w_grad[n_act:], b_grad[n_act:]]


def step_actor(plan: SacPlan, model: Any, grads: list[th.Tensor], step: Any) -> None:
    """The actor's gradients (in :meth:`SquashedActor.params` order) set, and its optimizer stepped."""
    opt = model.actor.optimizer
    set_grads(opt, plan.pi.params(), grads)
    step(opt)


def actor_step(
    plan: SacPlan,
    model: Any,
    obs: th.Tensor,
    cur: dict[str, th.Tensor],
    ent_coef: th.Tensor,
    step: Any,
) -> th.Tensor:
    """The actor's loss and its optimizer's step (gradients through the critics' action input,
    :func:`actor_loss_grads`, and the actor's layers); returns the loss.
    """
    min_q, dq_da = _action_grad(plan, obs, cur["a"])
    loss, g_heads, g_h = actor_loss_grads(cur, min_q, dq_da, ent_coef)
    body, _ = plan.actor.backward(cur["outs"], g_h)
    step_actor(plan, model, [*body, *head_grads(g_heads, cur["outs"][-1], plan.mu.out_features)], step)
    return loss


def polyak(targets: list[th.Tensor], sources: list[th.Tensor], tau: float) -> None:
    """SB3's ``polyak_update`` (``target = (1 - tau) * target + tau * source``, the same two
    operations per tensor) as one ``torch._foreach`` pair; the factor ``1 - tau`` goes in as a
    tensor of the targets' dtype (the same product; the CPU's ``_foreach_mul_`` wraps a Python
    number once per tensor, 2x slower).
    """
    with grad_off():
        th._foreach_mul_(targets, th.tensor(1 - tau, dtype=targets[0].dtype))
        th._foreach_add_(targets, sources, alpha=tau)


def polyak_update(plan: SacPlan, tau: float) -> None:
    """:func:`polyak` of the target critics towards the critics."""
    polyak(plan.target_params, plan.critic_params, tau)


def gradient_step(plan: SacPlan, model: Any, batch: Batch, polyak: bool, step: Any) -> StepOut:
    """One gradient step of SB3's ``SAC.train`` on ``batch`` (see the module docstring);
    ``step(opt)`` steps an optimizer (in the caller's autograd mode, :func:`stepper_in_mode`),
    ``polyak``: update the target critics after it.
    """
    step = stepper_in_mode(step, th.is_grad_enabled())
    with th.no_grad():  # once for the whole step (grad_off)
        cur = plan.actor_sample(batch.observations, hooks=True)
        ent_coef, ent_loss = entropy_step(model, cur["log_prob"].reshape(-1, 1), step)
        critic_loss = critic_step(plan, model, batch, ent_coef, step)
        actor_loss = actor_step(plan, model, batch.observations, cur, ent_coef, step)
        if polyak:
            polyak_update(plan, model.tau)
    return StepOut(critic_loss, actor_loss, ent_coef, ent_loss)
