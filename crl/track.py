"""One tracker fanning metrics out to the local files and to wandb.

The local ``metrics.csv`` is the source of truth (``crl report`` reads it); wandb is a
mirror for dashboards. ``metrics.csv`` is a wide CSV whose first column is
``global_step``; rows are sparse (an episode row has ``charts/*`` and ``regime/*``, an
update row ``losses/*`` and ``time/*``). When a key appears for the first time, the
header grows and the file is rewritten once.

The tracker is a sink: it receives metrics and never reaches into agents. Its position
(:meth:`Tracker.state`) is saved in checkpoints; :meth:`Tracker.restore` truncates the
file back to it on resume, so a resumed run has no duplicated or missing rows.

wandb mirrors the CSV row for row: row ``i`` of ``metrics.csv`` is wandb step ``i`` (the
history's ``_step``), with ``global_step`` as every metric's x-axis. A resumed run must
give one wandb history holding exactly the CSV's rows, while the process that stopped may
have logged rows past its checkpoint that the CSV then discards. Offline (the default),
each process writes its own ``wandb/offline-run-*-<id>`` folder, and ``wandb sync`` of
two folders of one id appends the second history to the first (overlapping steps, the
discarded rows kept). So on resume the tracker removes the run's earlier offline folders
and replays the kept CSV rows into the new one (:meth:`Tracker.restore`): the run has one
offline folder whose history is the CSV, row for row, and ``wandb sync`` uploads exactly
that. (The CSV is the source of truth, so nothing is lost; replaying costs about 0.6 ms
a row.) Online, the history is already on the server, so the resumed process rewinds the
run to the checkpoint's row with wandb's ``resume_from="<id>?_step=<row>"``; where the
server refuses (rewinding is not enabled everywhere) it resumes with ``resume="allow"``,
says so, and the history may keep the discarded rows.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "Tracker",
    "wandb_default_mode",
    "flatten",
    "wandb_config",
    "wandb_init_kwargs",
    "default_group",
]


def flatten(d: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys (wandb config filters on flat keys).

    Example:
        >>> flatten({"a": {"b": 1, "c": [1, 2]}, "d": 2})
        {'a.b': 1, 'a.c': [1, 2], 'd': 2}
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def _named_list(v: Any) -> bool:
    """Whether ``v`` is a ``[{name: {arguments}}, ...]`` list (drifts, interventions)."""
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) and len(x) == 1 for x in v)


def wandb_config(resolved: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's resolved config as flat wandb config keys, every setting filterable.

    Like :func:`flatten`, and a ``[{name: {arguments}}, ...]`` list (drifts, interventions,
    schedules) becomes one key per argument under its name plus the list of names, so a
    dashboard can filter on ``agent.interventions.cbp.replacement_rate`` or
    ``env.make_kwargs.drifts.friction.low``. ``extra`` is merged first (e.g. ``env.base``).

    Example:
        >>> cfg = wandb_config({"agent": {"interventions": [{"cbp": {"decay": 0.99}}, "l2"]},
        ...                     "env": {"make_kwargs": {"drifts": [{"friction": {"low": 0.02}}]}}})
        >>> cfg["agent.interventions"], cfg["env.make_kwargs.drifts"], cfg["env.make_kwargs.drifts.friction.low"]
        (['cbp', 'l2'], ['friction'], 0.02)
    """
    out: dict[str, Any] = {}

    def walk(v: Any, key: str) -> None:
        items = v if isinstance(v, list) else []
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(x, f"{key}.{k}" if key else str(k))
        elif items and all(isinstance(x, str) or (isinstance(x, dict) and len(x) == 1) for x in items):
            out[key] = [x if isinstance(x, str) else next(iter(x)) for x in items]
            for x in items:
                if isinstance(x, dict):
                    name, args = next(iter(x.items()))
                    walk(args if isinstance(args, dict) else {"value": args}, f"{key}.{name}")
        else:
            out[key] = v

    walk(extra or {}, "")
    walk(resolved, "")
    return out


def default_group(experiment: str, env: str, agent: str) -> str:
    """The wandb group of a run: ``<experiment>__<env>__<agent>`` (its seeds, in one experiment).

    Example:
        >>> default_group("quickstart", "slippery-ant", "ppo")
        'quickstart__slippery-ant__ppo'
    """
    return f"{experiment}__{env}__{agent}"


def wandb_init_kwargs(cfg: Any, env: Any, agent: Any, resolved: dict[str, Any], name: str, run_id: str) -> dict:
    """The ``wandb.init`` keyword arguments of a run.

    Args:
        cfg: the run's :class:`~crl.spec.RunConfig`.
        env: its :class:`~crl.spec.EnvSpec`.
        agent: its :class:`~crl.spec.AgentSpec`.
        resolved: the resolved config (what ``config.yaml`` holds).
        name: the run's name.
        run_id: its wandb id.

    The group is ``cfg.wandb_group`` or :func:`default_group`; tags are the experiment,
    env, agent, interventions and ``cfg.tags``; the config is :func:`wandb_config` of the
    resolved config with the env's base and the run's group and tags.
    """
    interventions = [next(iter(i)) if isinstance(i, dict) else str(i) for i in agent.interventions]
    group = cfg.wandb_group or default_group(cfg.experiment, env.name, agent.name)
    tags = list(dict.fromkeys([cfg.experiment, env.name, agent.name, *interventions, *cfg.tags]))
    extra = {"env": {"base": env.base, "base_kwargs": env.base_kwargs}, "wandb": {"group": group, "tags": tags}}
    config = wandb_config(resolved, extra)
    return {
        "project": cfg.wandb_project,
        "entity": cfg.wandb_entity,
        "id": run_id,
        "group": group,
        "name": name,
        "job_type": "train",
        "tags": tags,
        "config": config,
    }


def wandb_default_mode() -> str:
    """``online`` if the user has configured wandb (``WANDB_MODE``, ``WANDB_API_KEY`` or a
    wandb login in ``~/.netrc``), else ``offline`` (no account, no network).
    """
    mode = os.environ.get("WANDB_MODE")
    if mode in ("online", "offline", "disabled"):
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    try:
        if netrc.is_file() and "api.wandb.ai" in netrc.read_text():
            return "online"
    except OSError:
        pass
    return "offline"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


class Tracker:
    """Write metric rows to ``metrics.csv`` and (optionally) a wandb run.

    Args:
        run_dir: the run folder.
        wandb_mode: ``offline``, ``online`` or ``disabled``.
        wandb_init: keyword arguments of ``wandb.init`` (project, group, name, id, tags, config...).
        flush_every: seconds between flushes of the CSV file.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> t = Tracker(d, wandb_mode="disabled")
        >>> t.log(10, {"charts/episodic_return": 1.5})
        >>> t.log(20, {"losses/value_loss": 0.25})
        >>> t.close()
        >>> print(open(f"{d}/metrics.csv").read().strip())
        global_step,charts/episodic_return,losses/value_loss
        10,1.5,
        20,,0.25
    """

    def __init__(
        self,
        run_dir: str | Path,
        wandb_mode: str = "disabled",
        wandb_init: dict[str, Any] | None = None,
        flush_every: float = 10.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.csv"
        self.columns: list[str] = ["global_step"]
        self.rows = 0
        self.flush_every = flush_every
        self._last_flush = time.monotonic()
        self._file = None
        self._writer: Any = None
        self.wandb_run: Any = None
        self.wandb_mode = wandb_mode
        self._wandb_init_args = dict(wandb_init or {})
        self._wandb_pending = wandb_mode != "disabled"  # started at restore() or the first row
        self._wandb_steps = True  # log row i as wandb step i
        if self.path.exists():
            self._load_existing()
        self._open("a")

    # -- files ---------------------------------------------------------------
    def _load_existing(self) -> None:
        with self.path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header:
                self.columns = header
                self.rows = sum(1 for _ in reader)

    def _open(self, mode: str) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open(mode, newline="")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(self.columns)

    def _rewrite(self, columns: list[str], keep_rows: int | None = None) -> None:
        """Rewrite the file with ``columns`` (keeping the first ``keep_rows`` rows)."""
        assert self._file is not None
        self._file.close()
        with self.path.open(newline="") as f:
            reader = csv.reader(f)
            old_header = next(reader, self.columns)
            rows = list(reader)
        if keep_rows is not None:
            rows = rows[:keep_rows]
        index = {c: i for i, c in enumerate(old_header)}
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            for r in rows:
                w.writerow([r[index[c]] if c in index and index[c] < len(r) else "" for c in columns])
        os.replace(tmp, self.path)
        self.columns = list(columns)
        self.rows = len(rows)
        self._open("a")

    # -- logging -------------------------------------------------------------
    def log(self, global_step: int, metrics: dict[str, Any]) -> None:
        """Write one row at ``global_step`` (and log it to wandb)."""
        new = [k for k in metrics if k not in self.columns]
        if new:
            self._rewrite(self.columns + new)
        values = {"global_step": global_step, **metrics}
        self._writer.writerow([_fmt(values.get(c)) for c in self.columns])
        run = self._wandb()
        if run is not None:
            run.log(values, step=self.rows if self._wandb_steps else None)
        self.rows += 1
        now = time.monotonic()
        if now - self._last_flush > self.flush_every:
            self.flush()

    def summary(self, values: dict[str, Any]) -> None:
        """Set wandb summary values (the local files hold their own summaries)."""
        run = self._wandb()
        if run is not None:
            for k, v in values.items():
                run.summary[k] = v

    def flush(self) -> None:
        """Flush the CSV to disk."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        self._last_flush = time.monotonic()

    # -- resume --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Position saved in checkpoints: columns and number of rows written."""
        self.flush()
        return {"columns": list(self.columns), "rows": self.rows}

    def restore(self, state: dict[str, Any]) -> None:
        """Truncate ``metrics.csv`` back to a checkpointed :meth:`state`; start wandb at that row.

        Offline, the run's earlier offline folders are removed and the kept rows replayed into
        the new one (see the module docstring).
        """
        self._rewrite(list(state["columns"]), keep_rows=int(state["rows"]))
        if self._wandb_pending:
            self._start_wandb()
            if self.wandb_mode == "offline" and self.wandb_run is not None:
                self._replace_offline_history()

    # -- wandb ---------------------------------------------------------------
    def _wandb(self) -> Any:
        """The wandb run, started on first use (None when disabled)."""
        if self._wandb_pending:
            self._start_wandb()
        return self.wandb_run

    def _start_wandb(self) -> None:
        import wandb

        self._wandb_pending = False
        os.environ.setdefault("WANDB_SILENT", "true")
        init = {"mode": self.wandb_mode, "dir": str(self.run_dir), **self._wandb_init_args}
        run_id = init.get("id")
        if self.wandb_mode == "online" and self.rows and run_id:
            rewind = {k: v for k, v in init.items() if k != "id"}
            try:
                self.wandb_run = wandb.init(resume_from=f"{run_id}?_step={self.rows}", **rewind)
            except Exception as e:  # rewinding is not enabled on every server
                print(
                    f"crl: wandb could not rewind run {run_id} to row {self.rows} ({e}); resuming it", file=sys.stderr
                )
                self._wandb_steps = False
        if self.wandb_run is None:
            try:
                self.wandb_run = wandb.init(resume="allow", **init)
            except Exception as e:  # wandb mirrors metrics.csv: its failure must not stop training
                note = f"crl: wandb did not start ({type(e).__name__}: {e}); training goes on (metrics.csv has it all)"
                print(note, file=sys.stderr)
                return
        self.wandb_run.define_metric("global_step")
        self.wandb_run.define_metric("*", step_metric="global_step")

    def _replace_offline_history(self) -> None:
        """Remove this run's earlier offline folders and replay the CSV's rows into the current one."""
        run = self.wandb_run
        current = Path(run.dir).parent.resolve()
        for old in (self.run_dir / "wandb").glob(f"offline-run-*-{run.id}"):
            if old.resolve() != current:
                shutil.rmtree(old, ignore_errors=True)
        self.flush()
        with self.path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            for i, row in enumerate(reader):
                run.log({k: _parse(v) for k, v in zip(header, row, strict=False) if v != ""}, step=i)

    def close(self, status: str | None = None) -> None:
        """Flush and close the file; finish the wandb run (exit code 1 unless finished).

        The wandb run gets ``regimes.csv`` as the table ``regimes`` in its summary (the runner
        adds the continual-learning scores of a finished run: :func:`crl.dashboard.summary_scores`).
        """
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None
        run = self._wandb()
        if run is not None:
            if status:
                run.summary["status"] = status
            self._regimes_table(run)
            run.finish(exit_code=0 if status in (None, "finished") else 1)
            self.wandb_run = None

    def _regimes_table(self, run: Any) -> None:
        import wandb

        regimes = self.run_dir / "regimes.csv"
        if regimes.is_file() and regimes.stat().st_size:
            import pandas as pd

            run.summary["regimes"] = wandb.Table(dataframe=pd.read_csv(regimes))


def _parse(text: str) -> Any:
    """A CSV cell back as the value :func:`_fmt` wrote (int, float, or the string)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
