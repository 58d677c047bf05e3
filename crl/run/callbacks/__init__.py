"""crl's SB3 callbacks: small parts with one job each, usable in any SB3 script.

=========================  ==========================================================
:class:`RegimeLogger`      episode rows with their regime, boundaries, ``regimes.csv``
:class:`LossLogger`        ``losses/*`` and ``time/sps`` rows
:class:`DiagnosticsCallback`  ``plasticity/*`` rows (every registered diagnostic)
:class:`RegimeEvalCallback`   ``eval/regime_<k>/return``: the policy on each regime seen
:class:`InterventionHooks` the agent's interventions: rollout ends, regime changes
:class:`NanGuard`          stop at the first non-finite gradient, loss or parameter
:class:`Checkpointer`      periodic checkpoints at rollout boundaries
:class:`ProgressCallback`  progress bar or lines
:class:`TrainThreads`      torch threads while acting and while updating
=========================  ==========================================================

They send rows to a :class:`Sink` (:class:`crl.track.Tracker`: ``metrics.csv`` and wandb).
:func:`callbacks` builds the set that ``crl train`` uses, for a plain SB3 script::

    model = PPO("MlpPolicy", gym.make("crl/SlipperyHopper-v0"))
    model.learn(50_000, callback=crl.callbacks("runs/my-script"))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from crl.run.callbacks.base import CrlCallback, Sink
from crl.run.callbacks.checkpoints import Checkpointer
from crl.run.callbacks.diagnostics import DiagnosticsCallback
from crl.run.callbacks.evaluation import RegimeEvalCallback
from crl.run.callbacks.interventions import InterventionHooks
from crl.run.callbacks.losses import LossLogger
from crl.run.callbacks.nan_guard import NanGuard
from crl.run.callbacks.progress import ProgressCallback
from crl.run.callbacks.regimes import RegimeLogger, RegimeSummary, write_regimes_csv
from crl.run.callbacks.threads import TrainThreads
from crl.track import Tracker

__all__ = [
    "Checkpointer",
    "CrlCallback",
    "CrlCallbacks",
    "DiagnosticsCallback",
    "InterventionHooks",
    "LossLogger",
    "NanGuard",
    "ProgressCallback",
    "RegimeEvalCallback",
    "RegimeLogger",
    "RegimeSummary",
    "Sink",
    "TrainThreads",
    "callbacks",
    "logging_callbacks",
    "write_regimes_csv",
]


class CrlCallbacks(CallbackList):
    """crl's callbacks of one run, in order, with named parts and one checkpoint state.

    Attributes:
        parts: the callbacks by name (``regimes``, ``losses``, ``diagnostics``, ...).
        sink: where their rows go.
    """

    #: Its own hooks only dispatch to the parts (:func:`crl.fast.is_rollout_safe` checks each).
    rollout_safe = True

    def __init__(self, parts: dict[str, BaseCallback], sink: Sink) -> None:
        super().__init__(list(parts.values()))
        self.parts, self.sink = parts, sink

    def get_state(self) -> dict[str, Any]:
        """Every part's counters by name (for checkpoints)."""
        return {k: c.get_state() for k, c in self.parts.items() if isinstance(c, CrlCallback)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`."""
        for k, s in state.items():
            part = self.parts.get(k)
            if isinstance(part, CrlCallback):
                part.set_state(s)

    def _on_training_end(self) -> None:
        super()._on_training_end()
        if isinstance(self.sink, Tracker):
            self.sink.flush()


def logging_callbacks(
    sink: Sink,
    regimes_csv: str | Path | None,
    *,
    interventions: Any = None,
    diagnostics_every: int = 10_000,
    eval_every: int = 0,
    eval_episodes: int = 3,
    eval_seed: int | None = None,
    make_eval_env: Callable[[], gym.Env] | None = None,
    loss_log_every: int = 1000,
    last_frac: float = 0.1,
) -> dict[str, BaseCallback]:
    """The logging callbacks of crl by name, in the order they must run (see :class:`CrlCallbacks`)."""
    hooks = InterventionHooks(interventions)
    parts: dict[str, BaseCallback] = {}
    diag = DiagnosticsCallback(sink, diagnostics_every) if diagnostics_every > 0 else None
    regimes = RegimeLogger(
        sink,
        regimes_csv,
        on_regime_change=[hooks.on_regime_change],
        diagnostics=diag.per_network if diag is not None else None,
        last_frac=last_frac,
    )
    parts["regimes"] = regimes
    parts["losses"] = LossLogger(sink, loss_log_every)
    if diag is not None:
        parts["diagnostics"] = diag
    if eval_every > 0:
        parts["evaluation"] = RegimeEvalCallback(
            sink, make_eval_env, lambda: regimes.seen_regimes, eval_every, eval_episodes, eval_seed
        )
    parts["interventions"] = hooks
    parts["nan_guard"] = NanGuard()
    return parts


def callbacks(
    out_dir: str | Path,
    *,
    diagnostics_every: int = 10_000,
    eval_every: int = 0,
    eval_episodes: int = 3,
    eval_seed: int | None = None,
    eval_env: Callable[[], gym.Env] | None = None,
    wandb: str = "disabled",
    wandb_init: dict[str, Any] | None = None,
    progress: bool = False,
    total_steps: int = 0,
) -> CrlCallbacks:
    """The callbacks of ``crl train`` for any SB3 model: ``model.learn(n, callback=crl.callbacks(dir))``.

    They write ``metrics.csv`` (episode, regime, loss and ``plasticity/*`` rows) and
    ``regimes.csv`` into ``out_dir``, as a ``crl train`` run does, call the interventions of
    a model made by :func:`crl.make_agent` at rollout ends and regime changes, and stop at
    the first NaN. (Checkpoints and resume are ``crl train``'s: :func:`crl.train`.)

    Args:
        out_dir: folder of ``metrics.csv`` and ``regimes.csv`` (created).
        diagnostics_every: steps between ``plasticity/*`` rows (0: none).
        eval_every: steps between evaluations on every regime seen (0: none).
        eval_episodes: episodes per regime and evaluation.
        eval_seed: the run seed, from which the evaluation episodes' seeds are derived (see
            :mod:`crl.seeding`); None: the model's ``seed`` (0 if it has none).
        eval_env: builds the evaluation env (default: the training env's Gymnasium spec).
        wandb: ``disabled``, ``offline`` or ``online``.
        wandb_init: keyword arguments of ``wandb.init`` (project, group, name...).
        progress: show progress (``total_steps`` is the bar's total).
        total_steps: the planned steps, for the progress display.

    Example:
        >>> import tempfile, gymnasium as gym, crl
        >>> from stable_baselines3 import PPO
        >>> out = tempfile.mkdtemp()
        >>> env = gym.make("crl/LevelShiftCartPole-v0", change_every=200)
        >>> model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0)
        >>> _ = model.learn(512, callback=callbacks(out, diagnostics_every=256))
        >>> import pandas as pd
        >>> sorted(pd.read_csv(f"{out}/regimes.csv")["segment"].tolist())[:2]
        [0, 1]
    """
    out = Path(out_dir)
    sink = Tracker(out, wandb_mode=wandb, wandb_init=wandb_init)
    parts = logging_callbacks(
        sink,
        out / "regimes.csv",
        diagnostics_every=diagnostics_every,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        eval_seed=eval_seed,
        make_eval_env=eval_env,
    )
    if progress:
        regimes = parts["regimes"]
        assert isinstance(regimes, RegimeLogger)
        parts["progress"] = ProgressCallback(out.name, total_steps, regimes.label)
    return CrlCallbacks(parts, sink)
