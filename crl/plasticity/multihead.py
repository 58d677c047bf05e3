"""Task-conditioned networks: a shared trunk, an output head per task, optional per-task
adapters (:mod:`crl.plasticity.adapters`), selected by the one-hot task id that ends the
observation (:mod:`crl.plasticity.tasks`; an agent with ``task_id: true``).

* :class:`TaskTrunk`: the shared hidden layers. They read the observation WITHOUT its one-hot
  (the task conditions the network through its heads and adapters only) and return their
  features with the one-hot appended again, so SB3's heads (``action_net(latent_pi)``, ...) get
  the task id with their input and no SB3 code changes. With ``freeze`` the trunk stops training
  at the first update that sees a task other than task 0 (a buffer of the state dict, so it
  resumes exactly and loads with the model).
* :class:`TaskHeads`: one ``Linear`` head per task; each row is computed by its task's head
  only (:func:`crl.plasticity.tasks.by_task`), so the other heads neither change its output nor
  get gradients from it. The MLP walker (:mod:`crl.plasticity.nets`) sees every head as an
  output of the trunk's last hidden layer (:data:`crl.plasticity.nets.PARALLEL_HEADS`).
* :class:`TaskQNet`: a SAC critic (trunk + heads) on SB3's ``cat([observation, action])``.
* :class:`TaskActorCriticPolicy` (PPO: the action mean and the value per task; the
  state-independent log-std of SB3's Gaussian stays one parameter shared by the tasks) and
  :class:`TaskSACPolicy` (SAC: the actor's mean and log-std heads and both critics and their
  targets per task). SB3 policy subclasses: ``PPO.load`` / ``SAC.load`` load a saved model.

FastPPO's hand-written passes and its critic worker know plain MLPs only: they step aside for
these networks (a ``TaskHeads`` head is no ``Linear``, ``TaskMlpExtractor`` no known extractor),
and its updates go through autograd, as SB3's do.

Example:
    >>> import gymnasium as gym
    >>> from stable_baselines3 import PPO
    >>> from crl.drift import make_drifting
    >>> env = make_drifting("Pendulum-v1", drifts=[{"level_shift": {}}],
    ...                     schedule={"cyclic": {"change_every": 50, "cycle": [0, 1]}}, task_id=True)
    >>> model = PPO(TaskActorCriticPolicy, env, n_steps=64, policy_kwargs={"tasks": 2, "net_arch": [8]})
    >>> len(model.policy.action_net.heads), model.policy.mlp_extractor.policy_net.net[0].in_features
    (2, 3)
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.sac.policies import Actor
from torch import nn
from torch.nn import functional as F

from crl.plasticity.adapters import TaskLinear
from crl.plasticity.nets import PARALLEL_HEADS
from crl.plasticity.policies import ArchActorCriticPolicy, ArchSACPolicy, hidden_stack
from crl.plasticity.tasks import by_task, split_task

__all__ = [
    "TaskActorCriticPolicy",
    "TaskHeads",
    "TaskMlpExtractor",
    "TaskQNet",
    "TaskSACPolicy",
    "TaskTrunk",
    "task_trunk",
]


class TaskHeads(nn.Module):
    """One ``Linear(in_features, out_features)`` per task. Its input is the trunk's features
    with the one-hot task id at the end (what :class:`TaskTrunk` returns); row ``i`` is
    ``heads[task_i](features_i)``.

    Example:
        >>> heads = TaskHeads(2, 1, tasks=2)
        >>> x = torch.tensor([[1.0, 2.0, 0.0, 1.0], [1.0, 2.0, 1.0, 0.0]])  # task 1, task 0
        >>> out = heads(x)
        >>> torch.equal(out[0], heads.heads[1](x[0, :2])), torch.equal(out[1], heads.heads[0](x[1, :2]))
        (True, True)
    """

    def __init__(self, in_features: int, out_features: int, tasks: int) -> None:
        super().__init__()
        self.tasks = tasks
        self.heads = nn.ModuleList(nn.Linear(in_features, out_features) for _ in range(tasks))
        setattr(self, PARALLEL_HEADS, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, task = split_task(x, self.tasks)
        return by_task(task, features, lambda k, rows: self.heads[k](rows))


class TaskTrunk(nn.Module):
    """Shared hidden layers (``net``: ``TaskLinear [-> LayerNorm] -> activation [-> Dropout]``)
    on the observation without its last ``tasks`` entries (the one-hot task id); returns their
    features with the one-hot appended. ``TaskLinear`` layers get each row's task id (their
    adapters). With ``freeze``, the first training-mode forward pass with gradients that sees a
    task other than 0 sets the buffer ``frozen``: from then on the trunk's own weights
    (``Linear`` and ``LayerNorm``) are used detached, so they never change again.
    """

    def __init__(self, net: nn.Sequential, tasks: int, freeze: bool = False) -> None:
        super().__init__()
        self.net, self.tasks, self.freeze = net, tasks, freeze
        self.register_buffer("frozen", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, task = split_task(x, self.tasks)
        learning = self.training and torch.is_grad_enabled()
        if self.freeze and learning and not bool(self.frozen) and bool((task != 0).any()):
            self.frozen.fill_(True)
        frozen = bool(self.frozen)
        h = features
        for m in self.net:
            if isinstance(m, TaskLinear):
                h = m(h, task, frozen)
            elif frozen and isinstance(m, nn.LayerNorm):
                h = F.layer_norm(h, m.normalized_shape, m.weight.detach(), m.bias.detach(), m.eps)
            else:
                h = m(h)
        return torch.cat([h, x[..., -self.tasks :]], dim=-1)


def task_trunk(
    in_dim: int,
    sizes: list[int],
    activation_fn: type[nn.Module],
    tasks: int,
    rank: int = 0,
    freeze: bool = False,
    layer_norm: bool = False,
    dropout: float = 0.0,
) -> tuple[TaskTrunk, int]:
    """A :class:`TaskTrunk` of ``sizes`` hidden layers on ``in_dim`` features (the observation
    without its one-hot), every ``Linear`` a :class:`~crl.plasticity.adapters.TaskLinear` with
    rank-``rank`` adapters per task, and the width its heads read.

    Example:
        >>> trunk, width = task_trunk(3, [8, 8], nn.ReLU, tasks=2, rank=2)
        >>> [type(m).__name__ for m in trunk.net], width, trunk(torch.zeros(5, 5)).shape
        (['TaskLinear', 'ReLU', 'TaskLinear', 'ReLU'], 8, torch.Size([5, 10]))
    """
    layers, last = hidden_stack(in_dim, sizes, activation_fn, layer_norm, dropout)
    for i, m in enumerate(layers):
        if isinstance(m, nn.Linear):
            layers[i] = TaskLinear(m.in_features, m.out_features, tasks=tasks, rank=rank)
    return TaskTrunk(nn.Sequential(*layers), tasks, freeze), last


class TaskQNet(nn.Module):
    """A Q network on SB3's critic input ``cat([observation, action])`` whose observation ends
    with the one-hot task id: the trunk reads the observation's features and the action, the
    task's head gives the value.
    """

    def __init__(self, trunk: TaskTrunk, heads: TaskHeads, obs_dim: int) -> None:
        super().__init__()
        self.trunk, self.heads, self.obs_dim = trunk, heads, obs_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.trunk.tasks
        obs, action = x[..., : self.obs_dim], x[..., self.obs_dim :]
        return self.heads(self.trunk(torch.cat([obs[..., :-n], action, obs[..., -n:]], dim=-1)))


def _check_tasks(tasks: int, features_dim: int) -> None:
    if tasks < 1:
        raise ValueError(f"a task-conditioned policy needs tasks >= 1 (the one-hot task ids), got {tasks}")
    if features_dim <= tasks:
        raise ValueError(f"an observation of size {features_dim} has no features before its {tasks} task ids")


class TaskMlpExtractor(nn.Module):
    """SB3's ``MlpExtractor`` attributes with :class:`TaskTrunk` policy and value nets (their
    latents end with the one-hot task id; ``latent_dim_*`` is the trunks' width, what the heads read).
    """

    def __init__(self, feature_dim: int, net_arch: dict[str, list[int]], activation_fn: type[nn.Module], **kw: Any):
        super().__init__()
        tasks = kw["tasks"]
        _check_tasks(tasks, feature_dim)
        self.policy_net, self.latent_dim_pi = task_trunk(feature_dim - tasks, list(net_arch["pi"]), activation_fn, **kw)
        self.value_net, self.latent_dim_vf = task_trunk(feature_dim - tasks, list(net_arch["vf"]), activation_fn, **kw)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy_net(features), self.value_net(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.policy_net(features)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_net(features)


class TaskActorCriticPolicy(ArchActorCriticPolicy):
    """PPO's policy with a shared trunk per network (policy, value), an action-mean head and a
    value head per task, and optional per-task adapters (``adapter_rank``) and trunk freezing
    (``freeze_trunk``). The heads of each task are drawn as SB3 draws its heads (orthogonal, gains
    0.01 and 1, with ``ortho_init``).
    """

    def __init__(
        self, *args: Any, tasks: int = 0, adapter_rank: int = 0, freeze_trunk: bool = False, **kwargs: Any
    ) -> None:
        self.tasks, self.adapter_rank, self.freeze_trunk = tasks, adapter_rank, freeze_trunk
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        arch = self.net_arch if isinstance(self.net_arch, dict) else {"pi": self.net_arch, "vf": self.net_arch}
        self.mlp_extractor = TaskMlpExtractor(
            self.features_dim,
            {"pi": list(arch.get("pi", [])), "vf": list(arch.get("vf", []))},
            self.activation_fn,
            tasks=self.tasks,
            rank=self.adapter_rank,
            freeze=self.freeze_trunk,
            layer_norm=self.layer_norm,
            dropout=self.dropout,
        ).to(self.device)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        heads = {"action_net": 0.01, "value_net": 1.0}
        for name, gain in heads.items():
            single = getattr(self, name)
            multi = TaskHeads(single.in_features, single.out_features, self.tasks)
            if self.ortho_init:
                multi.apply(partial(self.init_weights, gain=gain))
            setattr(self, name, multi.to(self.device))
        # SB3's _build made the optimizer on the single heads: make it again on the task heads
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            "tasks": self.tasks,
            "adapter_rank": self.adapter_rank,
            "freeze_trunk": self.freeze_trunk,
        }


class TaskSACPolicy(ArchSACPolicy):
    """SAC's policy whose actor (mean and log-std heads) and critics (each a :class:`TaskQNet`;
    the target critics copy them) have a shared trunk, a head per task, and optional per-task
    adapters and trunk freezing.
    """

    def __init__(
        self, *args: Any, tasks: int = 0, adapter_rank: int = 0, freeze_trunk: bool = False, **kwargs: Any
    ) -> None:
        self.tasks, self.adapter_rank, self.freeze_trunk = tasks, adapter_rank, freeze_trunk
        super().__init__(*args, **kwargs)

    def _trunk(self, in_dim: int, sizes: list[int], activation_fn: type[nn.Module]) -> tuple[TaskTrunk, int]:
        return task_trunk(
            in_dim, sizes, activation_fn, self.tasks, self.adapter_rank, self.freeze_trunk, self.layer_norm
        )

    def make_actor(self, features_extractor: Any = None) -> Actor:
        actor = super().make_actor(features_extractor)
        _check_tasks(self.tasks, actor.features_dim)
        trunk, last = self._trunk(actor.features_dim - self.tasks, list(actor.net_arch), actor.activation_fn)
        action_dim = get_action_dim(self.action_space)
        actor.latent_pi = trunk
        actor.mu = TaskHeads(last, action_dim, self.tasks)
        actor.log_std = TaskHeads(last, action_dim, self.tasks)
        return actor.to(self.device)

    def make_critic(self, features_extractor: Any = None) -> ContinuousCritic:
        critic = super().make_critic(features_extractor)
        obs_dim = critic.features_extractor.features_dim
        _check_tasks(self.tasks, obs_dim)
        in_dim = obs_dim - self.tasks + get_action_dim(self.action_space)
        for idx in range(len(critic.q_networks)):
            trunk, last = self._trunk(in_dim, list(self.critic_kwargs["net_arch"]), self.critic_kwargs["activation_fn"])
            q_net = TaskQNet(trunk, TaskHeads(last, 1, self.tasks), obs_dim)
            critic.add_module(f"qf{idx}", q_net)
            critic.q_networks[idx] = q_net
        return critic.to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            "tasks": self.tasks,
            "adapter_rank": self.adapter_rank,
            "freeze_trunk": self.freeze_trunk,
        }
