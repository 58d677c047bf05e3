"""Sweeps: a grid of (env x agent x seed) runs from one YAML file, run locally or on Ray.

A sweep file (``experiments/*.yaml``)::

    description: what the sweep compares and what it costs
    experiment: quickstart          # folder under the runs dir (default: file stem)
    envs: [slippery-ant]
    agents: [ppo, ppo-l2]
    seeds: [0, 1, 2]                # or an integer n for seeds 0..n-1
    steps: 30000
    env_kwargs: {change_every: 10000}
    agent_kwargs: {}
    n_envs: 1
    checkpoint_every: 50000
    wandb: auto
    report: true                    # build the HTML report at the end
    run: {loss_log_every: 2000}     # any other RunConfig field, for every run

Grid expansion is deterministic (envs, then agents, then seeds) and every run has a
stable folder, so running a sweep twice skips finished runs and resumes unfinished ones.

Backends (:data:`BACKENDS`): ``local`` runs each run in its own spawned process (at most
``workers`` at a time), so a run that crashes or is killed cannot take the others down;
``ray`` submits each run as one Ray task that declares ``num_cpus=n_envs``. A failed run
is retried ``retries`` times (resuming from its last checkpoint), then marked failed.
At the end ``<run_dir>/<experiment>/sweep.json`` holds each run's status, steps, wall
time and error, and under ``history`` one entry per invocation of the sweep (when, how
long, which backend, the counts of run statuses). A run folder held by another process
(:mod:`crl.run.lock`) stops the sweep before it starts anything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crl.config import from_mapping, load_yaml
from crl.errors import ConfigError, CrlError
from crl.run.status import RUN_STATES, checkpoint_step, mark_stopped, read_status, run_state
from crl.spec import RunConfig, SweepSpec
from crl.system import CORES_ENV, usable_cores

__all__ = [
    "SweepSpec",
    "PlannedRun",
    "RunOutcome",
    "load_sweep",
    "expand",
    "plan",
    "run_state",
    "run_sweep",
    "BACKENDS",
    "RUN_STATES",
    "GRID_KEYS",
]

#: RunConfig fields that the sweep file sets through its own keys (not through ``run:``).
GRID_KEYS = (
    "env",
    "agent",
    "seed",
    "steps",
    "experiment",
    "run_dir",
    "env_kwargs",
    "agent_kwargs",
    "n_envs",
    "checkpoint_every",
    "wandb",
    "command",
)


def _check_run_extras(extras: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate the ``run:`` mapping against the RunConfig fields the grid does not set."""
    allowed = [f.name for f in dataclasses.fields(RunConfig) if f.name not in GRID_KEYS]
    for k in extras:
        if k in GRID_KEYS:
            raise ConfigError(f"{where}: run: {k!r} is set by the sweep's own key, not under run:")
        if k not in allowed:
            raise ConfigError(f"{where}: run: unknown RunConfig field {k!r}; valid: {', '.join(allowed)}")
    checked = from_mapping(RunConfig, {"env": "-", "agent": "-", **extras}, f"{where}: run")
    return {k: getattr(checked, k) for k in extras}


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (catalog name or path)."""
    p = Path(path)
    if not p.exists() and not str(path).endswith((".yaml", ".yml")):
        from crl.catalog import experiment_files

        files = experiment_files()
        if str(path) not in files:
            raise ConfigError(f"no sweep file {str(path)!r}; catalog experiments: {', '.join(sorted(files))}")
        p = files[str(path)]
    spec = from_mapping(SweepSpec, load_yaml(p), str(p))
    if not spec.experiment:
        spec.experiment = p.stem
    if not spec.envs or not spec.agents or not spec.seed_list:
        raise ConfigError(f"{p}: envs, agents and seeds must not be empty")
    if spec.steps <= 0:
        raise ConfigError(f"{p}: steps must be positive, got {spec.steps}")
    if spec.n_envs < 1:
        raise ConfigError(f"{p}: n_envs must be >= 1, got {spec.n_envs}")
    if spec.retries is not None and spec.retries < 0:
        raise ConfigError(f"{p}: retries must be >= 0, got {spec.retries}")
    if len(set(spec.seed_list)) != len(spec.seed_list):
        raise ConfigError(f"{p}: seeds repeat: {spec.seed_list}")
    spec.run = _check_run_extras(spec.run, str(p))
    return spec


def expand(spec: SweepSpec, run_dir: str = "runs", wandb: str | None = None, **overrides: Any) -> list[RunConfig]:
    """The runs of the grid, in a deterministic order (envs, agents, seeds)."""
    runs = []
    for env in spec.envs:
        for agent in spec.agents:
            for seed in spec.seed_list:
                cfg = RunConfig(
                    env=env,
                    agent=agent,
                    seed=seed,
                    steps=spec.steps,
                    experiment=spec.experiment,
                    run_dir=run_dir,
                    env_kwargs=dict(spec.env_kwargs),
                    agent_kwargs=dict(spec.agent_kwargs),
                    n_envs=spec.n_envs,
                    checkpoint_every=spec.checkpoint_every,
                    wandb=wandb or spec.wandb,
                    **spec.run,
                )
                cfg = dataclasses.replace(cfg, **overrides)
                if not cfg.command:
                    cfg.command = train_command(cfg)
                runs.append(cfg)
    return runs


def train_command(cfg: RunConfig) -> str:
    """The ``crl train`` command line equivalent to ``cfg`` (recorded in config.yaml).

    Every :class:`~crl.spec.RunConfig` field is a ``crl train`` option (``--field-name``):
    the run's identity is always written, the other fields where they differ from the default.

    Example:
        >>> cmd = train_command(RunConfig(env="slippery-ant", agent="ppo", n_envs=4, env_kwargs={"change_every": 500}))
        >>> cmd[:45], cmd[-40:]
        ('crl train --env slippery-ant --agent ppo --se', '--env-kwargs change_every=500 --n-envs 4')
    """
    import shlex

    import yaml

    def value(v: Any) -> str:
        return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()

    always = ("env", "agent", "seed", "steps", "experiment", "run_dir")
    parts = ["crl", "train"]
    for f in dataclasses.fields(RunConfig):
        v = getattr(cfg, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name in ("command", "progress") or (f.name not in always and v == default):
            continue
        opt = "--" + f.name.replace("_", "-")
        if isinstance(v, list):
            parts += [opt, *map(str, v)]
        else:
            parts += [opt, *(f"{k}={value(x)}" for k, x in v.items())] if isinstance(v, dict) else [opt, str(v)]
    return " ".join(shlex.quote(p) for p in parts)


@dataclass
class PlannedRun:
    """One run of a sweep with its folder and its state before the sweep."""

    config: RunConfig
    name: str
    dir: Path
    state: str


def plan(spec: SweepSpec, run_dir: str = "runs", wandb: str | None = None, **overrides: Any) -> list[PlannedRun]:
    """The grid with each run's folder and state.

    Every (env, agent) pair is checked first, so a bad name or argument is a
    :class:`~crl.errors.ConfigError` before anything starts.
    """
    from crl.run import Runner, run_name

    checked: dict[tuple[str, str], Runner] = {}
    out = []
    for cfg in expand(spec, run_dir, wandb, **overrides):
        key = (cfg.env, cfg.agent)
        if key not in checked:
            checked[key] = Runner(cfg)  # resolves and checks everything; writes nothing
        r = checked[key]
        name = run_name(r.env_spec, r.agent_spec, cfg.seed)
        d = Path(cfg.run_dir) / cfg.experiment / name
        out.append(PlannedRun(cfg, name, d, run_state(d)))
    names = [p.name for p in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"two runs of the sweep share the folder {dup!r}; list every env and agent once")
    return out


# -- one run, in whatever process executes it ----------------------------------------------------
@dataclass
class RunOutcome:
    """What one attempt of one run ended with."""

    status: str
    """finished, failed or interrupted."""
    global_step: int = 0
    wall_s: float = 0.0
    error: str | None = None
    skipped: bool = False
    config_error: bool = False
    """The run failed on bad input (a :class:`~crl.errors.CrlError`): retrying cannot help."""


def _interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one interrupt is enough; let the run write its status
    raise KeyboardInterrupt


def execute(cfg: RunConfig, catalogs: list[str] | tuple[str, ...] = (), cores: int | None = None) -> RunOutcome:
    """Train one run and report how it ended instead of raising (what a sweep worker calls).

    ``cores``: the run's share of the machine (:data:`crl.system.CORES_ENV`): worker
    processes (envs, the critic worker) only for the cores it may use.
    A run interrupted before its training loop started is marked ``interrupted`` here
    (the run marks itself once it trains).
    """
    import warnings

    from crl.catalog import add_catalog
    from crl.run import train

    os.environ.setdefault("MUJOCO_GL", "egl")
    if cores is not None:
        os.environ[CORES_ENV] = str(max(1, int(cores)))
    warnings.filterwarnings("ignore", module="gymnasium")
    for d in catalogs:
        add_catalog(d)
    t0 = time.time()
    try:
        res = train(cfg)
        return RunOutcome(res.status, res.global_step, time.time() - t0, None, res.skipped)
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        d = _run_dir_of(cfg)
        st = read_status(d) if d else None
        if d is not None and st is not None and st.get("status") == "running":
            mark_stopped(d, "interrupted", "interrupted (the last checkpoint is kept)")
        return RunOutcome(
            "interrupted",
            int((st or {}).get("global_step", 0)),
            time.time() - t0,
            "interrupted (the last checkpoint is kept)",
        )
    except Exception as e:
        d = _run_dir_of(cfg)
        st = (read_status(d) if d else None) or {}
        step, error = int(st.get("global_step", 0)), f"{type(e).__name__}: {e}"
        return RunOutcome("failed", step, time.time() - t0, error, config_error=isinstance(e, CrlError))


def _run_dir_of(cfg: RunConfig) -> Path | None:
    try:
        from crl.catalog import resolve_agent
        from crl.run import env_of, run_name

        agent = resolve_agent(cfg.agent, cfg.agent_kwargs)
        return Path(cfg.run_dir) / cfg.experiment / run_name(env_of(cfg.env), agent, cfg.seed)
    except Exception:
        return None


def _watch_parent(parent: int) -> None:
    """Stop this worker (as on Ctrl-C: checkpoint kept, status interrupted) if the sweep process dies."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _local_worker(cfg: RunConfig, catalogs: list[str], conn: Any, cores: int | None = None) -> None:
    """Entry point of a local worker process: Ctrl-C reaches the parent only, which sends SIGTERM."""
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True, name="crl-watch-parent").start()
    out = execute(cfg, catalogs, cores)
    conn.send(dataclasses.asdict(out))
    conn.close()


# -- progress ----------------------------------------------------------------------------------
class _Progress:
    """Runs done / running / failed with an ETA: a rich line on a terminal, plain lines otherwise.

    The ETA divides the steps left by the steps trained since the sweep started (finished runs
    plus the last checkpoints of running ones, read from their status files) per second.
    """

    def __init__(self, experiment: str, total: int, enabled: bool, steps: Callable[[], tuple[int, int]]) -> None:
        self.experiment, self.total, self.enabled, self.steps = experiment, total, enabled, steps
        self.t0 = time.time()
        self.done = self.failed = self.running = 0
        self.live: Any = None
        self.last_line = ""
        self.eta = "?"
        self.eta_at = 0.0
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live("", console=Console(stderr=True), refresh_per_second=2, transient=False)
            self.live.start()

    def line(self) -> str:
        now = time.time()
        if now - self.eta_at >= 2.0:
            self.eta_at = now
            done_here, left = self.steps()
            if left == 0:
                self.eta = "0:00:00"
            elif done_here > 0:
                self.eta = str(dt.timedelta(seconds=int(left / (done_here / (now - self.t0)))))
        return (
            f"[sweep {self.experiment}] {self.done}/{self.total} done, {self.running} running, "
            f"{self.failed} failed, ETA {self.eta}"
        )

    def update(self, **counts: int) -> None:
        for k, v in counts.items():
            setattr(self, k, v)
        if not self.enabled:
            return
        text = self.line()
        if self.live is not None:
            from rich.text import Text

            self.live.update(Text(text))
        elif text.split(", ETA")[0] != self.last_line.split(", ETA")[0]:
            print(text, file=sys.stderr, flush=True)
        self.last_line = text

    def close(self) -> None:
        if self.live is not None:
            from rich.text import Text

            self.eta_at = 0.0
            self.live.update(Text(self.line()))
            self.live.stop()


# -- backends ----------------------------------------------------------------------------------
class _Book:
    """Bookkeeping shared by the backends: attempts, outcomes, progress."""

    def __init__(self, runs: list[PlannedRun], retries: int, progress: bool, experiment: str) -> None:
        self.runs, self.retries = runs, retries
        self.progress = _Progress(experiment, len(runs), progress, self.steps)
        self.start_step = [checkpoint_step(r.dir) for r in runs]
        self.attempts = [0] * len(runs)
        self.wall_s = [0.0] * len(runs)
        self.outcomes: list[RunOutcome | None] = [None] * len(runs)
        self.queue = list(range(len(runs)))
        self.running: set[int] = set()

    def steps(self) -> tuple[int, int]:
        """(steps trained since the sweep started, steps left) over the runs still to finish."""
        done = left = 0
        for i, r in enumerate(self.runs):
            out = self.outcomes[i]
            if out is not None and (out.skipped or out.status == "failed"):
                continue
            if out is not None and out.status == "finished":
                cur = r.config.steps
            elif i in self.running:
                cur = int((read_status(r.dir) or {}).get("checkpoint_step", self.start_step[i]))
            else:
                cur = self.start_step[i]
            done += max(cur - self.start_step[i], 0)
            left += max(r.config.steps - cur, 0)
        return done, left

    def counts(self) -> dict[str, int]:
        done = sum(1 for o in self.outcomes if o is not None and o.status == "finished")
        failed = sum(1 for o in self.outcomes if o is not None and o.status == "failed")
        return {"done": done, "failed": failed, "running": len(self.running)}

    def started(self, i: int) -> None:
        self.attempts[i] += 1
        self.running.add(i)
        self.progress.update(**self.counts())

    def ended(self, i: int, out: RunOutcome) -> None:
        """Record an attempt; requeue a failed run while retries are left."""
        self.running.discard(i)
        self.wall_s[i] += out.wall_s
        run = self.runs[i]
        if out.status == "failed":
            print(f"[sweep] {run.name} failed (attempt {self.attempts[i]}): {out.error}", file=sys.stderr, flush=True)
            if self.attempts[i] <= self.retries and not out.config_error:  # bad input: never retried
                self.queue.append(i)
                self.progress.update(**self.counts())
                return
        self.outcomes[i] = out
        self.progress.update(**self.counts())

    def stopped(self, i: int, out: RunOutcome | None, t0: float) -> None:
        """Record a run stopped by an interrupt (``out``: what it reported, None if nothing)."""
        if out is None:
            out = RunOutcome("interrupted", 0, time.time() - t0, "interrupted")
            mark_stopped(self.runs[i].dir, "interrupted", "interrupted")
        self.running.discard(i)
        self.wall_s[i] += out.wall_s
        self.outcomes[i] = out

    def announce_interrupt(self, what: str) -> None:
        """Tell the user that the sweep stops ``what`` (its last checkpoints are kept)."""
        print(f"[sweep] interrupted: {what}; their last checkpoints are kept", file=sys.stderr, flush=True)


def _signal_name(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _received(conn: Any) -> RunOutcome | None:
    """The outcome a local worker sent through its pipe (None if it sent nothing)."""
    try:
        if conn.poll():
            return RunOutcome(**conn.recv())
    except (EOFError, OSError):
        pass
    return None


def _run_local(book: _Book, workers: int, catalogs: list[str], grace_s: float) -> bool:
    """Each run in its own spawned process, at most ``workers`` at a time. Returns False if interrupted."""
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    procs: dict[int, tuple[Any, Any, float]] = {}  # index -> (process, parent end of the pipe, start time)
    try:
        while book.queue or procs:
            while book.queue and len(procs) < workers:
                i = book.queue.pop(0)
                parent, child = ctx.Pipe(duplex=False)
                p = ctx.Process(
                    target=_local_worker,
                    args=(book.runs[i].config, catalogs, child, max(1, usable_cores() // workers)),
                    name=f"crl-{book.runs[i].name}",
                    daemon=False,
                )
                p.start()
                child.close()
                procs[i] = (p, parent, time.time())
                book.started(i)
            wait([p.sentinel for p, _, _ in procs.values()], timeout=1.0)
            book.progress.update(**book.counts())  # refreshes the ETA of a live line
            for i, (p, conn, t0) in list(procs.items()):
                if p.is_alive():
                    continue
                p.join()
                out = _received(conn)
                conn.close()
                if out is None:
                    err = f"worker process {_signal_name(p.exitcode)} (a crash or a kill, not a Python error)"
                    mark_stopped(book.runs[i].dir, "failed", err)
                    st = read_status(book.runs[i].dir) or {}
                    out = RunOutcome("failed", int(st.get("global_step", 0)), time.time() - t0, err)
                del procs[i]
                book.ended(i, out)
                book.progress.update(**book.counts())
        return True
    except KeyboardInterrupt:
        book.announce_interrupt(f"stopping {len(procs)} running run(s)")
        for p, _, _ in procs.values():
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.time() + grace_s
        for i, (p, conn, t0) in procs.items():
            p.join(max(deadline - time.time(), 0.1))
            if p.is_alive():
                p.kill()
                p.join()
            book.stopped(i, _received(conn), t0)
        return False


def _run_ray(book: _Book, address: str, catalogs: list[str]) -> bool:
    """Each run one Ray task declaring ``num_cpus=n_envs``. Returns False if interrupted."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs the ray package (pip install 'ray[default]')") from None

    if not ray.is_initialized():
        ray.init(address=address or None, log_to_driver=True, logging_level="warning")
    remote = ray.remote(max_retries=0)(execute)
    refs: dict[Any, tuple[int, float]] = {}
    try:
        while book.queue or refs:
            while book.queue:
                i = book.queue.pop(0)
                cfg = book.runs[i].config
                task = remote.options(num_cpus=cfg.n_envs, name=f"crl:{book.runs[i].name}")
                ref = task.remote(cfg, catalogs, cfg.n_envs)  # the run uses the cores it declared
                refs[ref] = (i, time.time())
                book.started(i)
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            book.progress.update(**book.counts())
            for ref in ready:
                i, t0 = refs.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as e:
                    err = f"ray task failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    mark_stopped(book.runs[i].dir, "failed", err)
                    out = RunOutcome("failed", 0, time.time() - t0, err)
                book.ended(i, out)
        return True
    except KeyboardInterrupt:
        book.announce_interrupt(f"cancelling {len(refs)} Ray task(s)")
        for ref in refs:
            ray.cancel(ref, force=False)
        for ref, (i, t0) in refs.items():
            try:
                out = ray.get(ref, timeout=120)
            except Exception:
                out = None
            book.stopped(i, out, t0)
        return False


#: Sweep backends by name.
BACKENDS = ("local", "ray")


def run_sweep(
    spec: SweepSpec,
    run_dir: str = "runs",
    wandb: str | None = None,
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    retries: int | None = None,
    progress: bool = True,
    catalogs: list[str] | None = None,
    source: str = "",
    grace_s: float = 120.0,
    **overrides: Any,
) -> dict[str, Any]:
    """Run every run of the grid (skip finished, resume unfinished) and write ``sweep.json``.

    Args:
        spec: the sweep.
        run_dir: root folder of the outputs, as for ``crl train``.
        wandb: wandb mode of every run (None: the file's).
        backend: ``local`` (a process per run) or ``ray``.
        workers: local processes at a time (default: the number of cores).
        address: the Ray cluster (``ray.init(address=...)``; None or "" starts a local one).
        retries: times a failed run is retried (default: the file's, else 0 local / 2 ray).
        progress: show runs done / running / failed with an ETA.
        catalogs: extra catalog folders (``--catalog``) for the workers.
        source: the sweep file (recorded in sweep.json).
        grace_s: seconds the runs get to stop after Ctrl-C before they are killed.
        overrides: RunConfig fields set on every run.

    Returns:
        The summary written to ``<run_dir>/<experiment>/sweep.json`` (``interrupted`` is True
        if Ctrl-C stopped the sweep).
    """
    if backend not in BACKENDS:
        from crl.errors import UnknownNameError

        raise UnknownNameError("backend", backend, list(BACKENDS))
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if retries is None:
        retries = spec.retries if spec.retries is not None else (2 if backend == "ray" else 0)
    if retries < 0:
        raise ConfigError(f"--retries must be >= 0, got {retries}")
    if catalogs is None:
        from crl.catalog import extra_catalogs

        catalogs = [str(Path(d).resolve()) for d in extra_catalogs()]
    runs = plan(spec, run_dir, wandb, progress=False, **overrides)
    check_not_running(runs)
    before = {r.name: r.state for r in runs}
    t0 = time.time()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    todo = [r for r in runs if r.state != "finished"]
    book = _Book(runs, retries, progress, spec.experiment)
    prog = book.progress
    for i, r in enumerate(runs):
        if r.state == "finished":
            st = read_status(r.dir) or {}
            book.outcomes[i] = RunOutcome("finished", int(st.get("global_step", r.config.steps)), 0.0, None, True)
    book.queue = [i for i, r in enumerate(runs) if r.state != "finished"]
    print(
        f"[sweep {spec.experiment}] {len(runs)} runs: {len(todo)} to run, {len(runs) - len(todo)} finished; "
        f"backend {backend}",
        file=sys.stderr,
        flush=True,
    )
    prog.update(**book.counts())
    import threading

    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.getsignal(signal.SIGTERM) if in_main else None
    if in_main:  # a scheduler's SIGTERM stops the sweep like Ctrl-C
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        if backend == "local":
            n = workers or usable_cores()
            complete = _run_local(book, n, catalogs, grace_s)
        else:
            complete = _run_ray(book, address or "", catalogs)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_term)
        prog.close()
    summary = _summary(spec, runs, book, before, backend, source, started, time.time() - t0, not complete)
    return summary


def check_not_running(runs: list[PlannedRun]) -> None:
    """Refuse (one line naming a holder's pid) a sweep with runs another process is training."""
    from crl.run.lock import holder

    busy = [r for r in runs if r.state == "running"]
    if not busy:
        return
    pid = holder(busy[0].dir)
    who = f"process {pid}" if pid else "another process"
    more = f" (and {len(busy) - 1} more of its runs)" if len(busy) > 1 else ""
    raise ConfigError(
        f"{busy[0].dir} is in use by {who}{more}: a crl train or sweep of the same runs; wait for it to end or stop it"
    )


#: Fields of an invocation kept in the ``history`` of ``sweep.json``.
HISTORY_KEYS = ("started", "ended", "wall_s", "backend", "file", "interrupted", "counts")


def _history(path: Path, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The invocations recorded in ``sweep.json`` so far, this one last.

    A ``sweep.json`` that cannot be read starts a new history (with a warning on stderr).
    """
    old: Any = {}
    if path.exists():
        try:
            old = json.loads(path.read_bytes().decode())
        except (OSError, ValueError) as e:
            print(f"[sweep] warning: {path} is damaged ({type(e).__name__}); its history starts again", file=sys.stderr)
    history = old.get("history") if isinstance(old, dict) else None
    if not isinstance(history, list):  # a sweep.json of crl 0.2: its summary was the only invocation
        history = [{k: old[k] for k in HISTORY_KEYS if k in old}] if isinstance(old, dict) and "started" in old else []
    return [*history, {k: summary[k] for k in HISTORY_KEYS if k in summary}]


def _summary(
    spec: SweepSpec,
    runs: list[PlannedRun],
    book: _Book,
    before: dict[str, str],
    backend: str,
    source: str,
    started: str,
    wall_s: float,
    interrupted: bool,
) -> dict[str, Any]:
    rows = []
    for i, r in enumerate(runs):
        out = book.outcomes[i]
        st = read_status(r.dir) or {}
        rows.append(
            {
                "name": r.name,
                "env": r.config.env,
                "agent": r.config.agent,
                "seed": r.config.seed,
                "dir": str(r.dir),
                "state_before": before[r.name],
                "status": out.status if out is not None else st.get("status", "not started"),
                "skipped": bool(out and out.skipped),
                "attempts": book.attempts[i],
                "global_step": int(st.get("global_step", out.global_step if out else 0)),
                "steps": r.config.steps,
                "wall_s": round(book.wall_s[i], 2),
                "error": (out.error if out is not None and out.status != "finished" else None),
            }
        )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = {
        "experiment": spec.experiment,
        "file": source,
        "description": spec.description,
        "backend": backend,
        "started": started,
        "ended": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 2),
        "interrupted": interrupted,
        "counts": counts,
        "runs": rows,
    }
    out_dir = Path(runs[0].dir).parent if runs else Path(".")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary["history"] = _history(out_dir / "sweep.json", summary)
    tmp = out_dir / "sweep.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out_dir / "sweep.json")
    return summary
