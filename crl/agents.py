"""The builder: an agent spec (:class:`crl.spec.AgentSpec`) becomes a stable-baselines3 model.

:func:`build_model` turns a spec into an SB3 ``PPO``/``SAC``/``TD3`` built with ``policy_kwargs``
(``optimizer_class``/``optimizer_kwargs``, no fork of SB3) and attaches its plasticity
interventions. The name tables of :mod:`crl.spec` (algorithms, activations,
initialisations) map to classes and functions here; :func:`check` does the checks that
need them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from stable_baselines3 import TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.noise import ActionNoise, NormalActionNoise
from torch import nn

from crl.config import init_keywords
from crl.errors import ConfigError, did_you_mean
from crl.fast import FastPPO, FastSAC
from crl.named import parse_named_list
from crl.plasticity import INTERVENTIONS, Intervention, InterventionSet, nets
from crl.plasticity.base import build, check_boundaries
from crl.plasticity.multihead import TaskActorCriticPolicy, TaskSACPolicy
from crl.plasticity.optimizers import check_optimizer_kwargs, make_optimizer_class, optimizer_kwargs
from crl.plasticity.packnet import PackNetActorCriticPolicy, PackNetSACPolicy
from crl.plasticity.policies import ArchActorCriticPolicy, ArchSACPolicy
from crl.plasticity.progressive import ProgressiveActorCriticPolicy, ProgressiveColumns, ProgressiveSACPolicy
from crl.plasticity.replay import make_replay_buffer_class
from crl.seeding import derive
from crl.spec import AgentSpec

__all__ = [
    "ALGOS",
    "ACTIVATIONS",
    "INITS",
    "SET_BY_CRL",
    "action_noise",
    "apply_init",
    "build_model",
    "check",
    "hyperparameter_keywords",
    "policy_class",
    "policy_kwargs",
    "seeded_interventions",
    "with_tasks",
]

#: SB3 algorithms by name.
ALGOS: dict[str, type[BaseAlgorithm]] = {
    "ppo": FastPPO,
    "sac": FastSAC,
    "td3": TD3,
}  # FastPPO/FastSAC: SB3's math, leaner

#: PackNet's policy classes by algorithm (``network.packnet: true``).
PACKNET_POLICIES: dict[str, type] = {"ppo": PackNetActorCriticPolicy, "sac": PackNetSACPolicy}

#: Activation modules by name: the one table of :mod:`crl.plasticity.nets` (names: :data:`crl.spec.ACTIVATION_NAMES`).
ACTIVATIONS: dict[str, type[nn.Module]] = nets.ACTIVATIONS


def _lecun_uniform(layer: nn.Linear) -> None:
    bound = math.sqrt(3.0 / layer.in_features)
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)


def _kaiming_uniform(layer: nn.Linear) -> None:
    nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)


def _xavier_uniform(layer: nn.Linear) -> None:
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


#: Initialisation of every Linear layer by name (the names are :data:`crl.spec.INIT_NAMES`). ``orthogonal`` is SB3's own
#: (``ortho_init=True``: gain sqrt(2) hidden, 0.01 policy head, 1 value head);
#: ``torch_default`` keeps PyTorch's.
INITS: dict[str, Callable[[nn.Linear], None] | None] = {
    "lecun_uniform": _lecun_uniform,
    "kaiming_uniform": _kaiming_uniform,
    "xavier_uniform": _xavier_uniform,
    "orthogonal": None,
    "torch_default": None,
}


#: Keyword arguments of the SB3 algorithm that crl sets itself (not agent hyperparameters).
SET_BY_CRL = (
    "policy",
    "env",
    "policy_kwargs",
    "seed",
    "device",
    "verbose",
    "_init_setup_model",
    "tensorboard_log",
    "replay_buffer_class",
)


def hyperparameter_keywords(algo: str) -> list[str]:
    """The keyword arguments an agent's ``hyperparameters`` may set: read from the SB3
    algorithm's signature when asked (so they follow the installed SB3), less :data:`SET_BY_CRL`.

    Example:
        >>> "n_steps" in hyperparameter_keywords("ppo"), "seed" in hyperparameter_keywords("ppo")
        (True, False)
    """
    return [k for k in init_keywords(ALGOS[algo]) if k not in SET_BY_CRL]


def check(spec: AgentSpec, where: str | None = None) -> list[Intervention]:
    """The checks of ``spec`` that need SB3 and torch, done once; returns its interventions, built.

    :meth:`AgentSpec.from_dict <crl.spec.AgentSpec.from_dict>` checked what the spec alone
    decides; this checks the rest: hyperparameter names (SB3's signature), the replay
    buffer, the optimizer's name and values (a throw-away instance), and the interventions
    (built, so their constructors check the values; then boundaries and replay needs).
    Errors are one-line :class:`~crl.errors.ConfigError` naming ``where`` (default: the
    agent's name).

    Example:
        >>> from crl.spec import AgentSpec
        >>> spec = AgentSpec.from_dict({"description": "x", "interventions": [{"cbp": {"maturity": -1}}]}, "a.yaml")
        >>> check(spec, "a.yaml")
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: a.yaml: intervention 'cbp': maturity must be a non-negative integer, got -1
    """
    try:
        valid = hyperparameter_keywords(spec.algo)
        for k in spec.hyperparameters:
            if k not in valid:
                known = ", ".join(valid) + did_you_mean(k, valid)
                raise ConfigError(f"hyperparameters: unknown key {k!r} for {spec.algo}; valid: {known}")
        if spec.replay_buffer != "fifo":
            make_replay_buffer_class(spec.replay_buffer)
        opt = dict(spec.optimizer)
        name = opt.pop("name")
        try:
            check_optimizer_kwargs(name, opt)
        except ConfigError:
            raise
        except (IndexError, KeyError, AttributeError, OverflowError) as e:  # what torch's checks miss
            raise ConfigError(f"optimizer {name!r}: bad arguments {opt!r} ({type(e).__name__}: {e})") from None
        interventions = build(spec.interventions)
        check_boundaries(interventions, spec.boundary_aware)
        for iv in interventions:
            if spec.replay_buffer != "fifo" and iv.needs_states:
                raise ConfigError(
                    f"intervention {iv.name!r} computes its importances from the most recent "
                    f"transitions, which a {spec.replay_buffer!r} replay buffer does not keep in order; "
                    "use replay_buffer: fifo"
                )
    except ConfigError as e:
        raise ConfigError(f"{where or spec.name or 'agent'}: {e}") from None
    return interventions


def seeded_interventions(specs: list[Any] | None, seed: int) -> list[Any] | None:
    """The intervention specs of an agent in a run of ``seed``: intervention ``i`` that takes a
    ``seed`` and is given none gets ``crl.seeding.derive(seed, "intervention", i)``, so every
    run seed has its own replacement draws (a ``seed`` written in the spec is kept).

    Example:
        >>> from crl.seeding import derive
        >>> out = seeded_interventions([{"cbp": {}}, "l2_init", {"redo": {"seed": 7}}], seed=3)
        >>> out[0]["cbp"]["seed"] == derive(3, "intervention", 0), out[1], out[2]
        (True, {'l2_init': {}}, {'redo': {'seed': 7}})
    """
    try:
        items = parse_named_list(specs, "intervention", INTERVENTIONS)
    except ConfigError:
        return specs  # not a valid list: check() says so, naming the agent
    out = []
    for i, (name, args) in enumerate(items):
        if "seed" in init_keywords(INTERVENTIONS[name]) and "seed" not in args:
            args = {**args, "seed": derive(seed, "intervention", i)}
        out.append({name: args})
    return out


def apply_init(module: nn.Module, init: str) -> None:
    """Re-initialise every ``nn.Linear`` in ``module`` with scheme ``init``."""
    fn = INITS[init]
    if fn is None:
        return
    for m in module.modules():
        if isinstance(m, nn.Linear):
            fn(m)


def action_noise(spec: Any, action_space: Any) -> ActionNoise | None:
    """The SB3 exploration noise that an agent's ``action_noise`` hyperparameter names
    (:data:`crl.hyperparameters.ACTION_NOISES`): ``{normal: {sigma: s}}`` is zero-mean Gaussian
    noise of standard deviation ``s`` on every action dimension, added to the deterministic
    action in the policy's [-1, 1] scale (SB3 clips the result). Its draws come from NumPy's
    global generator, which SB3 seeds with the run and crl's checkpoints save.

    Example:
        >>> import numpy as np
        >>> from gymnasium import spaces
        >>> noise = action_noise({"normal": {"sigma": 0.1}}, spaces.Box(-1, 1, (2,)))
        >>> noise
        NormalActionNoise(mu=[0. 0.], sigma=[0.1 0.1])
        >>> action_noise(None, spaces.Box(-1, 1, (2,))) is None
        True
    """
    if spec is None:
        return None
    ((name, args),) = spec.items()
    dim = int(np.prod(action_space.shape))
    if name == "normal":
        return NormalActionNoise(mean=np.zeros(dim), sigma=float(args["sigma"]) * np.ones(dim))
    raise ConfigError(f"action_noise: unknown noise {name!r}")


def with_tasks(spec: AgentSpec, tasks: int) -> AgentSpec:
    """``spec`` with ``network.tasks = tasks``: what an agent that observes the task id
    (``task_id: true``) learns from its env (``tasks``: the env's number of task ids, 0: none).

    Example:
        >>> spec = AgentSpec.from_dict({"description": "x", "task_id": True}, "a.yaml", name="a")
        >>> with_tasks(spec, 3).network.tasks
        3
    """
    if spec.task_id and tasks < 1:
        raise ConfigError(f"agent {spec.name!r} observes the task id, its env gives none (make it with task_id=True)")
    return dataclasses.replace(spec, network=dataclasses.replace(spec.network, tasks=int(tasks)))


def policy_kwargs(spec: AgentSpec) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` for ``spec``."""
    opt = dict(spec.optimizer)
    name = opt.pop("name")
    kw: dict[str, Any] = {
        "activation_fn": ACTIVATIONS[spec.network.activation],
        "optimizer_class": make_optimizer_class(name),
        "optimizer_kwargs": optimizer_kwargs(name, opt),
    }
    if spec.algo == "ppo":
        kw["net_arch"] = {"pi": list(spec.network.pi), "vf": list(spec.network.vf)}
        kw["log_std_init"] = spec.network.log_std_init
        kw["ortho_init"] = spec.network.init == "orthogonal"
    else:
        kw["net_arch"] = {"pi": list(spec.network.pi), "qf": list(spec.network.qf)}
    return kw


def policy_class(spec: AgentSpec, pkw: dict[str, Any]) -> tuple[Any, list[Intervention]]:
    """The SB3 policy (class or name) that ``spec``'s network options ask for, adding the options'
    keyword arguments to ``pkw``, and the interventions a network option brings with it (the
    freezing of progressive columns).

    Example:
        >>> spec = AgentSpec.from_dict({"description": "x", "network": {"layer_norm": True}}, "a.yaml")
        >>> pkw = {}
        >>> policy, added = policy_class(spec, pkw)
        >>> policy.__name__, pkw["layer_norm"], added
        ('ArchActorCriticPolicy', True, [])
    """
    policy: Any = spec.policy
    added: list[Intervention] = []
    arch = spec.network.layer_norm or spec.network.activation in ("crelu", "dff") or spec.network.dropout
    if spec.algo == "ppo" and arch:
        policy = ArchActorCriticPolicy
        pkw["layer_norm"] = spec.network.layer_norm
        pkw["dropout"] = spec.network.dropout
    if spec.algo == "sac" and arch:  # layer_norm, crelu, dff (dropout is refused for sac)
        policy = ArchSACPolicy
        pkw["layer_norm"] = spec.network.layer_norm
    if spec.network.progressive:  # one column per task id, frozen after its task (crl.plasticity.progressive)
        policy = ProgressiveActorCriticPolicy if spec.algo == "ppo" else ProgressiveSACPolicy
        pkw["n_tasks"] = spec.network.tasks
        added.append(ProgressiveColumns())
    if spec.network.task_conditioned:  # heads or adapters per task (crl.plasticity.multihead, .adapters)
        policy = _task_policy(spec, pkw)
    if spec.network.packnet:  # PackNet masks on the actor (crl.plasticity.packnet)
        policy = PACKNET_POLICIES[spec.algo]
        pkw.update(layer_norm=spec.network.layer_norm, packnet_tasks=spec.network.tasks)
        pkw.update({"dropout": spec.network.dropout} if spec.algo == "ppo" else {})
    return policy, added


def _task_policy(spec: AgentSpec, pkw: dict[str, Any]) -> type:
    """The task-conditioned policy class of ``spec`` (heads or adapters), its keywords added to ``pkw``."""
    net = spec.network
    if net.tasks < 1:
        raise ConfigError(
            f"agent {spec.name or 'agent'!r}: network.heads and network.adapters need the number of task ids "
            "(network.tasks): build its env with task_id=True (crl does for agents with task_id: true)"
        )
    pkw.update(tasks=net.tasks, adapter_rank=net.adapters, freeze_trunk=net.freeze_trunk, layer_norm=net.layer_norm)
    if spec.algo == "ppo":
        pkw["dropout"] = net.dropout
        return TaskActorCriticPolicy
    return TaskSACPolicy


def build_model(
    spec: AgentSpec, env: Any, seed: int, device: str = "cpu", verbose: int = 0
) -> tuple[BaseAlgorithm, InterventionSet]:
    """Build the SB3 model of ``spec`` on ``env`` and attach its interventions.

    The spec is checked first (:func:`check`), so any :class:`~crl.spec.AgentSpec` may be
    given, also one changed in Python after it was read.

    Example:
        >>> import gymnasium as gym
        >>> from crl.spec import AgentSpec
        >>> spec = AgentSpec.from_dict({"description": "tiny", "hyperparameters": {"n_steps": 64}}, "x")
        >>> model, interventions = build_model(spec, gym.make("Pendulum-v1"), seed=0)
        >>> type(model).__name__, model.n_steps, interventions.names
        ('FastPPO', 64, [])
    """
    interventions = check(dataclasses.replace(spec, interventions=seeded_interventions(spec.interventions, seed)))
    cls = ALGOS[spec.algo]
    hp = dict(spec.hyperparameters)
    torch.manual_seed(seed)
    pkw = policy_kwargs(spec)
    policy, added = policy_class(spec, pkw)
    interventions = [*interventions, *added]
    if spec.replay_buffer != "fifo":
        hp["replay_buffer_class"] = make_replay_buffer_class(spec.replay_buffer)
        hp["replay_buffer_kwargs"] = {"seed": derive(seed, "replay"), **(hp.get("replay_buffer_kwargs") or {})}
    if "action_noise" in hp:
        hp["action_noise"] = action_noise(hp["action_noise"], env.action_space)
    model = cls(policy, env, policy_kwargs=pkw, seed=seed, device=device, verbose=verbose, **hp)
    with torch.no_grad():
        if spec.algo == "ppo":
            apply_init(model.policy, spec.network.init)
        else:
            apply_init(model.actor, spec.network.init)
            apply_init(model.critic, spec.network.init)
            model.critic_target.load_state_dict(model.critic.state_dict())
            if getattr(model, "actor_target", None) is not None:  # TD3: the target actor starts as the actor
                model.actor_target.load_state_dict(model.actor.state_dict())
    # SB3's default logger makes a temporary folder per learn() call; crl tracks metrics itself
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model, InterventionSet(interventions, boundary_aware=spec.boundary_aware).attach(model)
