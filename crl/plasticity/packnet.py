"""PackNet (Mallya & Lazebnik 2018) as Continual World adapts it to SAC (Wolczyk et al. 2021), for
SAC and PPO: each task owns a share of the actor's weights.

The network (``network.packnet: true``, :class:`PackNetActorCriticPolicy`,
:class:`PackNetSACPolicy`): every ``Linear`` of the actor (PPO: the policy net and ``action_net``;
SAC: ``latent_pi``, ``mu`` and ``log_std``) becomes a :class:`PackNetLinear`, whose ``owner``
buffer holds the task that owns each weight (all 0 at first). The actor's first layer reads the
task id ``k`` of every observation from its one-hot end (:func:`crl.plasticity.tasks.task_index`;
the trunk reads the whole observation, one-hot included, as in Continual World), and every layer of
the actor computes with the weights owned by tasks ``<= k``, the others taken as 0. A batch mixing
task ids is computed group by group. The masks are buffers of the policy, so checkpoints and a
model loaded with ``PPO.load``/``SAC.load`` act with them.

The intervention (``packnet``, boundary-aware, :class:`PackNet`): when a task ``t`` ends for the
first time (a regime change; tasks are numbered by first appearance, so ``t`` is the newest), and
unless ``t`` is the last of the ``n`` task ids:

1. prune: in every layer, the fraction ``(n - t - 1) / (n - t)`` of the weights ``t`` owns with
   the smallest magnitudes (ties: the first in memory order) is set to 0 and given to task
   ``t + 1`` (Continual World's schedule: each of the ``n`` tasks ends with ``1 / n`` of the
   weights);
2. reset the optimizers' state, retrain ``retrain_steps`` gradient steps in which only the weights
   ``t`` kept move (SAC: SB3's own ``train``, samples drawn from the whole replay buffer; PPO: PPO's
   loss on minibatches of ``batch_size`` from the task's last complete rollout), reset again;
3. freeze: the weights ``t`` owns never change again, nor do the actor's biases, LayerNorm
   parameters and PPO's state-independent ``log_std`` once the first task is packed (Continual
   World trains them on the first task only).

At every optimizer step the gradients of the actor's weights not owned by the task in force (or of
all of them when that task is packed: a revisited task's actor is fixed) are zeroed before the step,
and those weights are put back to their values before the step after it, so no optimizer state
(Adam's moments, weight decay) moves them: frozen weights stay bit-equal. The critic (SAC's Q
networks, PPO's value net) is shared and trained as usual (Continual World's default,
``regularize_critic: False``). The last task id is never packed: it keeps the weights left.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from crl.errors import ConfigError, check_int
from crl.plasticity.agem import ppo_loss, rollout_rows
from crl.plasticity.base import register_intervention
from crl.plasticity.policies import ArchActorCriticPolicy, ArchSACPolicy
from crl.plasticity.regularisers import ParamIntervention
from crl.plasticity.tasks import task_index

__all__ = [
    "TaskView",
    "PackNetLinear",
    "PackNetActorCriticPolicy",
    "PackNetSACPolicy",
    "PackNet",
    "packnet_layers",
    "packnet_parameters",
    "prune_fraction",
    "shares",
]


class TaskView:
    """The task ids of the batch a PackNet network computes now, shared by its layers: the first
    layer sets them from its input's one-hot end, the next ones read them.
    """

    def __init__(self, n_tasks: int) -> None:
        self.n_tasks = n_tasks
        self.ids: torch.Tensor | None = None


class PackNetLinear(nn.Linear):
    """A ``Linear`` layer whose weights belong to tasks (``owner``), computing each row of its
    input with the weights of tasks ``<= `` the row's task id (see the module docstring).

    Example:
        >>> layer = PackNetLinear.of(nn.Linear(3, 1), TaskView(2), reads_task=True)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]])), layer.bias.zero_()
        ...     _ = layer.owner.copy_(torch.tensor([[0, 1, 0]]))
        >>> x = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])  # task 0, then task 1 (one-hot end)
        >>> layer(x).flatten().tolist()  # task 0 does not see the weight task 1 owns
        [1.0, 4.0]
    """

    owner: torch.Tensor

    @classmethod
    def of(cls, linear: nn.Linear, view: TaskView, reads_task: bool = False) -> PackNetLinear:
        """A PackNet layer holding ``linear``'s own parameters (the same ``Parameter`` objects, so an
        optimizer built on them still updates them; no random draw).
        """
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight, layer.bias = linear.weight, linear.bias
        layer.register_buffer("owner", torch.zeros(linear.weight.shape, dtype=torch.int16, device=linear.weight.device))
        layer.view, layer.reads_task = view, reads_task
        layer._top: int | None = None
        return layer

    @property
    def top(self) -> int:
        """The largest owner (cached until the owners change)."""
        if self._top is None:
            self._top = int(self.owner.max())
        return self._top

    def owners_changed(self) -> None:
        """Forget the cached :attr:`top` (after ``owner`` was written)."""
        self._top = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.owners_changed()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reads_task:
            self.view.ids = task_index(x, self.view.n_tasks).reshape(-1)
        ids = self.view.ids
        if ids is None or ids.numel() != x.reshape(-1, x.shape[-1]).shape[0]:
            raise RuntimeError("PackNetLinear: no task ids for this batch (the actor's first layer reads them)")
        if ids.numel() == 0 or int(ids.min()) >= self.top:
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1])
        out = flat.new_empty(flat.shape[0], self.out_features)
        for k in torch.unique(ids).tolist():
            rows = (ids == k).nonzero().flatten()
            weight = self.weight if k >= self.top else torch.where(self.owner <= k, self.weight, 0.0)
            out[rows] = F.linear(flat[rows], weight, self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)


def _convert(parent: nn.Module, path: str, view: TaskView, first: bool) -> bool:
    """Make every ``nn.Linear`` at ``parent.<path>`` (a module or a Sequential) a PackNet layer;
    returns whether the first one is yet to come.
    """
    *up, last = path.split(".")
    for name in up:
        parent = getattr(parent, name)
    module = getattr(parent, last)
    if type(module) is nn.Linear:
        setattr(parent, last, PackNetLinear.of(module, view, reads_task=first))
        return False
    for name, child in list(module.named_children()):
        if type(child) is nn.Linear:
            setattr(module, name, PackNetLinear.of(child, view, reads_task=first))
            first = False
    return first


def _make_packnet(root: nn.Module, paths: list[str], n_tasks: int) -> None:
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
        raise ValueError(
            f"a PackNet network needs the task id in its observations (task_id: true), got packnet_tasks={n_tasks!r}"
        )
    view, first = TaskView(n_tasks), True
    for path in paths:
        first = _convert(root, path, view, first)


#: The actor's modules of each PackNet policy, in the order they compute.
ACTOR_PATHS = {
    "ppo": ["mlp_extractor.policy_net", "action_net"],
    "sac": ["actor.latent_pi", "actor.mu", "actor.log_std"],
}


class PackNetActorCriticPolicy(ArchActorCriticPolicy):
    """PPO's policy (:class:`~crl.plasticity.policies.ArchActorCriticPolicy`, so LayerNorm, CReLU and
    DFF combine) whose actor's ``Linear`` layers are :class:`PackNetLinear` for ``packnet_tasks`` tasks.

    Example:
        >>> import gymnasium as gym
        >>> from stable_baselines3 import PPO
        >>> env = gym.make("Pendulum-v1")  # pretend its last 1 entry is a one-hot of 1 task
        >>> model = PPO(PackNetActorCriticPolicy, env, policy_kwargs={"net_arch": [8], "packnet_tasks": 1})
        >>> [type(m).__name__ for m in model.policy.mlp_extractor.policy_net], type(model.policy.value_net).__name__
        (['PackNetLinear', 'Tanh'], 'Linear')
    """

    def __init__(self, *args: Any, packnet_tasks: int = 0, **kwargs: Any) -> None:
        self.packnet_tasks = packnet_tasks
        super().__init__(*args, **kwargs)
        _make_packnet(self, ACTOR_PATHS["ppo"], packnet_tasks)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "packnet_tasks": self.packnet_tasks}


class PackNetSACPolicy(ArchSACPolicy):
    """SAC's policy (:class:`~crl.plasticity.policies.ArchSACPolicy`) whose actor's ``Linear``
    layers (``latent_pi``, ``mu``, ``log_std``) are :class:`PackNetLinear` for ``packnet_tasks`` tasks.
    """

    def __init__(self, *args: Any, packnet_tasks: int = 0, **kwargs: Any) -> None:
        self.packnet_tasks = packnet_tasks
        super().__init__(*args, **kwargs)
        _make_packnet(self, ACTOR_PATHS["sac"], packnet_tasks)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "packnet_tasks": self.packnet_tasks}


def packnet_layers(policy: nn.Module) -> list[tuple[str, PackNetLinear]]:
    """The PackNet layers of ``policy``, named as in its ``named_modules()``."""
    return [(n, m) for n, m in policy.named_modules() if isinstance(m, PackNetLinear)]


def packnet_parameters(policy: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The actor's parameters other than the PackNet layers' weights: biases, LayerNorm parameters,
    PPO's ``log_std`` (trained on the first task only).
    """
    algo = "sac" if hasattr(policy, "actor") else "ppo"
    prefixes = tuple(p.split(".")[0] if algo == "sac" else p for p in ACTOR_PATHS[algo])
    weights = {id(m.weight) for _, m in packnet_layers(policy)}
    out = [(n, p) for n, p in policy.named_parameters() if n.startswith(prefixes) and id(p) not in weights]
    if algo == "ppo" and isinstance(getattr(policy, "log_std", None), nn.Parameter):
        out.append(("log_std", policy.log_std))
    return out


def prune_fraction(task: int, n_tasks: int) -> float:
    """The share of task ``task``'s weights pruned when it ends (Continual World): ``(n - t - 1) / (n - t)``,
    so that each of ``n`` tasks keeps ``1 / n`` of the weights.

    Example:
        >>> [prune_fraction(t, 4) for t in range(4)]
        [0.75, 0.6666666666666666, 0.5, 0.0]
    """
    left = n_tasks - task - 1
    return left / (left + 1)


def shares(size: int, n_tasks: int) -> list[int]:
    """How many of a layer's ``size`` weights each task ends with (the pruning counts rounded down).

    Example:
        >>> shares(12, 3), shares(2, 3)
        ([4, 4, 4], [1, 1, 0])
    """
    out, free = [], size
    for t in range(n_tasks):
        pruned = math.floor(free * prune_fraction(t, n_tasks))
        out.append(free - pruned)
        free = pruned
    return out


def check_capacity(layers: list[tuple[str, PackNetLinear]], n_tasks: int) -> None:
    """One line when a layer has too few weights to give each of ``n_tasks`` tasks one."""
    for name, layer in layers:
        counts = shares(layer.weight.numel(), n_tasks)
        if 0 in counts:
            raise ConfigError(
                f"packnet: no free weights left for task {counts.index(0)} in layer {name} "
                f"({layer.weight.numel()} weights for {n_tasks} tasks); widen the network or use fewer tasks"
            )


def prune(layer: PackNetLinear, task: int, fraction: float) -> int:
    """Give the ``fraction`` of ``task``'s weights in ``layer`` with the smallest magnitudes to task
    ``task + 1``, set to 0; returns how many.
    """
    with torch.no_grad():
        idx = (layer.owner.flatten() == task).nonzero().flatten()
        k = math.floor(idx.numel() * fraction)
        order = torch.sort(layer.weight.flatten()[idx].abs(), stable=True).indices
        gone = idx[order[:k]]
        layer.owner.view(-1)[gone] = task + 1
        layer.weight.view(-1)[gone] = 0.0
    layer.owners_changed()
    return k


def reset_state(optimizers: list[torch.optim.Optimizer]) -> None:
    """Forget the optimizers' state (Adam's moments and step counts), as Continual World's
    ``reset_optimizer`` does around PackNet's retraining.
    """
    for opt in optimizers:
        opt.state.clear()


@register_intervention
class PackNet(ParamIntervention):
    """PackNet: prune, retrain and freeze the actor's weights of each task when it ends (see the
    module docstring); needs the PackNet network (``network.packnet: true``) and a boundary-aware agent.

    Args:
        retrain_steps: gradient steps of the retraining after each pruning (Continual World's
            experiments: 100,000 for tasks of 1M steps; its default 0).
        batch_size: PPO's retraining minibatch (0: the model's ``batch_size``).
        seed: PPO's retraining minibatch draws (a run derives it from its seed).

    Example:
        >>> PackNet(retrain_steps=10).retrain_steps
        10
    """

    name = "packnet"
    needs_boundaries = True

    def __init__(self, retrain_steps: int = 100_000, batch_size: int = 0, seed: int = 0) -> None:
        self.retrain_steps = check_int("retrain_steps", retrain_steps, minimum=0)
        self.batch_size = check_int("batch_size", batch_size, minimum=0)
        self.rng = np.random.Generator(np.random.PCG64(int(seed)))
        self.task, self.packed, self.retrains = 0, 0, 0
        self._rollout: dict[str, np.ndarray] | None = None
        self._masks: dict[int, torch.Tensor | bool] | None = None
        self._frozen: dict[int, list[tuple[nn.Parameter, torch.Tensor | bool]]] = {}
        self._saved: dict[int, torch.Tensor] = {}

    def _setup(self) -> None:
        policy = getattr(self.model, "policy", None)
        self.layers = packnet_layers(policy) if isinstance(policy, nn.Module) else []
        if not self.layers:
            raise ConfigError(
                "intervention 'packnet' needs the PackNet network: set network.packnet: true (ppo or sac)"
            )
        self.n_tasks = self.layers[0][1].view.n_tasks
        check_capacity(self.layers, self.n_tasks)
        self.managed = [m.weight for _, m in self.layers] + [p for _, p in packnet_parameters(policy)]
        self.owners = {id(m.weight): m for _, m in self.layers}

    # -- task ends -----------------------------------------------------------
    def on_rollout_end(self) -> None:
        buf = getattr(self.model, "rollout_buffer", None)
        if buf is not None:
            self._rollout = rollout_rows(buf)

    def task_now(self) -> int:
        """The task id in force in the model's env (its ``task_id`` observation wrapper's ``task``)."""
        env = self.model.get_env()
        try:
            return int(env.get_attr("task", [0])[0])
        except (AttributeError, TypeError) as e:
            raise ConfigError(f"packnet: the env gives no task id (make it with task_id=True): {e}") from None

    def _on_regime_change(self, regime: int) -> None:
        new = self.task_now()
        if new == self.task:
            return
        if self.task == self.packed and self.task < self.n_tasks - 1:
            self.pack()
        self.task = new
        self.forget_masks()

    def pack(self) -> None:
        """Prune the task in force (the newest), retrain its kept weights, freeze them."""
        fraction = prune_fraction(self.packed, self.n_tasks)
        for _, layer in self.layers:
            prune(layer, self.packed, fraction)
        self.forget_masks()
        reset_state(self.optimizers)
        self.retrain()
        reset_state(self.optimizers)
        self.packed += 1
        self.forget_masks()

    def retrain(self) -> None:
        """``retrain_steps`` gradient steps of the model's own loss (only the task's kept weights move)."""
        m = self.model
        if self.retrain_steps == 0:
            return
        if hasattr(m, "replay_buffer"):
            if m.replay_buffer.size() > 0:
                m.train(gradient_steps=self.retrain_steps, batch_size=m.batch_size)
        elif self._rollout is not None:
            self._retrain_ppo()
        m.policy.set_training_mode(False)
        self.retrains += 1

    def _retrain_ppo(self) -> None:
        m, data = self.model, self._rollout
        assert data is not None
        n = len(data["obs"])
        size = min(self.batch_size or m.batch_size, n)
        m.policy.set_training_mode(True)
        for _ in range(self.retrain_steps):
            rows = np.sort(self.rng.choice(n, size=size, replace=False))
            loss = ppo_loss(m, {k: v[rows] for k, v in data.items()})
            m.policy.optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(m.policy.parameters(), m.max_grad_norm)
            m.policy.optimizer.step()

    # -- masked steps ----------------------------------------------------------
    def trainable(self) -> dict[int, torch.Tensor | bool]:
        """For every managed parameter (by ``id``): which entries the task in force may change
        (a bool tensor for PackNet weights, a bool for the rest).
        """
        if self._masks is None:
            open_task = self.task >= self.packed
            self._masks = {id(p): open_task and self.packed == 0 for p in self.managed}
            for key, layer in self.owners.items():
                self._masks[key] = (
                    (layer.owner == self.task) if open_task else torch.zeros_like(layer.owner, dtype=bool)
                )
        return self._masks

    def forget_masks(self) -> None:
        """Recompute the trainable entries at the next step (the task, the packed tasks or the owners changed)."""
        self._masks, self._frozen = None, {}

    def _frozen_params(self, optimizer: torch.optim.Optimizer) -> list[tuple[nn.Parameter, torch.Tensor | bool]]:
        if id(optimizer) not in self._frozen:
            self._frozen[id(optimizer)] = self._find_frozen(optimizer)
        return self._frozen[id(optimizer)]

    def _find_frozen(self, optimizer: torch.optim.Optimizer) -> list[tuple[nn.Parameter, torch.Tensor | bool]]:
        masks = self.trainable()
        mine = {id(p) for g in optimizer.param_groups for p in g["params"]}
        out = []
        for p in self.managed:
            mask = masks[id(p)]
            if id(p) in mine and not (mask is True or (isinstance(mask, torch.Tensor) and bool(mask.all()))):
                out.append((p, mask))
        return out

    def _before_step(self, optimizer: torch.optim.Optimizer) -> None:
        self._saved = {}
        for p, mask in self._frozen_params(optimizer):
            self._saved[id(p)] = p.detach().clone()
            if p.grad is not None:
                p.grad.masked_fill_(~mask, 0.0) if isinstance(mask, torch.Tensor) else p.grad.zero_()

    def _after_step(self, optimizer: torch.optim.Optimizer) -> None:
        for p, mask in self._frozen_params(optimizer):
            saved = self._saved.pop(id(p), None)
            if saved is not None:
                p.copy_(torch.where(mask, p, saved) if isinstance(mask, torch.Tensor) else saved)

    def state_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "packed": self.packed,
            "retrains": self.retrains,
            "rollout": self._rollout,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task, self.packed = int(state["task"]), int(state["packed"])
        self.retrains = int(state["retrains"])
        self._rollout = state["rollout"]
        self.rng.bit_generator.state = state["rng"]
        self.forget_masks()
        for _, layer in self.layers:
            layer.owners_changed()
