"""Agent specs (``agents/*.yaml``) and how they become stable-baselines3 models.

An agent spec is complete and readable: algorithm, every hyperparameter that differs
from SB3's default and those that matter for the paper being followed, the network
(sizes, activation, initialisation), the optimizer with its arguments, and the
plasticity interventions. :func:`build_model` turns it into an SB3 ``PPO``/``SAC`` built
with ``policy_kwargs`` (``optimizer_class``/``optimizer_kwargs``): no fork of SB3.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from torch import nn

from crl.config import from_mapping, init_keywords
from crl.errors import ConfigError, UnknownNameError
from crl.fastppo import FastPPO
from crl.plasticity import InterventionSet, attach
from crl.plasticity.optimizers import check_optimizer_kwargs, make_optimizer_class, optimizer_kwargs
from crl.policies import ArchActorCriticPolicy, CReLU

__all__ = ["AgentSpec", "NetworkSpec", "ALGOS", "ACTIVATIONS", "INITS", "build_model", "apply_init"]

#: SB3 algorithms by name.
ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": FastPPO, "sac": SAC}  # bench: FastPPO = PPO, leaner train()

#: Activation modules by name.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "crelu": CReLU,
}


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


#: Initialisation of every Linear layer by name. ``orthogonal`` is SB3's own
#: (``ortho_init=True``: gain sqrt(2) hidden, 0.01 policy head, 1 value head);
#: ``torch_default`` keeps PyTorch's.
INITS: dict[str, Callable[[nn.Linear], None] | None] = {
    "lecun_uniform": _lecun_uniform,
    "kaiming_uniform": _kaiming_uniform,
    "xavier_uniform": _xavier_uniform,
    "orthogonal": None,
    "torch_default": None,
}


@dataclass
class NetworkSpec:
    """The policy architecture."""

    pi: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer sizes of the policy (actor) network."""
    vf: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer sizes of the value network (PPO)."""
    qf: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer sizes of each Q network (SAC)."""
    activation: str = "relu"
    """Activation after every hidden Linear: one of :data:`ACTIVATIONS`."""
    init: str = "lecun_uniform"
    """Initialisation of every Linear: one of :data:`INITS`."""
    log_std_init: float = 0.0
    """Initial value of the state-independent log standard deviation (PPO)."""
    layer_norm: bool = False
    """LayerNorm after every hidden Linear, before the activation (PPO)."""


@dataclass
class AgentSpec:
    """A complete agent: what ``agents/<name>.yaml`` holds."""

    description: str
    """One line (or a few) saying what the agent is and where its numbers come from."""
    algo: Literal["ppo", "sac"] = "ppo"
    """The SB3 algorithm."""
    policy: str = "MlpPolicy"
    """The SB3 policy class name."""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the SB3 algorithm (checked against its signature)."""
    network: NetworkSpec = field(default_factory=NetworkSpec)
    """Network sizes, activation, initialisation."""
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "adam"})
    """``name`` (one of :data:`crl.plasticity.OPTIMIZERS`) plus its keyword arguments."""
    interventions: list[Any] = field(default_factory=list)
    """Plasticity interventions, ``[{name: {arguments}}, ...]``."""
    boundary_aware: bool = False
    """Whether the agent is told when the regime changes (``on_regime_change`` hooks)."""
    replay_buffer: str = "fifo"
    """SAC only: ``fifo`` (SB3's buffer) or ``reservoir`` (keeps a uniform sample of every
    regime seen; :class:`crl.plasticity.replay.ReservoirReplayBuffer`)."""
    name: str = ""
    """Catalog name (filled in by the loader)."""

    @classmethod
    def from_dict(cls, data: Any, where: str, name: str = "") -> AgentSpec:
        """Parse and validate a spec (unknown keys, types, names, hyperparameters)."""
        spec = from_mapping(cls, data, where)
        spec.name = name or spec.name
        spec.validate(where)
        return spec

    def validate(self, where: str) -> None:
        """Check names and hyperparameters; raise ConfigError naming ``where``."""
        try:
            algo_cls = ALGOS[self.algo]
            valid = [
                k
                for k in init_keywords(algo_cls)
                if k
                not in (
                    "self",
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
            ]
            for k, v in self.hyperparameters.items():
                if k not in valid:
                    raise ConfigError(f"hyperparameters: unknown key {k!r} for {self.algo}; valid: {', '.join(valid)}")
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                    raise ConfigError(f"hyperparameters: {k} must not be negative, got {v!r}")
            if self.network.activation not in ACTIVATIONS:
                raise UnknownNameError("activation", self.network.activation, list(ACTIVATIONS))
            if self.network.init not in INITS:
                raise UnknownNameError("init", self.network.init, list(INITS))
            if self.algo != "ppo" and (self.network.layer_norm or self.network.activation == "crelu"):
                raise ConfigError("network: layer_norm and crelu are available for ppo only")
            for key in ("pi", "vf", "qf"):
                sizes = getattr(self.network, key)
                if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
                    raise ConfigError(f"network: {key} must be a list of positive integers, got {sizes!r}")
            from crl.plasticity.replay import make_replay_buffer_class

            make_replay_buffer_class(self.replay_buffer)
            if self.algo != "sac" and self.replay_buffer != "fifo":
                raise ConfigError(f"replay_buffer: {self.replay_buffer!r} is for sac agents only")
            opt = dict(self.optimizer)
            name = opt.pop("name", None)
            if not isinstance(name, str):
                raise ConfigError("optimizer: needs a 'name'")
            check_optimizer_kwargs(name, opt)
            from crl.plasticity.base import build, check_boundaries

            built = build(self.interventions)
            check_boundaries(built, self.boundary_aware)
            for iv in built:
                if self.replay_buffer != "fifo" and getattr(iv, "needs_states", False):
                    raise ConfigError(
                        f"intervention {iv.name!r} computes its importances from the most recent "
                        f"transitions, which a {self.replay_buffer!r} replay buffer does not keep in order; "
                        "use replay_buffer: fifo"
                    )
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what config.yaml shows)."""
        return dataclasses.asdict(self)


def apply_init(module: nn.Module, init: str) -> None:
    """Re-initialise every ``nn.Linear`` in ``module`` with scheme ``init``."""
    fn = INITS[init]
    if fn is None:
        return
    for m in module.modules():
        if isinstance(m, nn.Linear):
            fn(m)


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


def build_model(
    spec: AgentSpec, env: Any, seed: int, device: str = "cpu", verbose: int = 0
) -> tuple[BaseAlgorithm, InterventionSet]:
    """Build the SB3 model of ``spec`` on ``env`` and attach its interventions.

    Example:
        >>> import gymnasium as gym
        >>> spec = AgentSpec.from_dict({"description": "tiny", "hyperparameters": {"n_steps": 64}}, "x")
        >>> model, interventions = build_model(spec, gym.make("Pendulum-v1"), seed=0)
        >>> type(model).__name__, model.n_steps, interventions.names
        ('FastPPO', 64, [])
    """
    cls = ALGOS[spec.algo]
    hp = dict(spec.hyperparameters)
    torch.manual_seed(seed)
    pkw = policy_kwargs(spec)
    policy: Any = spec.policy
    if spec.algo == "ppo" and (spec.network.layer_norm or spec.network.activation == "crelu"):
        policy = ArchActorCriticPolicy
        pkw["layer_norm"] = spec.network.layer_norm
    if spec.replay_buffer != "fifo":
        from crl.plasticity.replay import make_replay_buffer_class

        hp["replay_buffer_class"] = make_replay_buffer_class(spec.replay_buffer)
        hp["replay_buffer_kwargs"] = {"seed": seed, **(hp.get("replay_buffer_kwargs") or {})}
    model = cls(policy, env, policy_kwargs=pkw, seed=seed, device=device, verbose=verbose, **hp)
    with torch.no_grad():
        if spec.algo == "ppo":
            apply_init(model.policy, spec.network.init)
        else:
            apply_init(model.actor, spec.network.init)
            apply_init(model.critic, spec.network.init)
            model.critic_target.load_state_dict(model.critic.state_dict())
    # SB3's default logger makes a temporary folder per learn() call; crl tracks metrics itself
    model.set_logger(Logger(folder=None, output_formats=[]))
    interventions = attach(model, spec.interventions, boundary_aware=spec.boundary_aware)
    return model, interventions
