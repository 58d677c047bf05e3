"""What an environment, an agent, a run and a sweep are, as plain data: crl's specs.

A spec is a dataclass read from YAML (``envs/<name>.yaml``, ``agents/<name>.yaml``) by
:mod:`crl.catalog`, or built in Python. This module imports neither torch nor
stable-baselines3 (nor Gymnasium), so reading, listing and checking specs is cheap and
works anywhere; the objects a spec describes are built elsewhere:

* :class:`EnvSpec` -> :func:`crl.drift.register_drifting` (through :mod:`crl.catalog`);
* :class:`AgentSpec` -> :func:`crl.agents.build_model` (an SB3 model with its optimizer,
  network and interventions);
* :class:`RunConfig` (one run: what ``crl train`` takes) -> :func:`crl.run.train`;
* :class:`SweepSpec` (a sweep file) -> :func:`crl.sweep.run_sweep`.

Checks happen once, where their knowledge lives. :meth:`AgentSpec.from_dict` checks
everything the spec alone decides: keys and types, the algorithm, activation and
initialisation names, layer sizes, numbers, and the ``{name: {arguments}}`` shape of
interventions (:func:`parse_named`). What needs the classes (SB3's hyperparameter keywords,
read from the algorithm's signature; the optimizer's and interventions' names and values)
is checked by :func:`crl.agents.check`, which :func:`crl.catalog.resolve_agent` and
:func:`crl.agents.build_model` call.

Example:
    >>> spec = AgentSpec.from_dict({"description": "PPO with CBP", "interventions": ["cbp"]}, "a.yaml")
    >>> spec.algo, spec.network.activation, spec.interventions
    ('ppo', 'relu', ['cbp'])
    >>> AgentSpec.from_dict({"description": "x", "network": {"pi": [64, 0]}}, "a.yaml")
    Traceback (most recent call last):
    ...
    crl.errors.ConfigError: a.yaml: network.pi[1] must be a positive integer, got 0
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from crl.config import from_mapping
from crl.errors import ConfigError, UnknownNameError, check_int, check_number
from crl.hyperparameters import MAX_COUNT, check_hyperparameters
from crl.named import parse_named, parse_named_list

__all__ = [
    "ALGORITHMS",
    "ACTIVATION_NAMES",
    "INIT_NAMES",
    "POLICY_NAMES",
    "AgentSpec",
    "EnvSpec",
    "NetworkSpec",
    "RunConfig",
    "SweepSpec",
    "VEC_ENVS",
    "WANDB_MODES",
    "check_betas",
    "check_device",
    "check_experiment",
    "check_run_config",
    "check_run_dir",
    "check_wandb_names",
    "field_docs",
    "parse_named",
    "parse_named_list",
]

Algorithm = Literal["ppo", "sac", "td3"]
#: The SB3 algorithms an agent may use (:data:`crl.agents.ALGOS` maps them to classes).
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
#: Activation names (:data:`crl.plasticity.nets.ACTIVATIONS` maps them to torch modules; a test keeps them equal).
ACTIVATION_NAMES: tuple[str, ...] = (
    "relu",
    "tanh",
    "leaky_relu",
    "elu",
    "gelu",
    "silu",
    "sigmoid",
    "softplus",
    "mish",
    "crelu",
    "dff",
)
#: SB3's policy names (:class:`AgentSpec` ``policy``).
POLICY_NAMES: tuple[str, ...] = ("MlpPolicy", "CnnPolicy", "MultiInputPolicy")
#: Initialisation names (:data:`crl.agents.INITS` maps them to functions). ``orthogonal`` is
#: SB3's own (``ortho_init=True``); ``torch_default`` keeps PyTorch's.
INIT_NAMES: tuple[str, ...] = ("lecun_uniform", "kaiming_uniform", "xavier_uniform", "orthogonal", "torch_default")


@dataclass
class EnvSpec:
    """A drifting environment of the catalog (``envs/<name>.yaml``)."""

    description: str
    """Where the environment comes from and what drifts."""
    id: str
    """The Gymnasium id registered for it (``gymnasium.make(id)``)."""
    base: str | None = None
    """The wrapped environment's id; None for an env registered elsewhere."""
    base_kwargs: dict[str, Any] = field(default_factory=dict)
    """Default keyword arguments of the base env."""
    drifts: list[Any] = field(default_factory=list)
    """Drift specs, ``[{name: {arguments}}, ...]``."""
    schedule: dict[str, Any] | None = None
    """When regimes change, ``{name: {arguments}}``."""
    max_episode_steps: int | None = None
    """Episode limit (default: the base env's)."""
    name: str = ""
    """Catalog name (the file stem)."""
    path: str = ""
    """The YAML file it was read from."""

    @classmethod
    def from_dict(cls, data: Any, where: str, name: str = "", path: str = "") -> EnvSpec:
        """Parse a spec: unknown keys and types.

        The drifts and the schedule are checked once, when the env is registered
        (:func:`crl.catalog.register_env`), by the drift package that owns them.

        Example:
            >>> EnvSpec.from_dict({"description": "x", "id": "mine/X-v0", "drifts": "friction"}, "x.yaml")
            Traceback (most recent call last):
            ...
            crl.errors.ConfigError: x.yaml: drifts: expected a list, got 'friction'
        """
        spec = from_mapping(cls, data, where)
        spec.name, spec.path = name or spec.name, path or spec.path
        if spec.max_episode_steps is not None:
            try:
                check_int("max_episode_steps", spec.max_episode_steps, minimum=1)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
        return spec

    def make_kwargs(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The fully resolved keyword arguments of ``gymnasium.make(self.id, ...)``.

        Reads Gymnasium's registry (imported here, not at module import).
        """
        import gymnasium as gym

        registered = gym.spec(self.id).kwargs if self.id in gym.registry else {}
        out = {k: v for k, v in registered.items() if k not in ("base", "drifts", "schedule")}
        if self.base is None:
            return {**out, **(overrides or {})}
        from crl.drift.registration import split_make_kwargs

        drifts, schedule, wkw, base_kw = split_make_kwargs(
            registered.get("drifts", self.drifts), registered.get("schedule", self.schedule), overrides or {}
        )
        out = {**{k: v for k, v in out.items() if k not in base_kw}, **base_kw}
        out.update({"drifts": drifts, "schedule": schedule, "drift_seed": 0, "num_envs": 1, **wkw})
        return out


@dataclass
class NetworkSpec:
    """The policy architecture."""

    pi: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer sizes of the policy (actor) network."""
    vf: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer sizes of the value network (PPO)."""
    qf: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer sizes of each Q network (SAC, TD3)."""
    activation: str = "relu"
    """Activation after every hidden Linear: one of :data:`ACTIVATION_NAMES`."""
    init: str = "lecun_uniform"
    """Initialisation of every Linear: one of :data:`INIT_NAMES`."""
    log_std_init: float = 0.0
    """Initial value of the state-independent log standard deviation (PPO)."""
    layer_norm: bool = False
    """LayerNorm after every hidden Linear, before the activation (PPO, SAC)."""
    dropout: float = 0.0
    """Dropout probability after every hidden activation, in [0, 1) (PPO; 0: none). Rollouts
    and evaluations run without dropout, updates with it (see ``docs/agents.md``, "Dropout")."""
    tasks: int = 0
    """How many task ids end the observation (the one-hot of the env's ``task_id`` option), for
    networks that select parameters by task (multi-head, PackNet, progressive, adapters); 0: none.
    crl sets it from the env when the agent's ``task_id`` is true."""
    progressive: bool = False
    """Progressive networks (Rusu et al. 2016; PPO, SAC): one column per task id, laterals from the
    frozen columns of earlier tasks (:mod:`crl.plasticity.progressive`). Needs ``task_id: true``."""
    packnet: bool = False
    """PackNet masks on the actor's weights, selected by the observed task id (PPO, SAC; needs
    ``task_id: true`` and the ``packnet`` intervention: :mod:`crl.plasticity.packnet`)."""
    heads: bool = False
    """One output head per task (PPO: action mean and value; SAC: mean, log-std and both critics),
    selected by the observed task id, on shared hidden layers (needs ``task_id: true``;
    :mod:`crl.plasticity.multihead`)."""
    adapters: int = 0
    """Rank of the per-task low-rank (LoRA) adapters of every hidden layer (0: none); adapters
    come with a head per task (needs ``task_id: true``; :mod:`crl.plasticity.adapters`)."""
    freeze_trunk: bool = False
    """Freeze the shared hidden layers at the first update that sees a task other than the
    first (with ``heads`` or ``adapters``): later tasks train their own heads and adapters only."""

    @property
    def task_conditioned(self) -> bool:
        """Whether the network selects parameters by the observed task id (heads or adapters)."""
        return bool(self.heads or self.adapters)

    def validate(self, algo: str) -> None:
        """Check names and sizes (``algo``: the agent's algorithm); raise ConfigError."""
        if self.activation not in ACTIVATION_NAMES:
            raise UnknownNameError("activation", self.activation, ACTIVATION_NAMES)
        if self.init not in INIT_NAMES:
            raise UnknownNameError("init", self.init, INIT_NAMES)
        check_number("network.dropout", self.dropout, 0, 1, high_open=True)
        check_int("network.tasks", self.tasks, minimum=0)
        if algo not in ("ppo", "sac") and (self.layer_norm or self.activation in ("crelu", "dff")):
            raise ConfigError("network: layer_norm, crelu and dff are available for ppo and sac only")
        if algo != "ppo" and self.dropout:
            raise ConfigError("network: dropout is available for ppo only")
        plain = not (self.layer_norm or self.dropout or self.activation in ("crelu", "dff"))
        if self.progressive and (algo not in ("ppo", "sac") or not plain):
            raise ConfigError("network.progressive is for ppo and sac, without layer_norm, dropout, crelu or dff")
        if algo not in ("ppo", "sac") and self.packnet:
            raise ConfigError("network: packnet is available for ppo and sac only")
        if self.packnet and self.progressive:
            raise ConfigError("network: packnet and progressive each own the task's parameters; choose one")
        check_int("network.adapters", self.adapters, minimum=0)
        if algo not in ("ppo", "sac") and self.task_conditioned:
            raise ConfigError("network: heads and adapters are available for ppo and sac only")
        if self.freeze_trunk and not self.task_conditioned:
            raise ConfigError("network.freeze_trunk needs network.heads: true or network.adapters > 0")
        if self.task_conditioned and (self.packnet or self.progressive):
            raise ConfigError("network: heads/adapters, packnet and progressive isolate tasks each their own way")
        for key in ("pi", "vf", "qf"):
            sizes = getattr(self, key)
            if not sizes:
                raise ConfigError(f"network.{key} must be a non-empty list of layer sizes, got {sizes!r}")
            for i, size in enumerate(sizes):
                check_int(f"network.{key}[{i}]", size, minimum=1)


@dataclass
class AgentSpec:
    """A complete agent: what ``agents/<name>.yaml`` holds."""

    description: str
    """One line (or a few) saying what the agent is and where its numbers come from."""
    algo: Algorithm = "ppo"
    """The SB3 algorithm: one of :data:`ALGORITHMS`."""
    policy: str = "MlpPolicy"
    """The SB3 policy class name."""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the SB3 algorithm (names checked against its signature by
    :func:`crl.agents.check`)."""
    network: NetworkSpec = field(default_factory=NetworkSpec)
    """Network sizes, activation, initialisation."""
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "adam"})
    """``name`` (one of :data:`crl.plasticity.OPTIMIZERS`) plus its keyword arguments."""
    interventions: list[Any] = field(default_factory=list)
    """Plasticity interventions, ``[{name: {arguments}}, ...]``."""
    boundary_aware: bool = False
    """Whether the agent is told when the regime changes (``on_regime_change`` hooks)."""
    task_id: bool = False
    """Whether the agent observes the one-hot id of the task in force (Continual World's setting):
    crl makes the env with its ``task_id`` option and sets ``network.tasks`` to its number of tasks."""
    replay_buffer: str = "fifo"
    """SAC and TD3 only: ``fifo`` (SB3's buffer) or ``reservoir`` (keeps a uniform sample of every
    regime seen; :class:`crl.plasticity.replay.ReservoirReplayBuffer`)."""
    name: str = ""
    """Catalog name (filled in by the loader)."""

    @classmethod
    def from_dict(cls, data: Any, where: str, name: str = "") -> AgentSpec:
        """Parse and check a spec as far as the spec alone decides (see the module docstring).

        Example:
            >>> AgentSpec.from_dict({"description": "x", "hyperparameters": {"gamma": -1}}, "a.yaml")
            Traceback (most recent call last):
            ...
            crl.errors.ConfigError: a.yaml: hyperparameters: gamma must be a number in (0, 1], got -1
        """
        spec = from_mapping(cls, data, where)
        spec.name = name or spec.name
        spec.validate(where)
        return spec

    def validate(self, where: str) -> None:
        """Check what the spec alone decides; raise ConfigError naming ``where``."""
        try:
            try:
                check_hyperparameters(self.algo, self.hyperparameters)
            except ConfigError as e:
                raise ConfigError(f"hyperparameters: {e}") from None
            if self.policy not in POLICY_NAMES:
                raise UnknownNameError("policy", self.policy, POLICY_NAMES)
            self.network.validate(self.algo)
            if self.network.packnet and not self.task_id:
                raise ConfigError("network.packnet selects weights by the observed task id; it needs task_id: true")
            if self.network.task_conditioned and not self.task_id:
                raise ConfigError(
                    "network.heads and network.adapters select parameters by task: they need task_id: true"
                )
            if self.algo == "ppo" and self.replay_buffer != "fifo":
                raise ConfigError(f"replay_buffer: {self.replay_buffer!r} is for sac and td3 agents only")
            if not isinstance(self.optimizer.get("name"), str):
                raise ConfigError("optimizer: needs a 'name'")
            if "betas" in self.optimizer:
                check_betas(self.optimizer["betas"])
            parse_named_list(self.interventions, "intervention")
            if self.network.progressive and (not self.task_id or self.interventions or self.replay_buffer != "fifo"):
                raise ConfigError(
                    "network.progressive needs task_id: true, no interventions and the fifo replay buffer "
                    "(its columns are chosen by the task id and frozen after their task)"
                )
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what config.yaml shows).

        Example:
            >>> spec = AgentSpec.from_dict({"description": "x", "algo": "sac"}, "a.yaml", name="my-sac")
            >>> AgentSpec.from_dict(spec.to_dict(), "again") == spec
            True
        """
        return dataclasses.asdict(self)


#: How the ``n_envs`` envs of a run are stepped.
VEC_ENVS = ("auto", "dummy", "proc")

#: wandb modes of a run (``auto``: online only if wandb is configured).
WANDB_MODES = ("auto", "offline", "online", "disabled")


@dataclass
class RunConfig:
    """Everything that defines one run. Defaults are what ``crl train`` uses.

    Example:
        >>> cfg = RunConfig(env="slippery-hopper", agent="ppo", steps=4096)
        >>> check_run_config(cfg)
        >>> check_run_config(RunConfig(env="x", agent="ppo", steps=0))
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: steps must be an integer in [1, 10_000_000_000], got 0
    """

    env: str
    """Env: catalog name (``slippery-ant``), YAML path, Gymnasium id, or ``module:EnvId``."""
    agent: str
    """Agent: catalog name (``ppo``) or YAML path."""
    seed: int = 0
    """Seed of the agent, the episodes and (unless ``drift_seed`` is in env_kwargs) the drift."""
    steps: int = 100_000
    """Environment steps to train for (over all parallel envs)."""
    experiment: str = "default"
    """Folder under ``run_dir`` that groups runs (``runs/<experiment>/...``)."""
    run_dir: str = "runs"
    """Root folder of the outputs."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``gymnasium.make`` keyword arguments (``change_every=...``)."""
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides of the agent spec; bare names are hyperparameters, dotted keys reach
    into the spec (``optimizer.betas=[0.99, 0.99]``)."""
    n_envs: int = 1
    """Parallel environments."""
    vec_env: str = "auto"
    """How the ``n_envs`` envs run: ``dummy`` (in the learner's process, SB3's DummyVecEnv),
    ``proc`` (:class:`crl.fast.ProcVecEnv`, one worker process per core), or ``auto`` (``proc``
    when ``n_envs > 1`` and the machine has several cores). Both give the same transitions."""
    checkpoint_every: int = 50_000
    """Steps between checkpoints (taken at the next rollout boundary)."""
    wandb: str = "auto"
    """``offline``, ``online``, ``disabled``, or ``auto`` (online only if configured)."""
    wandb_project: str = "crl"
    """wandb project name."""
    wandb_entity: str | None = None
    """wandb entity (user or team); None for the default."""
    wandb_group: str | None = None
    """wandb group; None for ``<experiment>__<env>__<agent>`` (the seeds of one agent in one experiment)."""
    tags: list[str] = field(default_factory=list)
    """Extra wandb tags, besides the experiment, env, agent and interventions that every run has."""
    device: str = "cpu"
    """torch device."""
    torch_threads: int = 1
    """torch intra-op threads (1 is fastest for small MLPs on few cores)."""
    train_threads: int = 0
    """torch threads during the update only (0: ``torch_threads``). With ``vec_env: proc`` the
    worker processes are idle while the learner updates, so the update may use every core
    while acting keeps ``torch_threads``."""
    progress: bool = True
    """Show a progress bar (on a terminal) or periodic progress lines."""
    loss_log_every: int = 1000
    """Minimum steps between two loss rows (PPO logs after every update anyway)."""
    command: str = ""
    """The command line that started the run (recorded in config.yaml)."""
    diagnostics_every: int = 10_000
    """Steps between ``plasticity/*`` rows (taken at the next rollout boundary); 0 disables."""
    eval_every: int = 0
    """Steps between evaluations on every regime seen so far (``eval/regime_<k>/return``); 0 disables."""
    eval_episodes: int = 3
    """Episodes per regime in each evaluation (deterministic actions)."""
    summary_last_frac: float = 0.1
    """Share of a regime (at its end) whose episodes give the regime's ``final_return``."""


#: The largest seed (numpy's and SB3's seeds are 32-bit).
MAX_SEED = 2**32 - 1

#: What an experiment name may be: one folder name of letters, digits, ``.``, ``_`` and ``-``,
#: starting with a letter or digit, at most 64 characters (also wandb's limit for a tag).
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: torch devices a run may use (``auto``: SB3 picks CUDA when there is one).
DEVICE_NAME = re.compile(r"cpu|auto|mps|cuda(:[0-9]+)?")


def check_run_config(cfg: RunConfig) -> None:
    """Check every field of ``cfg`` that does not need the catalog; one-line :class:`ConfigError`.

    Counts have upper bounds (a larger value is a typo: ``--steps 1e20``), the experiment is
    one safe folder name, the device exists on this machine, and the run folder can be made.
    Nothing is written.
    """
    for name in ("env", "agent"):
        if not isinstance(getattr(cfg, name), str) or not getattr(cfg, name).strip():
            raise ConfigError(f"{name} must be a name or a path, got {getattr(cfg, name)!r}")
    check_int("steps", cfg.steps, minimum=1, maximum=MAX_COUNT)
    check_int("seed", cfg.seed, minimum=0, maximum=MAX_SEED)
    check_int("n_envs", cfg.n_envs, minimum=1, maximum=4096)
    check_int("torch_threads", cfg.torch_threads, minimum=1, maximum=1024)
    check_int("train_threads", cfg.train_threads, minimum=0, maximum=1024)
    for name in ("checkpoint_every", "loss_log_every"):
        check_int(name, getattr(cfg, name), minimum=1, maximum=MAX_COUNT)
    check_int("diagnostics_every", cfg.diagnostics_every, minimum=0, maximum=MAX_COUNT)
    check_int("eval_every", cfg.eval_every, minimum=0, maximum=MAX_COUNT)
    check_int("eval_episodes", cfg.eval_episodes, minimum=1, maximum=10**5)
    if cfg.vec_env not in VEC_ENVS:
        raise ConfigError(f"vec_env must be one of {', '.join(VEC_ENVS)}; got {cfg.vec_env!r}")
    if cfg.wandb not in WANDB_MODES:
        raise ConfigError(f"wandb must be one of {', '.join(WANDB_MODES)}; got {cfg.wandb!r}")
    check_number("summary_last_frac", cfg.summary_last_frac, 0, 1, low_open=True)
    check_wandb_names(cfg)
    check_experiment(cfg.experiment)
    check_device(cfg.device)
    check_run_dir(cfg.run_dir, cfg.experiment)


def check_experiment(name: Any) -> str:
    """``name`` if it is a valid experiment name (:data:`EXPERIMENT_NAME`); else a one-line ConfigError.

    The experiment is a folder under the run dir, so it is one path component: no ``/``,
    no ``..``, no absolute path, nothing that escapes the run dir.

    Example:
        >>> check_experiment("quickstart")
        'quickstart'
        >>> check_experiment("/x")
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: experiment must be a folder name: 1-64 of a-z A-Z 0-9 . _ -, first not . or -; got '/x'
    """
    if isinstance(name, str) and EXPERIMENT_NAME.fullmatch(name):
        return name
    raise ConfigError(f"experiment must be a folder name: 1-64 of a-z A-Z 0-9 . _ -, first not . or -; got {name!r}")


def check_device(device: Any) -> str:
    """``device`` if it is ``cpu``, ``auto``, ``cuda``, ``cuda:N`` or ``mps`` and this machine has
    it; else a one-line ConfigError (no silent fall-back to the CPU). Imports torch only for a
    device other than ``cpu``/``auto``.

    Example:
        >>> check_device("cpu")
        'cpu'
        >>> check_device("banana")
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: device must be cpu, auto, cuda, cuda:N or mps, got 'banana'
    """
    if not isinstance(device, str) or not DEVICE_NAME.fullmatch(device):
        raise ConfigError(f"device must be cpu, auto, cuda, cuda:N or mps, got {device!r}")
    if device in ("cpu", "auto"):
        return device
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device mps: this machine has no MPS device; use --device cpu")
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        has = f"CUDA devices 0-{count - 1}" if count else "no CUDA device"
        raise ConfigError(f"device {device}: this machine has {has}; use --device cpu")
    return device


def check_run_dir(run_dir: Any, *parts: str) -> Path:
    """The folder ``run_dir/parts...`` if it is, or can be made, a writable folder; else a
    one-line ConfigError. Nothing is created: the nearest existing folder must be writable.

    Example:
        >>> check_run_dir("runs", "default")
        PosixPath('runs/default')
    """
    if not isinstance(run_dir, (str, os.PathLike)) or not str(run_dir).strip():
        raise ConfigError(f"run_dir must be a folder path, got {run_dir!r}")
    path = Path(run_dir, *parts)
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            raise ConfigError(f"run_dir {str(run_dir)!r}: {existing} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"run_dir {str(run_dir)!r}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"run_dir {str(run_dir)!r}: cannot write in {existing} (read-only or permission denied)")
    return path


def check_betas(betas: Any) -> None:
    """Adam's ``betas``: a list of two numbers in [0, 1).

    Example:
        >>> check_betas([0.9])
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: optimizer.betas must be a list of two numbers in [0, 1), got [0.9]
    """
    ok = isinstance(betas, (list, tuple)) and len(betas) == 2
    if ok:
        try:
            for b in betas:
                check_number("beta", b, 0, 1, high_open=True)
        except ConfigError:
            ok = False
    if not ok:
        raise ConfigError(f"optimizer.betas must be a list of two numbers in [0, 1), got {betas!r}")


def check_wandb_names(cfg: RunConfig) -> None:
    """Check ``wandb_project``, ``wandb_entity``, ``wandb_group`` and ``tags`` (wandb's own limits).

    Example:
        >>> check_wandb_names(RunConfig(env="x", agent="ppo", tags=["ablation", ""]))
        Traceback (most recent call last):
        ...
        crl.errors.ConfigError: tags: each tag must be a string of 1 to 64 characters, got ''
    """
    for key in ("wandb_project", "wandb_entity", "wandb_group"):
        v = getattr(cfg, key)
        if v is None and key != "wandb_project":
            continue
        bad = "/\\#?%:" if key != "wandb_group" else ""
        if not isinstance(v, str) or not v.strip() or len(v) > 128 or any(c in v for c in bad):
            without = f" without {' '.join(bad)}" if bad else ""
            raise ConfigError(f"{key} must be a string of 1 to 128 characters{without}, got {v!r}")
    if not isinstance(cfg.tags, list):
        raise ConfigError(f"tags must be a list of strings, got {cfg.tags!r}")
    for t in cfg.tags:
        if not isinstance(t, str) or not t.strip() or len(t) > 64:
            raise ConfigError(f"tags: each tag must be a string of 1 to 64 characters, got {t!r}")


@dataclass
class SweepSpec:
    """A sweep file.

    Read by :func:`crl.sweep.load_sweep`, expanded into :class:`RunConfig` s by :func:`crl.sweep.expand`.

    Example:
        >>> SweepSpec(description="demo", envs=["CartPole-v1"], agents=["ppo"], seeds=2).seed_list
        [0, 1]
    """

    description: str
    """What the sweep compares, where it comes from, and its measured cost."""
    envs: list[str]
    """Env names (catalog names, YAML paths or Gymnasium ids)."""
    agents: list[str]
    """Agent names (catalog names or YAML paths)."""
    seeds: list[int] | int = 1
    """Seeds, or a count n meaning seeds 0..n-1."""
    steps: int = 100_000
    """Environment steps per run."""
    experiment: str = ""
    """Folder under the runs dir (default: the file's stem)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides applied to every env."""
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides applied to every agent."""
    n_envs: int = 1
    """Parallel envs per run (also the CPUs a Ray task declares)."""
    checkpoint_every: int = 50_000
    """Steps between checkpoints."""
    wandb: str = "auto"
    """wandb mode of every run."""
    report: bool = False
    """Build the HTML report of the experiment at the end."""
    retries: int | None = None
    """Times a failed run is retried (default: 0 locally, 2 on Ray); ``--retries`` overrides."""
    run: dict[str, Any] = field(default_factory=dict)
    """Other :class:`~crl.run.RunConfig` fields for every run (``loss_log_every``, ``wandb_project``...)."""

    @property
    def seed_list(self) -> list[int]:
        """The seeds: the list, or ``0..n-1`` for a count ``n``."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of dataclass ``cls``, on one line.

    The one source of the fields' documentation: ``crl train --help`` shows it.

    Example:
        >>> field_docs(RunConfig)["steps"]
        'Environment steps to train for (over all parallel envs).'
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out = {}
    for a, b in itertools.pairwise(body):
        if (
            isinstance(a, ast.AnnAssign)
            and isinstance(a.target, ast.Name)
            and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant)
            and isinstance(b.value.value, str)
        ):
            out[a.target.id] = " ".join(b.value.value.split())
    return out
