"""Leaner SAC updates and acting with the same math as stable-baselines3's :class:`~stable_baselines3.SAC`.

:class:`FastSAC` is a ``SAC`` subclass (same SB3 policy, same saved-model format: a FastSAC
``model.zip`` loads with ``SAC.load``) whose :meth:`FastSAC.train` and action sampling differ
only in overheads, where the agent's configuration allows (:meth:`FastSAC.fast_path_reason`):

- each gradient step is computed by hand (:mod:`crl.fast.sac_update`): the actor's squashed
  Gaussian, the entropy coefficient's step, the soft Bellman target, the critics' and the
  actor's losses and gradients with a dozen matrix products per network (torch's own
  kernels), no ``torch.distributions`` objects and no autograd graph; the optimizers and their
  hooks run as in SB3 (:func:`crl.fast.adam.step`), the target critics follow in one
  ``torch._foreach`` pair;
- the replay batch is drawn with the same two NumPy draws as ``ReplayBuffer.sample`` and its
  rows gathered with ``np.take`` (with the critic worker, straight into the worker's shared
  buffers), without its per-field conversions;
- the step runs under one ``torch.no_grad`` (the optimizers' hooks and feature captures still
  see autograd on, as in SB3);
- acting after the warm-up computes the actor's action for the last observation by hand (the
  same draw from torch's generator as SB3's ``predict``) and sets the networks' training flags
  directly instead of walking the modules twice per step;
- the logger gets the means of the step's values once per ``train`` call;
- with ``parallel_update`` (default: automatic, on x86 machines with 2+ usable cores and
  networks big enough to pay), about half of every gradient step's large products (critic 1's
  passes and gradients, the actor's pass on the next observations, a weight gradient of the
  actor) run in a worker process (:class:`crl.fast.sac_worker.SacWorker`) while the trainer
  computes the rest and steps the optimizers: bitwise the same parameters after each step.

Where the configuration is outside these (gSDE, other networks or features extractors, hooks
other than crl's feature capture, a replay buffer other than SB3's plain ``ReplayBuffer``,
``VecNormalize``, batch norm), :meth:`train` and acting are SB3's own; the choice is made at
every ``train`` call (an intervention that swaps a layer or adds a hook is seen at once) and
:attr:`FastSAC.fast_path` says which was taken last.

With the same seed, FastSAC and SAC draw the same batches and noise and make the same updates
up to float rounding (tested).

Example:
    >>> import gymnasium as gym
    >>> model = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=50, batch_size=32, seed=0)
    >>> _ = model.learn(60)
    >>> model.fast_path, model._n_updates
    (True, 10)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise

from crl.fast import adam
from crl.fast.sac_update import (
    Batch,
    SacPlan,
    StepOut,
    gradient_step,
    module_parameters,
    sample_batch,
    signature,
    unsupported,
)
from crl.fast.sac_worker import ParallelChooser, SacWorker, parallel_gradient_step
from crl.plasticity.optimizers import fused_optimizers
from crl.system import usable_cores

__all__ = ["FastSAC", "PARALLEL_MIN_WORK", "mean_of"]

#: ``parallel_update=None`` (automatic) uses the critic worker when ``batch_size`` times the
#: critics' parameter count reaches this. SB3's default SAC (256x256 twin critics, batches of
#: 256) does about 36 million on Hopper; 64x64 critics with batches of 64 about 0.6 million.
PARALLEL_MIN_WORK = 4_000_000


def mean_of(values: list[float]) -> np.floating:
    """``np.mean(values)``, as SB3's ``SAC.train`` logs its losses; a single value is returned as
    the same ``np.float64`` without ``np.mean``'s ~10 us (one gradient step per env step logs
    four of them at every step).

    Example:
        >>> bool(mean_of([0.25]) == np.mean([0.25])), type(mean_of([0.25])) is type(np.mean([0.25]))
        (True, True)
        >>> float(mean_of([1.0, 2.0]))
        1.5
    """
    return np.float64(values[0]) if len(values) == 1 else np.mean(values)


class FastSAC(SAC):
    """SB3 SAC with a leaner :meth:`train` and action sampling (same losses, gradients and
    random draws). :attr:`fast_path` says whether the last ``train`` call took the hand-written
    step (``False``: SB3's, see :meth:`fast_path_reason`).

    Args:
        parallel_update: compute about half of each gradient step's large products in a
            worker process (``True``), never (``False``), or when it pays (``None``: 2+ usable
            cores and ``batch_size`` x critic parameters >= :data:`PARALLEL_MIN_WORK`, and then
            while timed probes find it faster than one process, :class:`ParallelChooser`); only
            on the hand-written path, with 2+ critics, on x86 CPUs (:meth:`SacWorker.unsupported`).
        *args, **kwargs: those of :class:`~stable_baselines3.SAC`.

    :attr:`parallel_steps` counts the gradient steps that used the worker since the model was
    built or loaded. FastSAC is a :class:`crl.fast.protocol.FastLoop`.
    """

    fast_path: bool | None = None
    parallel_update: bool | None = None
    parallel_steps: int = 0
    _plan: SacPlan | None = None
    _miss: tuple[Any, ...] | None = None  # the policy (its signature, its parameters kept) that has no plan
    _sac_worker: SacWorker | None = None
    _chooser: ParallelChooser | None = None

    def __init__(self, *args: Any, parallel_update: bool | None = None, **kwargs: Any) -> None:
        self.parallel_update = parallel_update
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        """SB3's set-up, then the entropy coefficient's Adam as torch's fused kernel where this
        torch has it for the CPU (:func:`crl.plasticity.optimizers.fused_optimizers`): the same
        update rule, and the step of one scalar takes ~18 us instead of the per-tensor
        kernel's ~110 us (about 1 % of a gradient step). A resumed or loaded model's saved
        optimizer settings still apply (``load_state_dict``).
        """
        super()._setup_model()
        if self.ent_coef_optimizer is not None and "adam" in fused_optimizers() and self.device.type == "cpu":
            self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=self.lr_schedule(1), fused=True)

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_plan",
            "_miss",
            "fast_path",
            "_sac_worker",
            "_chooser",
            "parallel_steps",
        ]

    def close_workers(self) -> None:
        """Stop the critic worker process, if any (a later update starts a new one)."""
        if self._sac_worker is not None:
            self._sac_worker.close()
            self._sac_worker = None

    def policy_will_change(self) -> None:
        """Nothing to do: SAC defers no work inside a rollout (:class:`crl.fast.protocol.FastLoop`)."""

    def _worker_for(self, plan: SacPlan, batch: Batch) -> SacWorker | None:
        """The critic worker for a gradient step on ``batch``, (re)built if needed; ``None``: one process."""
        usable = (
            self.parallel_update is not False
            and SacWorker.unsupported(plan) is None
            and isinstance(batch.discounts, float)
            and all(x.dtype == th.float32 for x in batch[:5])
        )
        if self.parallel_update is not None:
            self._chooser = None
        elif usable:
            work = len(batch.observations) * sum(p.numel() for p in plan.critic_params)
            usable = usable_cores() >= 2 and work >= PARALLEL_MIN_WORK
            self._chooser = (self._chooser or ParallelChooser()) if usable else None
            if self._chooser is not None and not self._chooser.parallel():
                return None  # the worker, if any, waits on its pipe
        if not usable:
            self.close_workers()
            return None
        w = self._sac_worker
        if w is None or not w.serves(plan, len(batch.observations)):
            self.close_workers()
            w = self._sac_worker = SacWorker(plan, len(batch.observations))
        return w

    def fast_path_reason(self) -> str | None:
        """Why :meth:`train` takes SB3's own step now (``None``: the hand-written one)."""
        if self.use_sde:
            return "gSDE"
        if type(self.replay_buffer) is not ReplayBuffer or self.replay_buffer.optimize_memory_usage:
            return f"replay buffer {type(self.replay_buffer).__name__} (only SB3's plain ReplayBuffer)"
        if self._vec_normalize_env is not None:
            return "VecNormalize (the batch would be normalised)"
        if self.batch_norm_stats or self.device.type != "cpu":
            return "batch norm or a device other than the CPU"
        if not isinstance(self.observation_space, spaces.Box) or len(self.observation_space.shape) != 1:
            return "observations that are not flat vectors"
        return unsupported(self.policy)

    def _current_plan(self) -> SacPlan | None:
        """The hand plan of the policy as it is now (rebuilt when modules or hooks changed)."""
        plan = self._plan
        if plan is not None and plan.matches(self.policy):
            return plan
        self._plan = None
        modules = list(self.policy.modules())
        key = (self.policy, signature(modules))
        if self._miss is None or self._miss[:2] != key:
            if self.fast_path_reason() is None:
                self._plan = SacPlan(self.policy)
            else:
                self._miss = (*key, module_parameters(modules))  # not again until the policy changes
        return self._plan

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """``gradient_steps`` steps of SAC on replay batches of ``batch_size``, by hand where
        :meth:`fast_path_reason` allows, else SB3's ``SAC.train``.
        """
        plan = self._current_plan()
        self.fast_path = plan is not None
        if plan is None:
            self.close_workers()
            return super().train(gradient_steps, batch_size)
        plan.set_training(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        outs = []
        for gradient_step_i in range(gradient_steps):
            before = self._sac_worker
            into = None  # the worker's shared buffers, unless _worker_for rebuilds it
            if before is not None and before.built_for(plan, batch_size):
                into = before.batch_buffers()
            batch = sample_batch(self.replay_buffer, batch_size, self.gamma, into)
            polyak = gradient_step_i % self.target_update_interval == 0
            worker = self._worker_for(plan, batch)
            start = time.perf_counter()
            if worker is None:
                outs.append(gradient_step(plan, self, batch, polyak, adam.step))
            else:
                outs.append(parallel_gradient_step(worker, self, batch, polyak, adam.step))
                self.parallel_steps += 1
            if self._chooser is not None and (worker is None or worker is before):  # not a start-up
                self._chooser.record(worker is not None, time.perf_counter() - start)
        self._n_updates += gradient_steps
        self._log(outs)

    def _log(self, outs: list[StepOut]) -> None:
        """SB3's ``train/`` records: the means over this call's steps."""
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", mean_of([o.ent_coef.item() for o in outs]))
        self.logger.record("train/actor_loss", mean_of([o.actor_loss.item() for o in outs]))
        self.logger.record("train/critic_loss", mean_of([o.critic_loss.item() for o in outs]))
        if outs and outs[0].ent_coef_loss is not None:
            self.logger.record("train/ent_coef_loss", mean_of([o.ent_coef_loss.item() for o in outs]))  # type: ignore[union-attr]

    def collect_rollouts(self, *args: Any, **kwargs: Any) -> Any:
        """SB3's ``collect_rollouts``; where the plan applies, its ``policy.set_training_mode``
        calls (one per env step) set the plain modules' flags directly (:meth:`SacPlan.set_training`).
        """
        plan = self._plan
        if plan is None or not plan.matches(self.policy):
            self._plan = None  # the next update builds a new one (or steps aside)
            return super().collect_rollouts(*args, **kwargs)
        self.policy.__dict__["set_training_mode"] = plan.set_training  # for this call only
        try:
            return super().collect_rollouts(*args, **kwargs)
        finally:
            del self.policy.__dict__["set_training_mode"]

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """SB3's action sampling; after the warm-up, with the actor's forward by hand where the
        plan applies (the same draw from torch's generator as ``policy.predict``).
        """
        warm = self.num_timesteps < learning_starts
        plan = None if warm else self._current_plan()  # the policy as it is now (a callback may have changed it)
        if plan is None or not isinstance(self.action_space, spaces.Box):
            return super()._sample_action(learning_starts, action_noise, n_envs)
        assert self._last_obs is not None, "self._last_obs was not set"
        plan.set_training(False)
        obs = th.as_tensor(np.asarray(self._last_obs).reshape((-1, *self.observation_space.shape))).float()
        with th.no_grad():
            actions = plan.actor_act(obs).numpy().reshape((-1, *self.action_space.shape))
        scaled_action = self.policy.scale_action(self.policy.unscale_action(actions))
        if action_noise is not None:
            scaled_action = np.clip(scaled_action + action_noise(), -1, 1)
        return self.policy.unscale_action(scaled_action), scaled_action
