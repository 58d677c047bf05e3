"""One run = (env, agent, seed): the :class:`Runner` builds it, trains it, and finishes it.

Run folder: ``<run_dir>/<experiment>/<env>__<agent>__s<seed>/`` with ``config.yaml``
(fully resolved), ``metrics.csv``, ``regimes.csv``, ``status.json``, ``checkpoints/``,
``model.zip`` (SB3 format, at the end), ``interventions.pt`` and ``wandb/``.

Resume: checkpoints are taken at rollout boundaries (after an update) and hold the model
and optimizer, the interventions, every env layer's state (physics, drift and schedule,
episode counters), the global RNGs, the callbacks' counters and the tracker position;
re-running the same command continues from the last one with the same regime sequence and
without duplicated or missing metric rows.

Integrity: the run holds its folder's lock (:mod:`crl.run.lock`) from before it reads the
folder until it ends, so a second process on the same folder stops with one line. A
checkpoint is framed with its step and checksum (:func:`crl.checkpoint.save_checkpoint`),
the previous one is kept as ``checkpoints/previous.pt``, and it holds a copy of
``metrics.csv`` and ``regimes.csv`` as they were when it was taken: a resume puts exactly
those rows back (repairing, with a warning, files that lost or changed rows), and falls back
to the previous checkpoint, with a warning, when the last one is damaged.
"""

from __future__ import annotations

import signal
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from crl.agents import build_model, with_tasks
from crl.catalog import resolve_agent
from crl.checkpoint import DamagedCheckpoint, atomic_save, rng_state, save_checkpoint, set_rng_state
from crl.dashboard import summary_scores
from crl.errors import ConfigError, NonFiniteLossError
from crl.fast import FastLoop
from crl.plasticity import InterventionSet
from crl.run.callbacks import (
    Checkpointer,
    CrlCallbacks,
    ProgressCallback,
    RegimeLogger,
    TrainThreads,
    logging_callbacks,
)
from crl.run.callbacks.checkpoints import FinalCheckpoint
from crl.run.callbacks.nan_guard import check_parameters
from crl.run.envs import check_env_make, make_vec_env
from crl.run.folder import RunFolder
from crl.run.lock import RunLock
from crl.run.resolve import check_extension, check_run, env_of, make_kwargs, resolved_config, run_name
from crl.run.state import model_state, restore_model_state
from crl.run.status import checkpoint_step, has_checkpoint, now, write_status
from crl.spec import RunConfig, check_run_config
from crl.track import Tracker, wandb_default_mode, wandb_init_kwargs

__all__ = ["Runner", "RunResult", "train", "command_line", "CHECKPOINT_FORMAT"]


@dataclass
class RunResult:
    """What :func:`train` returns."""

    run_dir: Any
    """The run folder (a :class:`pathlib.Path`)."""
    status: str
    """``finished`` (or the status of a run that stopped)."""
    global_step: int
    """Environment steps done."""
    skipped: bool = False
    """True when the run had finished before and was not trained again."""


#: Version of the checkpoint layout (2: the callbacks' state by name).
CHECKPOINT_FORMAT = 2


class Runner:
    """The pieces of one run.

    ``Runner(cfg)`` resolves and checks everything (no file is written); :meth:`start`
    prepares the folder and builds the model (resuming from the last checkpoint when there
    is one); :meth:`learn` trains and finishes the run.

    Args:
        cfg: the run.
        callbacks: extra SB3 callbacks, run after crl's logging ones and before the checkpoint.
    """

    def __init__(self, cfg: RunConfig, callbacks: Sequence[BaseCallback] = ()) -> None:
        check_run_config(cfg)
        self.cfg = cfg
        self.user_callbacks = list(callbacks)
        self.env_spec = env_of(cfg.env)
        self.agent_spec = resolve_agent(cfg.agent, cfg.agent_kwargs)
        self.make_kwargs = make_kwargs(self.env_spec, cfg, task_id=self.agent_spec.task_id)
        tasks = check_env_make(self.env_spec.id, self.make_kwargs)
        if self.agent_spec.task_id:
            self.agent_spec = with_tasks(self.agent_spec, tasks)
        self.name = run_name(self.env_spec, self.agent_spec, cfg.seed)
        self.folder = RunFolder(Path(cfg.run_dir) / cfg.experiment / self.name)
        check_run(cfg, self.agent_spec, self.folder.path)
        self.dir = self.folder.path
        self.lock = RunLock(self.dir)
        self.wandb_mode = wandb_default_mode() if cfg.wandb == "auto" else cfg.wandb
        self.resolved = resolved_config(cfg, self.env_spec, self.agent_spec, self.make_kwargs, self.wandb_mode)
        self.wandb_id = ""
        self.model: BaseAlgorithm
        self.interventions: InterventionSet
        self.tracker: Tracker
        self.callbacks: CrlCallbacks

    # -- building ----------------------------------------------------------------
    def build(self, wandb_id: str) -> None:
        """Build the envs, the model, the tracker and the callbacks."""
        cfg = self.cfg
        self.wandb_id = wandb_id
        venv = make_vec_env(self.env_spec.id, self.make_kwargs, cfg.n_envs, cfg.vec_env)
        try:
            self.model, self.interventions = build_model(self.agent_spec, venv, seed=cfg.seed, device=cfg.device)
        except Exception:
            venv.close()
            raise
        self.tracker = Tracker(self.dir, wandb_mode=self.wandb_mode, wandb_init=self._wandb_init())
        self.callbacks = self._callbacks()

    def _wandb_init(self) -> dict[str, Any]:
        return wandb_init_kwargs(self.cfg, self.env_spec, self.agent_spec, self.resolved, self.name, self.wandb_id)

    def _make_eval_env(self) -> gym.Env:
        return gym.make(self.env_spec.id, **make_kwargs(self.env_spec, self.cfg, 1, self.agent_spec.task_id))

    def _callbacks(self) -> CrlCallbacks:
        cfg = self.cfg
        parts: dict[str, BaseCallback] = {"final_checkpoint": FinalCheckpoint(cfg.steps, self.save_checkpoint)}
        if cfg.train_threads:
            parts["threads"] = TrainThreads(cfg.torch_threads, cfg.train_threads)
        parts.update(
            logging_callbacks(
                self.tracker,
                self.dir / "regimes.csv",
                interventions=self.interventions,
                diagnostics_every=cfg.diagnostics_every,
                eval_every=cfg.eval_every,
                eval_episodes=cfg.eval_episodes,
                eval_seed=cfg.seed,  # episode seeds: crl.seeding.derive(seed, 'evaluation', k, j)
                make_eval_env=self._make_eval_env,
                loss_log_every=cfg.loss_log_every,
                last_frac=cfg.summary_last_frac,
            )
        )
        for i, cb in enumerate(self.user_callbacks):
            parts[f"user_{i}"] = cb
        if cfg.progress:
            regimes = parts["regimes"]
            assert isinstance(regimes, RegimeLogger)
            parts["progress"] = ProgressCallback(self.name, cfg.steps, regimes.label)
        parts["checkpoints"] = Checkpointer(cfg.checkpoint_every, self.save_checkpoint)
        return CrlCallbacks(parts, self.tracker)

    # -- checkpoints -------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write the checkpoint and the matching status (after :func:`check_parameters`: a
        non-finite parameter stops the run instead of being checkpointed).
        """
        check_parameters(self.model, self.model.num_timesteps)
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": model_state(self.model),
            "rng": rng_state(),
            "interventions": self.interventions.state_dict(),
            "callbacks": self.callbacks.get_state(),
            "tracker": self.tracker.state(),
            "wandb_id": self.wandb_id,
        }
        state["rows"] = self.folder.snapshot_rows()  # after the tracker's state(), which flushed them
        step = self.model.num_timesteps
        save_checkpoint(state, self.folder.checkpoint, step, previous=self.folder.previous_checkpoint)
        write_status(self.dir, status="running", global_step=step, checkpoint_step=step)

    def restore_checkpoint(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of :meth:`save_checkpoint`."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(
                f"{self.folder.checkpoint} was written by another version of crl (format "
                f"{state.get('format')}, this one reads {CHECKPOINT_FORMAT}); use --overwrite to start again"
            )
        self.interventions.load_state_dict(state["interventions"])  # may rebuild modules (injection)
        restore_model_state(self.model, state["model"])
        self.callbacks.set_state(state["callbacks"])
        self.tracker.restore(state["tracker"])
        set_rng_state(state["rng"])

    # -- running -----------------------------------------------------------------
    def start(self, resume: bool | None, overwrite: bool) -> RunResult | None:
        """Take the folder's lock, prepare the folder and build the run (resuming from its last
        good checkpoint); a :class:`RunResult` if there is nothing to train.

        A refusal (:class:`~crl.errors.ConfigError`) leaves the folder as it was: one that
        did not exist before is removed again. The lock is held until the run ends
        (:meth:`release`).
        """
        self.lock.acquire()
        try:
            ckpt, step, status = self._prepare(resume, overwrite)
        except ConfigError:
            self.lock.remove_created()
            self.release()
            raise
        except BaseException:
            self.release()
            raise
        if ckpt is None and status.get("status") == "finished":
            self.release()
            return RunResult(self.dir, "finished", int(status.get("global_step", 0)), skipped=True)
        try:
            self._build_and_restore(ckpt, step, status)
        except BaseException:
            self.release()
            raise
        return None

    def _prepare(self, resume: bool | None, overwrite: bool) -> tuple[dict[str, Any] | None, int, dict[str, Any]]:
        """Check the folder against the run; the checkpoint to resume from (verified) and its step.

        A finished run given more ``steps`` trains on from the checkpoint of its end, when asked
        (``resume``); with as many steps or fewer there is nothing to train.
        """
        if resume is True and not overwrite and not has_checkpoint(self.dir):  # before anything is made
            raise ConfigError(f"nothing to resume in {self.dir}: no checkpoint")
        can_resume, status = self.folder.prepare(self.resolved, overwrite)
        if status.get("status") == "finished" and not overwrite:
            done = int(status.get("global_step", 0))
            if self.cfg.steps <= done:
                return None, 0, status
            check_extension(self.dir, done, self.cfg.steps, resume is True, checkpoint_step(self.dir) or None)
        if resume is True and not can_resume:
            raise ConfigError(f"nothing to resume in {self.dir}: no checkpoint")
        if resume is False and status and not overwrite:
            raise ConfigError(f"{self.dir} holds an unfinished run; resume it (--resume) or --overwrite")
        if not can_resume:
            return None, 0, status
        try:
            ckpt, step = self.folder.load_checkpoint()
        except DamagedCheckpoint as e:
            write_status(self.dir, status="failed", error=str(e))
            raise
        if "rows" in ckpt:  # (a checkpoint of crl 0.2 has none: the tracker truncates the file)
            self.folder.restore_rows(ckpt["rows"], step)
        return ckpt, step, status

    def _build_and_restore(self, ckpt: dict[str, Any] | None, step: int, status: dict[str, Any]) -> None:
        if ckpt is None:
            self.folder.remove_stale_rows()
        self.folder.write_config(self.resolved)
        wandb_id = (ckpt or {}).get("wandb_id") or status.get("wandb_id") or uuid.uuid4().hex[:12]
        resumed = {"checkpoint_step": step} if ckpt is not None else {}  # never a stale one
        write_status(
            self.dir,
            status="running",
            steps=self.cfg.steps,
            error=None,
            wandb_id=wandb_id,
            started=status.get("started") or now(),
            global_step=step,
            **resumed,
        )
        torch.set_num_threads(self.cfg.torch_threads)
        try:
            self.build(wandb_id)
            if ckpt is not None:
                self.restore_checkpoint(ckpt)
            else:
                self.tracker.restore({"columns": ["global_step"], "rows": 0})
        except Exception as e:
            write_status(self.dir, status="failed", error=f"{type(e).__name__}: {e}")
            self._close_envs()
            raise

    def release(self) -> None:
        """Let the run folder's lock go (done when the run ends; safe to call again)."""
        self.lock.release()

    def learn(self) -> RunResult:
        """Train the remaining steps, save the model, and record how the run ended."""
        model = self.model
        remaining = self.cfg.steps - model.num_timesteps
        status, error = "failed", None
        try:
            with _sigterm_as_interrupt():
                checkpoints = self.callbacks.parts["checkpoints"]
                assert isinstance(checkpoints, Checkpointer)
                fresh = model.num_timesteps == 0 and checkpoints.last == 0
                # no step left: resumed from the checkpoint taken when training ended, before the
                # other callbacks' last rows; learn(0) steps nothing and runs their training end
                model.learn(total_timesteps=max(remaining, 0), callback=self.callbacks, reset_num_timesteps=fresh)
                self._save_final()
            status = "finished"
        except KeyboardInterrupt:
            status, error = "interrupted", "interrupted (the last checkpoint is kept)"
            raise
        except NonFiniteLossError as e:
            e = self._nan_error(e)
            error = f"{type(e).__name__}: {e}"
            raise e from None
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            self._finish(status, error)
        return RunResult(self.dir, status, model.num_timesteps)

    def _nan_error(self, e: NonFiniteLossError) -> NonFiniteLossError:
        """``e`` saying what a resume would start from: the last checkpoint, or nothing yet."""
        step = checkpoint_step(self.dir)
        if step > 0:
            detail = f"the last good checkpoint (step {step:,}) was kept"
        else:
            detail = "no checkpoint was written yet (a new attempt starts from scratch)"
        return NonFiniteLossError(e.step, e.what, detail)

    def _save_final(self) -> None:
        self.model.save(self.dir / "model.zip")
        if self.interventions.interventions:  # their state (EWC importances, CBP utilities...) beside it
            atomic_save(self.interventions.state_dict(), self.dir / "interventions.pt")

    def _close_envs(self) -> None:
        model = getattr(self, "model", None)
        env = model.get_env() if model is not None else None
        if env is not None:
            env.close()  # ProcVecEnv: stop the worker processes
        if isinstance(model, FastLoop):
            model.close_workers()  # the critic worker

    def _finish(self, status: str, error: str | None) -> None:
        self._close_envs()
        progress = self.callbacks.parts.get("progress")
        if isinstance(progress, ProgressCallback):
            progress.stop()
        if status == "finished" and self.wandb_mode != "disabled":
            self.tracker.summary(summary_scores(self.dir))  # the CL scores of the finished run
        self.tracker.close(status)
        write_status(self.dir, status=status, error=error, global_step=self.model.num_timesteps)
        self.release()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM stops the run like Ctrl-C (in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def train(
    cfg: RunConfig, callbacks: Sequence[BaseCallback] = (), resume: bool | None = None, overwrite: bool = False
) -> RunResult:
    """Train one run; resume it if its folder holds an unfinished run.

    Args:
        cfg: the run.
        callbacks: extra SB3 callbacks (run after crl's own logging callbacks).
        resume: True to require a checkpoint, False to refuse resuming an unfinished run,
            None (default) to resume when possible.
        overwrite: delete an existing run folder first.

    A finished run is not trained again (``RunResult.skipped``). Bad input raises
    :class:`~crl.errors.ConfigError` before the run folder is created.
    """
    runner = Runner(cfg, callbacks)
    try:
        done = runner.start(resume, overwrite)
        return done if done is not None else runner.learn()
    finally:
        runner.release()


def command_line() -> str:
    """The current process's command line as a ``crl`` command, shell-quoted (recorded in config.yaml)."""
    import shlex

    return " ".join(shlex.quote(a) for a in ["crl", *sys.argv[1:]])
