"""One run = (env, agent, seed): build, train, track, checkpoint, resume.

:func:`train` is what ``crl train`` calls. It resolves the env and agent specs, builds
the SB3 model, and drives ``model.learn`` with crl's callbacks:

* :class:`RunCallback`: episode rows (``charts/*`` with ``regime/*``), regime
  boundaries (``regimes.csv``, boundary hooks of the interventions), loss rows
  (``losses/*``, ``time/sps``), the NaN guard, periodic checkpoints and the progress bar.

Run folder: ``<run_dir>/<experiment>/<env>__<agent>__s<seed>/`` with ``config.yaml``
(fully resolved), ``metrics.csv``, ``regimes.csv``, ``status.json``, ``checkpoints/``,
``model.zip`` (SB3 format, at the end) and ``wandb/``.

Resume: checkpoints are taken at rollout boundaries (after an update) and hold the
model and optimizer, the interventions, every env layer's state (physics, drift and
schedule, episode counters), the global RNGs and the tracker position; re-running the
same command continues from the last one with the same regime sequence and without
duplicated or missing metric rows.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import os
import shlex
import signal
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from crl import __version__
from crl.agents import AgentSpec, build_model
from crl.catalog import EnvSpec, resolve_agent, resolve_env
from crl.checkpoint import atomic_save, get_env_state, load, rng_state, set_env_state, set_rng_state
from crl.config import apply_overrides, to_plain, yaml_load
from crl.diagnostics import RunMonitor
from crl.errors import ConfigError, CrlError, NonFiniteLossError
from crl.plasticity import InterventionSet
from crl.system import usable_cores
from crl.track import Tracker, flatten, wandb_default_mode

__all__ = ["RunConfig", "RunResult", "train", "run_name", "make_vec_env", "all_finite", "read_status", "RunCallback"]

STATUS_FILE = "status.json"
CHECKPOINT = "checkpoints/last.pt"


@dataclass
class RunConfig:
    """Everything that defines one run. Defaults are what ``crl train`` uses."""

    env: str
    """Env: catalog name (``slippery-ant``), YAML path, or Gymnasium id."""
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
    ``proc`` (:class:`crl.vecenv.ProcVecEnv`, one worker process per core), or ``auto`` (``proc``
    when ``n_envs > 1`` and the machine has several cores). Both give the same transitions."""
    checkpoint_every: int = 50_000
    """Steps between checkpoints (taken at the next rollout boundary)."""
    wandb: str = "auto"
    """``offline``, ``online``, ``disabled``, or ``auto`` (online only if configured)."""
    wandb_project: str = "crl"
    """wandb project name."""
    wandb_entity: str | None = None
    """wandb entity (user or team); None for the default."""
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
    # -- diagnostics (crl.diagnostics) --
    diagnostics_every: int = 10_000
    """Steps between ``plasticity/*`` rows (taken at the next rollout boundary); 0 disables."""
    eval_every: int = 0
    """Steps between evaluations on every regime seen so far (``eval/regime_<k>/return``); 0 disables."""
    eval_episodes: int = 3
    """Episodes per regime in each evaluation (deterministic actions)."""
    summary_last_frac: float = 0.1
    """Share of a regime (at its end) whose episodes give the regime's ``final_return``."""


@dataclass
class RunResult:
    """What :func:`train` returns."""

    run_dir: Path
    status: str
    global_step: int
    skipped: bool = False


def run_name(env: EnvSpec, agent: AgentSpec, seed: int) -> str:
    """Folder name of a run: ``<env>__<agent>__s<seed>``."""
    return f"{env.name}__{agent.name}__s{seed}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``status.json`` (None if absent or unreadable)."""
    p = Path(run_dir) / STATUS_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _write_status(run_dir: Path, **fields: Any) -> None:
    current = read_status(run_dir) or {}
    current.update(fields, updated=_now())
    tmp = run_dir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(current, indent=1))
    os.replace(tmp, run_dir / STATUS_FILE)


def _resolve_agent(cfg: RunConfig) -> AgentSpec:
    spec = resolve_agent(cfg.agent)
    if not cfg.agent_kwargs:
        return spec
    data = spec.to_dict()
    name = data.pop("name")
    routed = {}
    top = {f.name for f in dataclasses.fields(AgentSpec)}
    for k, v in cfg.agent_kwargs.items():
        routed[k if k.split(".")[0] in top else f"hyperparameters.{k}"] = v
    return AgentSpec.from_dict(apply_overrides(data, routed), f"agent {name!r} with --agent-kwargs", name=name)


def _make_kwargs(env: EnvSpec, cfg: RunConfig) -> dict[str, Any]:
    kwargs = dict(cfg.env_kwargs)
    if env.base is not None:
        kwargs.setdefault("drift_seed", cfg.seed)
        kwargs["num_envs"] = cfg.n_envs
    return env.make_kwargs(kwargs) if env.base is not None else kwargs


VEC_ENVS = ("auto", "dummy", "proc")


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of ``tensors`` is finite: one fused pass over all of them (the
    check of torch's ``GradScaler``, which also multiplies them by exactly 1.0), falling back to
    ``_foreach`` maxima and then to one check per tensor on torch builds without it.

    Example:
        >>> all_finite([torch.ones(3), torch.zeros(2, 2)])
        True
        >>> all_finite([torch.ones(3), torch.tensor([0.0, float("nan")])])
        False
    """
    try:
        found = torch.zeros((), device=tensors[0].device)
        torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, torch.ones((), device=found.device))
        return not bool(found)
    except (AttributeError, RuntimeError, NotImplementedError):  # older torch, mixed dtypes/devices
        pass
    if hasattr(torch, "_foreach_max"):  # NaN propagates through max
        return bool(torch.isfinite(torch.stack(torch._foreach_max(torch._foreach_abs(tensors)))).all())
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def make_vec_env(env_id: str, make_kwargs: dict[str, Any], n_envs: int, kind: str = "dummy") -> VecEnv:
    """``n_envs`` copies of ``gymnasium.make(env_id, **make_kwargs)``, each with SB3's
    ``Monitor`` outermost, in a ``DummyVecEnv`` (``kind="dummy"``) or a
    :class:`~crl.vecenv.ProcVecEnv` (``"proc"``; ``"auto"``: proc for several envs on several cores).
    """

    def factory() -> gym.Env:
        return Monitor(gym.make(env_id, **make_kwargs))

    if kind == "auto":
        kind = "proc" if n_envs > 1 and usable_cores() > 1 else "dummy"
    if kind == "proc":
        from crl.vecenv import ProcVecEnv

        return ProcVecEnv([factory] * n_envs)
    return DummyVecEnv([factory] * n_envs)


def env_states(venv: VecEnv) -> list[Any]:
    """The checkpointable state of every env of ``venv`` (DummyVecEnv or ProcVecEnv)."""
    if isinstance(venv, DummyVecEnv):
        return [get_env_state(e) for e in venv.envs]
    return venv.get_env_states()


def set_env_states(venv: VecEnv, states: list[Any]) -> None:
    """Restore :func:`env_states`."""
    if isinstance(venv, DummyVecEnv):
        if len(states) != len(venv.envs):
            raise ValueError(f"{len(states)} env states for {len(venv.envs)} envs")
        for e, st in zip(venv.envs, states, strict=True):
            set_env_state(e, st)
    else:
        venv.set_env_states(states)


def _check_env_make(env_id: str, make_kwargs: dict[str, Any]) -> None:
    try:
        gym.make(env_id, **make_kwargs).close()
    except CrlError:
        raise
    except (TypeError, gym.error.Error) as e:
        raise ConfigError(f"env {env_id!r} rejected its arguments: {e}") from None


def _added_default(key: str, value: Any) -> bool:
    """Whether ``key`` is an agent-spec field that a newer crl added, at its default value
    (a run started before the field existed resumes).
    """
    parts = key.split(".")
    if len(parts) != 2 or parts[0] != "agent":
        return False
    field_ = {f.name: f for f in dataclasses.fields(AgentSpec)}.get(parts[1])
    return field_ is not None and field_.default is not dataclasses.MISSING and value == field_.default


def _volatile(d: dict[str, Any]) -> dict[str, Any]:
    """The config without what may change between a run and its resumption: the command line,
    the version, the step budget (a run can be extended) and the tracking settings.
    """
    volatile = ("command", "crl_version", "created", "steps", "progress", "wandb", "vec_env", "train_threads")
    return {k: v for k, v in d.items() if k not in volatile}


class RunCallback(BaseCallback):
    """crl's training callback: episodes, regimes, losses, NaN guard, checkpoints, progress.

    Its counters live here (the trainer side), not in the interventions.
    """

    #: Its ``on_step`` changes the policy only through interventions on a regime change, after
    #: :meth:`crl.fastppo.FastPPO.policy_will_change` (FastPPO's rollouts may then defer work).
    rollout_safe = True

    def __init__(self, runner: _Runner) -> None:
        super().__init__()
        self.runner = runner
        self.segments: list[int] = [0] * runner.cfg.n_envs
        self.pending: list[bool] = [False] * runner.cfg.n_envs
        self.regimes: list[dict[str, Any]] = []
        self.last_ckpt = 0
        self.last_loss_log = -math.inf
        self.t_last = time.perf_counter()
        self.steps_last = 0
        self.sps = 0.0
        self.progress: Any = None
        self.task: Any = None
        self.next_progress_line = 0
        self.seen_n_updates = -1
        self._logged: dict[str, float] = {}
        self._guards: list[Any] = []
        self.monitor = _make_monitor(runner)  # crl.diagnostics: plasticity/*, eval/*, regime summaries

    def _grad_guard(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Optimizer step pre-hook: refuse a step with NaN/inf gradients (the NaN guard)."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        if not all_finite(grads):
            raise NonFiniteLossError(self.model.num_timesteps, "loss gradient")

    # -- state ---------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "segments": list(self.segments),
            "pending": list(self.pending),
            "regimes": self.regimes,
            "last_ckpt": self.last_ckpt,
            "last_loss_log": self.last_loss_log,
            "seen_n_updates": self.seen_n_updates,
            "monitor": self.monitor.state(),
            # the losses SB3's logger holds: an off-policy run logs them at a step count, which may
            # come right after a resume, before the resumed process has trained once
            "logged": {
                k: float(v)
                for k, v in self.model.logger.name_to_value.items()
                if k.startswith("train/") and isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
            },
        }

    def set_state(self, s: dict[str, Any]) -> None:
        self.segments, self.pending, self.regimes = list(s["segments"]), list(s["pending"]), s["regimes"]
        self.last_ckpt, self.seen_n_updates = s["last_ckpt"], s["seen_n_updates"]
        self.last_loss_log = s.get("last_loss_log", -math.inf)
        self._logged = dict(s.get("logged", {}))
        if "monitor" in s:
            self.monitor.load(s["monitor"])

    # -- hooks ---------------------------------------------------------------
    def _on_training_start(self) -> None:
        if self._logged:  # resumed: the logger SB3 just configured starts where the checkpoint's was
            self.model.logger.name_to_value.update(self._logged)
            self._logged = {}
        if not self._guards:
            for opt in _optimizers(self.model):
                self._guards.append(opt.register_step_pre_hook(self._grad_guard))
        self.t_last = time.perf_counter()
        self.steps_last = self.num_timesteps
        if self.runner.cfg.progress and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,}"),
                TextColumn("{task.fields[sps]:>6.0f} steps/s"),
                TextColumn("regime {task.fields[regime]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                self.runner.name,
                total=self.runner.cfg.steps,
                completed=self.num_timesteps,
                sps=0.0,
                regime=self._regime_label(),
            )

    def _regime_label(self) -> str:
        if not self.regimes:
            return "0"
        r = self.regimes[-1]
        params = ", ".join(
            f"{k}={v:.3g}"
            for k, v in r.items()
            if k not in ("segment", "regime", "start_step", "end_step") and isinstance(v, float)
        )
        return f"{r['regime']}" + (f" ({params})" if params else "")

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        step = self.num_timesteps
        for i, info in enumerate(infos):
            if self.pending[i]:
                self.pending[i] = False
                self._regime_started(i, info, step)
            elif not self.regimes and "regime" in info:
                self._open_regime(0, info, 0)
            ep = info.get("episode")
            if ep is not None:
                row = {"charts/episodic_return": ep["r"], "charts/episodic_length": ep["l"]}
                if "regime" in info:
                    row["regime/index"] = info["regime"]
                    row["regime/segment"] = self.segments[i]
                    for k, v in info.items():
                        if k.startswith("drift/") and np.ndim(v) == 0:
                            row["regime/" + k[6:]] = float(v)
                    self.monitor.on_episode(step, self.segments[i], float(ep["r"]))
                self.runner.tracker.log(step, row)
            if info.get("regime_change"):
                self.segments[i] += 1
                self.pending[i] = True
                if self.segments[i] > len(self.regimes) - 1 and self.regimes:
                    self.regimes[-1]["end_step"] = step
                    self.regimes[-1].update(self.monitor.regime_ended(self.regimes[-1]))
        if isinstance(self.model, OffPolicyAlgorithm) and step - self.last_loss_log >= self.runner.cfg.loss_log_every:
            self._log_losses()
        if isinstance(self.model, OffPolicyAlgorithm):
            self.monitor.after_update(step)
        self._update_progress()
        return True

    def _open_regime(self, segment: int, info: dict[str, Any], start: int) -> None:
        row: dict[str, Any] = {"segment": segment, "regime": int(info["regime"]), "start_step": start, "end_step": None}
        for k, v in info.items():
            if k.startswith("drift/") and np.ndim(v) == 0:
                row[k[6:]] = float(v)
        self.regimes.append(row)
        self.monitor.on_regime(row["regime"])
        self.runner.write_regimes(self.regimes)

    def _regime_started(self, i: int, info: dict[str, Any], step: int) -> None:
        seg = self.segments[i]
        if seg <= len(self.regimes) - 1:
            return  # another env already opened this segment
        start = self.regimes[-1]["end_step"] if self.regimes and self.regimes[-1]["end_step"] else step
        self._open_regime(seg, info, start)
        will_change = getattr(self.model, "policy_will_change", None)
        if will_change is not None:  # FastPPO: this rollout's values so far, with the weights before
            will_change()
        self.runner.interventions.on_regime_change(int(info["regime"]))
        self.runner.tracker.log(start, {"regime/boundary": seg, "regime/index": int(info["regime"])})

    def _on_rollout_start(self) -> None:
        if self.runner.cfg.train_threads:
            torch.set_num_threads(self.runner.cfg.torch_threads)
        model = self.model
        if not isinstance(model, OffPolicyAlgorithm):
            self._log_losses()
            if self.num_timesteps > 0:
                self.monitor.after_update(self.num_timesteps)
        self._check_finite()
        if self.num_timesteps - self.last_ckpt >= self.runner.cfg.checkpoint_every:
            self.runner.save_checkpoint()
            self.last_ckpt = self.num_timesteps

    def _on_rollout_end(self) -> None:
        self.monitor.collect_states()
        self.runner.interventions.on_rollout_end()
        if self.runner.cfg.train_threads:
            torch.set_num_threads(self.runner.cfg.train_threads)

    def _on_training_end(self) -> None:
        if self.regimes and self.regimes[-1]["end_step"] is None:  # summary of the regime still open
            self.regimes[-1].update(self.monitor.regime_ended({**self.regimes[-1], "end_step": self.num_timesteps}))
        self._log_losses()
        self._check_finite()
        if self.progress is not None:
            self.progress.stop()

    # -- helpers -------------------------------------------------------------
    def _log_losses(self) -> None:
        n_updates = getattr(self.model, "_n_updates", 0)
        if n_updates == self.seen_n_updates:
            return
        self.seen_n_updates = n_updates
        values = self.model.logger.name_to_value
        row = {}
        for k, v in values.items():
            if k.startswith("train/") and k != "train/n_updates":
                name = {"policy_gradient_loss": "policy_loss", "entropy_loss": "entropy"}.get(k[6:], k[6:])
                row[f"losses/{name}"] = float(v)
        now = time.perf_counter()
        if now > self.t_last and self.num_timesteps > self.steps_last:
            self.sps = (self.num_timesteps - self.steps_last) / (now - self.t_last)
            row["time/sps"] = self.sps
        self.t_last, self.steps_last = now, self.num_timesteps
        self.last_loss_log = self.num_timesteps
        if row:
            self.runner.tracker.log(self.num_timesteps, row)

    def _check_finite(self) -> None:
        loss = self.model.logger.name_to_value.get("train/loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteLossError(self.num_timesteps, "loss")
        for p in self.model.policy.parameters():
            if not torch.isfinite(p).all():
                raise NonFiniteLossError(self.num_timesteps, "parameter")

    def _update_progress(self) -> None:
        if self.progress is not None:
            if self.n_calls % 64 == 0:
                self.progress.update(self.task, completed=self.num_timesteps, sps=self.sps, regime=self._regime_label())
        elif self.runner.cfg.progress and self.num_timesteps >= self.next_progress_line:
            total = self.runner.cfg.steps
            print(
                f"[{self.runner.name}] {self.num_timesteps:,}/{total:,} steps, {self.sps:,.0f} steps/s, "
                f"regime {self._regime_label()}",
                file=sys.stderr,
                flush=True,
            )
            self.next_progress_line = self.num_timesteps + max(total // 10, 1)


def _make_monitor(runner: _Runner) -> RunMonitor:
    """The run's :class:`~crl.diagnostics.RunMonitor` (evaluation env: a separate copy, one env)."""
    cfg = runner.cfg
    kwargs = dict(runner.make_kwargs)
    if "num_envs" in kwargs:
        kwargs["num_envs"] = 1
    return RunMonitor(
        runner.model,
        runner.tracker.log,
        runner.tracker.summary,
        diagnostics_every=cfg.diagnostics_every,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        eval_seed=10_000 + cfg.seed,
        make_eval_env=lambda: gym.make(runner.env_spec.id, **kwargs),
        last_frac=cfg.summary_last_frac,
    )


def _optimizers(model: BaseAlgorithm) -> list[torch.optim.Optimizer]:
    """Every optimizer of an SB3 model (PPO: one; SAC: actor, critic, entropy coefficient)."""
    found = []
    for owner, attr in (
        (model.policy, "optimizer"),
        (getattr(model, "actor", None), "optimizer"),
        (getattr(model, "critic", None), "optimizer"),
        (model, "ent_coef_optimizer"),
    ):
        opt = getattr(owner, attr, None) if owner is not None else None
        if isinstance(opt, torch.optim.Optimizer) and all(opt is not f for f in found):
            found.append(opt)
    return found


class _Runner:
    """Holds the pieces of one run; :func:`train` drives it."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        if isinstance(cfg.steps, bool) or not isinstance(cfg.steps, int) or cfg.steps <= 0:
            raise ConfigError(f"steps must be a positive integer, got {cfg.steps!r}")
        if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {cfg.seed!r}")
        if cfg.n_envs < 1:
            raise ConfigError(f"n_envs must be >= 1, got {cfg.n_envs}")
        if cfg.torch_threads < 1 or cfg.train_threads < 0:
            raise ConfigError(
                f"torch_threads must be >= 1 and train_threads >= 0, got {cfg.torch_threads}, {cfg.train_threads}"
            )
        if cfg.vec_env not in VEC_ENVS:
            raise ConfigError(f"vec_env must be one of {', '.join(VEC_ENVS)}; got {cfg.vec_env!r}")
        if cfg.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}")
        if cfg.diagnostics_every < 0 or cfg.eval_every < 0 or cfg.eval_episodes < 1:
            raise ConfigError("diagnostics_every and eval_every must be >= 0 and eval_episodes >= 1")
        if not 0.0 < cfg.summary_last_frac <= 1.0:
            raise ConfigError(f"summary_last_frac must be in (0, 1], got {cfg.summary_last_frac}")
        if cfg.wandb not in ("auto", "offline", "online", "disabled"):
            raise ConfigError(f"wandb must be one of auto, offline, online, disabled; got {cfg.wandb!r}")
        self.env_spec = resolve_env(cfg.env)
        self.agent_spec = _resolve_agent(cfg)
        self.make_kwargs = _make_kwargs(self.env_spec, cfg)
        _check_env_make(self.env_spec.id, self.make_kwargs)
        self.name = run_name(self.env_spec, self.agent_spec, cfg.seed)
        self.dir = Path(cfg.run_dir) / cfg.experiment / self.name
        self.wandb_mode = wandb_default_mode() if cfg.wandb == "auto" else cfg.wandb
        self.resolved = to_plain(
            {
                "experiment": cfg.experiment,
                "env": {
                    "name": self.env_spec.name,
                    "id": self.env_spec.id,
                    "description": self.env_spec.description,
                    "make_kwargs": self.make_kwargs,
                },
                "agent": self.agent_spec.to_dict(),
                "seed": cfg.seed,
                "steps": cfg.steps,
                "n_envs": cfg.n_envs,
                "vec_env": cfg.vec_env,
                "checkpoint_every": cfg.checkpoint_every,
                "device": cfg.device,
                "torch_threads": cfg.torch_threads,
                "train_threads": cfg.train_threads,
                "wandb": {"mode": self.wandb_mode, "project": cfg.wandb_project, "entity": cfg.wandb_entity},
                "diagnostics": {
                    "every": cfg.diagnostics_every,
                    "eval_every": cfg.eval_every,
                    "eval_episodes": cfg.eval_episodes,
                    "summary_last_frac": cfg.summary_last_frac,
                },
                "command": cfg.command,
                "crl_version": __version__,
            }
        )
        self.tracker: Tracker
        self.interventions: InterventionSet
        self.model: BaseAlgorithm
        self.callback: RunCallback

    # -- folder --------------------------------------------------------------
    def prepare_dir(self, overwrite: bool) -> tuple[bool, dict[str, Any]]:
        """Create or check the run folder. Returns (resume?, status)."""
        cfg_path = self.dir / "config.yaml"
        status = read_status(self.dir) or {}
        if cfg_path.exists() and not overwrite:
            old = yaml_load(cfg_path.read_text()) or {}
            a, b = flatten(_volatile(old)), flatten(_volatile(self.resolved))
            diff = sorted(
                k for k in set(a) | set(b) if a.get(k) != b.get(k) and not (k not in a and _added_default(k, b[k]))
            )
            if diff:
                raise ConfigError(
                    f"{self.dir} holds a run with a different config ({diff[0]}: {a.get(diff[0])!r} "
                    f"vs {b.get(diff[0])!r}); use another --experiment or --overwrite"
                )
            return (self.dir / CHECKPOINT).exists(), status
        if overwrite and self.dir.exists():
            import shutil

            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        return False, {}

    def write_config(self) -> None:
        tmp = self.dir / "config.yaml.tmp"
        tmp.write_text(yaml.safe_dump(self.resolved, sort_keys=False))
        os.replace(tmp, self.dir / "config.yaml")

    def write_regimes(self, regimes: list[dict[str, Any]]) -> None:
        cols = ["segment", "regime", "start_step", "end_step"]
        for r in regimes:
            cols += [k for k in r if k not in cols]
        tmp = self.dir / "regimes.csv.tmp"
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for r in regimes:
                w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
        os.replace(tmp, self.dir / "regimes.csv")

    # -- checkpoints ---------------------------------------------------------
    def save_checkpoint(self) -> None:
        m = self.model
        state = {
            "format": 1,
            "num_timesteps": m.num_timesteps,
            "n_updates": getattr(m, "_n_updates", 0),
            "episode_num": m._episode_num,
            "last_obs": m._last_obs,
            "last_episode_starts": m._last_episode_starts,
            "last_original_obs": m._last_original_obs,
            "ep_info_buffer": list(m.ep_info_buffer or []),
            "ep_success_buffer": list(m.ep_success_buffer or []),
            "params": m.get_parameters(),
            "tensors": {k: getattr(m, k).detach().clone() for k in ("log_ent_coef",) if hasattr(m, k)},
            "envs": env_states(m.get_env()),
            "action_space_rng": m.action_space.np_random.bit_generator.state,
            "rng": rng_state(),
            "interventions": self.interventions.state_dict(),
            "callback": self.callback.get_state(),
            "tracker": self.tracker.state(),
            "wandb_id": self.wandb_id,
        }
        if isinstance(m, OffPolicyAlgorithm):
            import pickle

            state["replay_buffer"] = pickle.dumps(m.replay_buffer)
        atomic_save(state, self.dir / CHECKPOINT)
        _write_status(self.dir, status="running", global_step=m.num_timesteps, checkpoint_step=m.num_timesteps)

    def restore_checkpoint(self, state: dict[str, Any]) -> None:
        m = self.model
        self.interventions.load_state_dict(state["interventions"])  # may rebuild modules (injection)
        m.set_parameters(state["params"], exact_match=True)
        for k, v in state["tensors"].items():
            with torch.no_grad():
                getattr(m, k).copy_(v)
        m.num_timesteps = state["num_timesteps"]
        if hasattr(m, "_n_updates"):
            m._n_updates = state["n_updates"]
        m._episode_num = state["episode_num"]
        m._last_obs = state["last_obs"]
        m._last_episode_starts = state["last_episode_starts"]
        m._last_original_obs = state["last_original_obs"]
        m.ep_info_buffer = deque(state["ep_info_buffer"], maxlen=m._stats_window_size)
        m.ep_success_buffer = deque(state["ep_success_buffer"], maxlen=m._stats_window_size)
        set_env_states(m.get_env(), state["envs"])
        m.action_space.np_random.bit_generator.state = state["action_space_rng"]
        if "replay_buffer" in state:
            import pickle

            m.replay_buffer = pickle.loads(state["replay_buffer"])
        self.callback.set_state(state["callback"])
        self.tracker.restore(state["tracker"])
        self.write_regimes(self.callback.regimes)
        set_rng_state(state["rng"])


def train(cfg: RunConfig, resume: bool | None = None, overwrite: bool = False) -> RunResult:
    """Train one run; resume it if its folder holds an unfinished run.

    Args:
        cfg: the run.
        resume: True to require a checkpoint, False to refuse resuming an unfinished run,
            None (default) to resume when possible.
        overwrite: delete an existing run folder first.

    A finished run is not trained again (``RunResult.skipped``). Bad input raises
    :class:`~crl.errors.ConfigError` before the run folder is created.
    """
    r = _Runner(cfg)
    can_resume, status = r.prepare_dir(overwrite)
    if status.get("status") == "finished" and not overwrite:
        return RunResult(r.dir, "finished", int(status.get("global_step", 0)), skipped=True)
    if resume is True and not can_resume:
        raise ConfigError(f"nothing to resume in {r.dir}: no checkpoint")
    if resume is False and status and not overwrite:
        raise ConfigError(f"{r.dir} holds an unfinished run; resume it (--resume) or --overwrite")
    ckpt = load(r.dir / CHECKPOINT) if can_resume else None
    if ckpt is None:
        for stale in ("metrics.csv", "regimes.csv"):
            (r.dir / stale).unlink(missing_ok=True)
    r.write_config()
    r.wandb_id = (ckpt or {}).get("wandb_id") or status.get("wandb_id") or uuid.uuid4().hex[:12]
    _write_status(
        r.dir,
        status="running",
        steps=cfg.steps,
        error=None,
        wandb_id=r.wandb_id,
        started=status.get("started") or _now(),
        global_step=(ckpt or {}).get("num_timesteps", 0),
    )
    torch.set_num_threads(cfg.torch_threads)
    venv: VecEnv | None = None
    try:
        venv = make_vec_env(r.env_spec.id, r.make_kwargs, cfg.n_envs, cfg.vec_env)
        r.model, r.interventions = build_model(r.agent_spec, venv, seed=cfg.seed, device=cfg.device)
        r.tracker = Tracker(
            r.dir,
            wandb_mode=r.wandb_mode,
            wandb_init={
                "project": cfg.wandb_project,
                "entity": cfg.wandb_entity,
                "id": r.wandb_id,
                "group": f"{r.env_spec.name}__{r.agent_spec.name}",
                "name": r.name,
                "job_type": "train",
                "tags": [
                    r.env_spec.name,
                    r.agent_spec.name,
                    cfg.experiment,
                    *(next(iter(i)) if isinstance(i, dict) else str(i) for i in r.agent_spec.interventions),
                ],
                "config": flatten(r.resolved),
            },
        )
        r.callback = RunCallback(r)
        if ckpt is not None:
            r.restore_checkpoint(ckpt)
        else:
            r.tracker.restore({"columns": ["global_step"], "rows": 0})
    except Exception as e:
        _write_status(r.dir, status="failed", error=f"{type(e).__name__}: {e}")
        if venv is not None:
            venv.close()
        raise
    return _learn(r)


def _learn(r: _Runner) -> RunResult:
    cfg, model = r.cfg, r.model
    remaining = cfg.steps - model.num_timesteps
    old_term = signal.getsignal(signal.SIGTERM)

    def _sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    in_main = sys.modules["threading"].current_thread() is sys.modules["threading"].main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _sigterm)
    status, error = "failed", None
    try:
        if remaining > 0:
            model.learn(
                total_timesteps=remaining,
                callback=r.callback,
                reset_num_timesteps=model.num_timesteps == 0 and r.callback.last_ckpt == 0,
            )
        model.save(r.dir / "model.zip")
        if r.interventions.interventions:  # their state (EWC importances, CBP utilities...) beside it
            atomic_save(r.interventions.state_dict(), r.dir / "interventions.pt")
        if r.callback.regimes:
            r.write_regimes(r.callback.regimes)
        status = "finished"
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted (the last checkpoint is kept)"
        raise
    except NonFiniteLossError as e:
        error = str(e)
        raise
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_term)
        env = model.get_env()
        if env is not None:
            env.close()  # ProcVecEnv: stop the worker processes
        if hasattr(model, "close_workers"):
            model.close_workers()  # FastPPO: the critic worker
        if r.callback.progress is not None:
            r.callback.progress.stop()
        r.tracker.close(status)
        _write_status(r.dir, status=status, error=error, global_step=model.num_timesteps)
    return RunResult(r.dir, status, model.num_timesteps)


def command_line() -> str:
    """The current process's command line, shell-quoted (recorded in config.yaml)."""
    return " ".join(shlex.quote(a) for a in ["crl", *sys.argv[1:]])
