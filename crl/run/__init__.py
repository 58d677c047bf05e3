"""One run = (env, agent, seed): configuration, runner, callbacks, status, resume.

=======================  =============================================================
:mod:`crl.run.resolve`   config -> agent spec with overrides, env make arguments, run name
:mod:`crl.run.runner`    :class:`Runner` and :func:`train`: build, learn, finish, resume
:mod:`crl.run.callbacks` small public SB3 callbacks (regimes, losses, diagnostics, ...)
:mod:`crl.run.folder`    the run folder and its ``config.yaml``
:mod:`crl.run.status`    ``status.json``: read, write, the run's state for sweeps
:mod:`crl.run.state`     an SB3 model's training state (the only place touching SB3 internals)
:mod:`crl.run.envs`      the vectorised envs of a run and their checkpointable state
=======================  =============================================================
"""

from crl.run.callbacks import (
    Checkpointer,
    CrlCallbacks,
    DiagnosticsCallback,
    InterventionHooks,
    LossLogger,
    NanGuard,
    ProgressCallback,
    RegimeEvalCallback,
    RegimeLogger,
    TrainThreads,
    callbacks,
)
from crl.run.envs import make_vec_env
from crl.run.resolve import env_of, run_name
from crl.run.runner import Runner, RunResult, command_line, train
from crl.run.state import all_finite
from crl.run.status import CHECKPOINT, RUN_STATES, mark_stopped, read_status, run_state, write_status
from crl.spec import RunConfig, check_run_config

__all__ = [
    "CHECKPOINT",
    "RUN_STATES",
    "Checkpointer",
    "CrlCallbacks",
    "DiagnosticsCallback",
    "InterventionHooks",
    "LossLogger",
    "NanGuard",
    "ProgressCallback",
    "RegimeEvalCallback",
    "RegimeLogger",
    "RunConfig",
    "RunResult",
    "Runner",
    "TrainThreads",
    "all_finite",
    "callbacks",
    "check_run_config",
    "command_line",
    "env_of",
    "make_vec_env",
    "mark_stopped",
    "read_status",
    "run_name",
    "run_state",
    "train",
    "write_status",
]
