"""Progressive networks (Rusu et al. 2016, "Progressive Neural Networks", arXiv:1606.04671):
one column per task, lateral connections from the frozen columns of earlier tasks.

Every network of the agent (PPO's policy and value nets; SAC's actor, both critics and their
targets) is a :class:`ProgressiveNet`: ``network.tasks`` columns, each an MLP of the agent's
hidden sizes with its own output layer. Column ``k`` reads the observation's features WITHOUT
the one-hot task id, and, into every layer after its first (its output layer included), the
hidden activations of columns ``0 .. k-1`` at the layer below through the paper's non-linear
adapter (its eq. 2): ``U sigma(V (alpha * h_prev))``, ``h_prev`` the earlier columns' activations
concatenated (detached: no gradient reaches an earlier column), ``alpha`` a learned scalar drawn
from U(0, 0.1) (the paper: "initialized by a random small value"), ``V`` a projection onto as
many dimensions as one column's layer below, ``U`` into the layer. The paper's equations have
no biases; here ``V`` and ``U`` have them (crl initialises every ``Linear`` with its bias).
Laterals only go from earlier to later columns.

Columns are created up front for ``network.tasks`` tasks, so SB3's optimizer, saving and loading
see one fixed set of parameters. The column of a sample is the one of its task id
(:func:`crl.plasticity.tasks.task_index`): in rollouts, evaluations on past regimes and a model
loaded with ``PPO.load``/``SAC.load`` alike. Training follows the paper: a column is trained
while its task is in force and frozen from the first time another task comes, for good (a
revisited task acts with its frozen column and trains nothing). :class:`ProgressiveColumns`, an
intervention that :func:`crl.agents.build_model` attaches to every progressive agent, tells the
networks the task in force after every rollout (the task id of the newest stored observation);
a frozen column's parameters stop requiring gradients and lose theirs, so Adam (and any torch
optimizer, which skips parameters without a gradient) never moves them again: bit-equal. The
state (which columns are frozen, which is in force) is in the networks' buffers, hence in
checkpoints and saved models.

A PPO policy's column ends with its action mean and its own state-independent log-std (per task,
like the rest of the column); a SAC actor's column outputs the mean and log-std of its squashed
Gaussian. Parameter count: :func:`parameter_count` (stated in the presets' descriptions).

Example:
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = ProgressiveNet(3 + 2, [4, 4], 1, n_tasks=2, activation_fn=nn.ReLU)
    >>> x = torch.tensor([[0.1, 0.2, 0.3, 1.0, 0.0], [0.1, 0.2, 0.3, 0.0, 1.0]])
    >>> net(x).shape, sum(p.numel() for p in net.parameters()) == parameter_count(3, [4, 4], 1, 2)
    (torch.Size([2, 1]), True)
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.sac.policies import Actor, SACPolicy
from torch import nn

from crl.plasticity.base import Intervention
from crl.plasticity.nets import mark_lateral
from crl.plasticity.tasks import task_index

__all__ = [
    "ALPHA_INIT",
    "Adapter",
    "Column",
    "ProgressiveActorCriticPolicy",
    "ProgressiveColumns",
    "ProgressiveExtractor",
    "ProgressiveNet",
    "ProgressiveSACPolicy",
    "Slice",
    "parameter_count",
]

#: The lateral scale ``alpha`` of an adapter starts uniform in ``[0, ALPHA_INIT)`` ("a random
#: small value", Rusu et al. 2016, sec. 2; the paper gives no number: this one is crl's).
ALPHA_INIT = 0.1


def parameter_count(features: int, sizes: list[int], out: int, tasks: int, log_std: bool = False) -> int:
    """The parameters of a :class:`ProgressiveNet` (``features``: the input without the one-hot).

    With ``n_0 = features``, ``n_1 .. n_L = sizes`` and ``n_{L+1} = out``, one column has
    ``C = sum_{i=1}^{L+1} (n_{i-1} n_i + n_i)`` (+ ``out`` for a per-task log-std) and column ``k``
    adds one adapter into each layer ``i = 2 .. L+1``:
    ``1 + k n_{i-1}^2 + n_{i-1} + n_{i-1} n_i + n_i``. For ``T`` tasks:
    ``T C + (T-1) sum_i (1 + n_{i-1} + n_{i-1} n_i + n_i) + T(T-1)/2 sum_i n_{i-1}^2 + 1`` (the
    last 1: :attr:`ProgressiveNet.anchor`). The adapters grow quadratically with ``T``.

    Example:
        >>> parameter_count(17, [256, 256], 1, 1)  # one column: the plain MLP, plus the anchor
        70658
        >>> parameter_count(17, [256, 256], 1, 2) - 2 * 70657 - 1  # the adapters of column 1
        197635
    """
    widths = [features, *sizes, out]
    column = sum(a * b + b for a, b in pairwise(widths)) + (out if log_std else 0)
    pairs = list(pairwise(widths[1:]))  # (n_{i-1}, n_i) for i = 2 .. L+1
    linear = sum(1 + a + a * b + b for a, b in pairs)
    square = sum(a * a for a, _ in pairs)
    n = max(tasks, 1)
    return n * column + (n - 1) * linear + n * (n - 1) // 2 * square + 1


class Adapter(nn.Module):
    """The non-linear lateral of Rusu et al. (2016, eq. 2) into one layer of column ``k``:
    ``U act(V (alpha * h))``, ``h`` the activations of columns ``0 .. k-1`` at the layer below
    (``k * width`` features), ``V``: ``k * width -> width``, ``U``: ``width -> out``.
    """

    def __init__(self, width: int, columns: int, out: int, activation_fn: type[nn.Module]) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.rand(()) * ALPHA_INIT)
        self.v = nn.Linear(columns * width, width)
        self.act = activation_fn()
        self.u = nn.Linear(width, out)
        mark_lateral(self)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.u(self.act(self.v(self.alpha * h)))


class Column(nn.Module):
    """Column ``index``: ``body`` (``Linear -> activation`` per hidden size), ``out`` (its output
    layer), ``adapters`` (the laterals from the earlier columns into hidden layers 2..L and the
    output; none for column 0) and, for a PPO policy, its own state-independent ``log_std``.
    """

    def __init__(
        self,
        index: int,
        features: int,
        sizes: list[int],
        out: int,
        activation_fn: type[nn.Module],
        log_std_init: float | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip([features, *sizes[:-1]], sizes, strict=True):
            layers += [nn.Linear(a, b), activation_fn()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(sizes[-1], out)
        widths = [*sizes, out]
        self.adapters = nn.ModuleList(
            Adapter(widths[i - 1], index, widths[i], activation_fn) for i in range(1, len(widths)) if index > 0
        )
        self.log_std = None if log_std_init is None else nn.Parameter(torch.full((out,), float(log_std_init)))

    def forward(self, x: torch.Tensor, earlier: list[list[torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The column's output on features ``x`` and its hidden activations, given the hidden
        activations of every earlier column (``earlier[j][i]``: column ``j``, layer ``i``).
        """
        hidden: list[torch.Tensor] = []
        h = x
        for i in range(len(self.body) // 2):
            z = self.body[2 * i](h)
            if i > 0 and earlier:
                z = z + self.adapters[i - 1](torch.cat([e[i - 1].detach() for e in earlier], dim=-1))
            h = self.body[2 * i + 1](z)
            hidden.append(h)
        y = self.out(h)
        if earlier:
            y = y + self.adapters[-1](torch.cat([e[-1].detach() for e in earlier], dim=-1))
        if self.log_std is not None:
            y = torch.cat([y, self.log_std.expand_as(y)], dim=-1)
        return y, hidden


def _sync_after_load(module: nn.Module, incompatible: Any) -> None:
    module.sync()  # type: ignore[operator]


class ProgressiveNet(nn.Module):
    """``max(n_tasks, 1)`` :class:`Column` s; a sample's output is its task's column's.

    Args:
        in_dim: the input size, one-hot task id included.
        sizes: the hidden sizes of every column.
        out: the output size of a column (without the log-std).
        n_tasks: the length of the one-hot (0: no task id, one column).
        activation_fn: the hidden activation.
        task_start: where the one-hot starts in the input (default: at its end; SAC's critics
            read ``[observation, action]``, the one-hot ends the observation).
        log_std_init: give every column a state-independent log-std of this initial value,
            appended to its output (PPO's Gaussian policy).
    """

    #: :func:`crl.plasticity.nets.find_mlps` gives one view per column of a module that says so.
    crl_columns = True

    def __init__(
        self,
        in_dim: int,
        sizes: list[int],
        out: int,
        n_tasks: int,
        activation_fn: type[nn.Module],
        task_start: int | None = None,
        log_std_init: float | None = None,
    ) -> None:
        super().__init__()
        self.n_tasks = int(n_tasks)
        self.task_start = in_dim - self.n_tasks if task_start is None else int(task_start)
        features = in_dim - self.n_tasks
        self.columns = nn.ModuleList(
            Column(k, features, list(sizes), out, activation_fn, log_std_init) for k in range(max(self.n_tasks, 1))
        )
        self.anchor = nn.Parameter(torch.zeros(()))
        """A zero that every training-mode output adds times 0: a batch that no trainable column
        sees (a revisited task, old tasks' replay) still has a graph; its gradient is always 0."""
        self.register_buffer("frozen", torch.zeros(len(self.columns), dtype=torch.bool))
        self.register_buffer("active", torch.tensor(-1))
        self.register_load_state_dict_post_hook(_sync_after_load)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(features, task ids)`` of input ``x`` (ids ``None`` without a one-hot)."""
        if self.n_tasks == 0:
            return x, None
        s, t = self.task_start, self.task_start + self.n_tasks
        ids = task_index(x[..., :t], self.n_tasks)
        return (x[..., :s] if t == x.shape[-1] else torch.cat([x[..., :s], x[..., t:]], dim=-1)), ids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, ids = self.split(x)
        last = 0 if ids is None else int(ids.max())
        outs: list[torch.Tensor] = []
        earlier: list[list[torch.Tensor]] = []
        for k in range(last + 1):  # columns after the batch's last task are not needed
            y, hidden = self.columns[k](feats, earlier)
            outs.append(y)
            earlier.append(hidden)
        if ids is None or int(ids.min()) == last:
            out = outs[last]
        else:
            flat = ids.reshape(-1)
            out = torch.stack(outs)[flat, torch.arange(flat.numel())].reshape(*ids.shape, -1)
        if torch.is_grad_enabled() and self.anchor.requires_grad:
            out = out + 0.0 * self.anchor
        return out

    def begin_task(self, task: int) -> None:
        """Task ``task`` is in force: the column in force until now, if another, is frozen for good."""
        if not 0 <= task < len(self.columns):
            raise ValueError(f"task {task} has no column (the network has {len(self.columns)})")
        if int(self.active) != task:
            if int(self.active) >= 0:
                self.frozen[int(self.active)] = True
            self.active.fill_(task)
        self.sync()

    def sync(self) -> None:
        """Make the frozen columns' parameters require no gradient (and drop theirs)."""
        for k, column in enumerate(self.columns):
            trainable = not bool(self.frozen[k])
            for p in column.parameters():
                p.requires_grad_(trainable)
                if not trainable:
                    p.grad = None


class Slice(nn.Module):
    """``x[..., start:stop]``: SAC's ``mu`` and ``log_std`` heads of a progressive actor (its
    columns output both).
    """

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.start : self.stop]


class ProgressiveExtractor(nn.Module):
    """PPO's ``mlp_extractor`` of progressive nets: ``policy_net`` outputs the action mean (and the
    column's log-std), ``value_net`` the value; the policy's ``action_net``/``value_net`` are
    identities.
    """

    def __init__(
        self,
        feature_dim: int,
        net_arch: dict[str, list[int]],
        activation_fn: type[nn.Module],
        n_tasks: int,
        pi_out: int,
        log_std_init: float | None,
    ) -> None:
        super().__init__()
        self.policy_net = ProgressiveNet(
            feature_dim, net_arch["pi"], pi_out, n_tasks, activation_fn, log_std_init=log_std_init
        )
        self.value_net = ProgressiveNet(feature_dim, net_arch["vf"], 1, n_tasks, activation_fn)
        self.latent_dim_pi = pi_out * (2 if log_std_init is not None else 1)
        self.latent_dim_vf = 1

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy_net(features), self.value_net(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.policy_net(features)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_net(features)


class ProgressiveActorCriticPolicy(ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` with progressive policy and value nets (``n_tasks`` columns).
    Gaussian (Box) or categorical (Discrete) actions; no gSDE.
    """

    def __init__(self, *args: Any, n_tasks: int = 0, **kwargs: Any) -> None:
        self.n_tasks = int(n_tasks)
        if kwargs.get("use_sde"):
            raise ValueError("progressive networks do not support gSDE (use_sde)")
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        arch = self.net_arch if isinstance(self.net_arch, dict) else {"pi": self.net_arch, "vf": self.net_arch}
        gaussian = isinstance(self.action_dist, DiagGaussianDistribution)
        if not gaussian and not isinstance(self.action_dist, CategoricalDistribution):
            raise ValueError(f"progressive networks support Box and Discrete actions, not {self.action_space}")
        out = get_action_dim(self.action_space) if gaussian else int(self.action_space.n)  # type: ignore[attr-defined]
        self.mlp_extractor = ProgressiveExtractor(
            self.features_dim, arch, self.activation_fn, self.n_tasks, out, self.log_std_init if gaussian else None
        ).to(self.device)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        # the columns end with their own output layers (and log-std): SB3's heads are identities
        self.action_net, self.value_net = nn.Identity(), nn.Identity()
        if hasattr(self, "log_std"):
            del self.log_std
        if self.ortho_init:  # SB3's gains of its heads, for every column's output layer
            ext = self.mlp_extractor
            for net, gain in ((ext.policy_net, 0.01), (ext.value_net, 1.0)):
                for column in net.columns:
                    column.out.apply(lambda m, g=gain: BasePolicy.init_weights(m, gain=g))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor) -> Any:
        if isinstance(self.action_dist, DiagGaussianDistribution):
            mean, log_std = latent_pi.chunk(2, dim=-1)
            return self.action_dist.proba_distribution(mean, log_std)
        return self.action_dist.proba_distribution(action_logits=latent_pi)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "n_tasks": self.n_tasks}


class ProgressiveSACPolicy(SACPolicy):
    """SB3's ``SACPolicy`` whose actor's ``latent_pi`` and every critic's ``qf<i>`` are
    progressive nets (``n_tasks`` columns; targets too, as copies of the critics). An actor's
    column outputs the mean and log-std (``mu`` and ``log_std`` are :class:`Slice` s). No gSDE.
    """

    def __init__(self, *args: Any, n_tasks: int = 0, **kwargs: Any) -> None:
        self.n_tasks = int(n_tasks)
        if kwargs.get("use_sde"):
            raise ValueError("progressive networks do not support gSDE (use_sde)")
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: Any = None) -> Actor:
        actor = super().make_actor(features_extractor)
        a = get_action_dim(self.action_space)
        sizes = list(actor.net_arch)
        actor.latent_pi = ProgressiveNet(actor.features_dim, sizes, 2 * a, self.n_tasks, actor.activation_fn)
        actor.mu, actor.log_std = Slice(0, a), Slice(a, 2 * a)
        return actor.to(self.device)

    def make_critic(self, features_extractor: Any = None) -> ContinuousCritic:
        critic = super().make_critic(features_extractor)
        kw = self.critic_kwargs
        in_dim = critic.q_networks[0][0].in_features  # features (one-hot last) + actions
        start = in_dim - get_action_dim(self.action_space) - self.n_tasks
        for idx in range(len(critic.q_networks)):
            q_net = ProgressiveNet(in_dim, list(kw["net_arch"]), 1, self.n_tasks, kw["activation_fn"], task_start=start)
            critic.add_module(f"qf{idx}", q_net)
            critic.q_networks[idx] = q_net
        return critic.to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "n_tasks": self.n_tasks}


def newest_task(model: Any, n_tasks: int) -> int | None:
    """The task id of the newest observation a model stored (PPO: its rollout buffer; SAC: its
    replay buffer), first env; ``None`` before the first one.
    """
    buffer = getattr(model, "rollout_buffer", None)
    if buffer is None:
        buffer = getattr(model, "replay_buffer", None)
    if buffer is None or (buffer.pos == 0 and not buffer.full):
        return None
    obs = np.asarray(buffer.observations[(buffer.pos - 1) % buffer.buffer_size][0])
    return int(np.argmax(obs[-n_tasks:]))


class ProgressiveColumns(Intervention):
    """Tells every :class:`ProgressiveNet` of a model the task in force after each rollout
    (:func:`newest_task`), which freezes the column of the task before (see the module docstring).
    Attached by :func:`crl.agents.build_model` to agents with ``network.progressive``; its state
    is in the networks' buffers.
    """

    name = "progressive_columns"

    def _on_attach(self, model: Any) -> None:
        self.nets = [m for m in model.policy.modules() if isinstance(m, ProgressiveNet)]

    def on_rollout_end(self) -> None:
        n_tasks = self.nets[0].n_tasks if self.nets else 0
        task = newest_task(self.model, n_tasks) if n_tasks else 0
        if task is not None:
            for net in self.nets:
                net.begin_task(task)
