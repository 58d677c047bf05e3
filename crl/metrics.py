"""Continual-learning scores of run folders: every definition written once, with its source.

``crl metrics``, ``crl compare``, the report (:mod:`crl.report`) and the wandb run summary
(:func:`run_scores`) all compute their numbers here. Reads run folders only (``metrics.csv``,
``regimes.csv``, ``config.yaml``, ``status.json``): no torch, no training.

**Segments.** A segment is one visit of a regime (a row of ``regimes.csv``). Its
*late return* is the mean return of the training episodes ending in its last
``late_fraction`` (default :data:`LATE_FRACTION`, 25 %) and its *early return* that of the
episodes ending in its first ``late_fraction`` (the last, resp. first, episode when none
does). A segment shorter than ``min_fraction`` (default :data:`MIN_SEGMENT_FRACTION`, 50 %)
of the intended segment length (:func:`intended_segment_length`) is **short**: it is marked
and left out of every score below (e.g. the few hundred steps a run goes on after its last
regime change, because PPO rounds the steps up to whole rollouts).

**Scores of one run** (the regimes are Continual World's tasks):

* ``average_performance`` (Continual World, Wolczyk et al. 2021; COOM, Tomilin et al. 2023):
  ``mean_i p_i(T)``, the performance on regime ``i`` at the end of training: the last
  ``eval/regime_<i>/return`` when the run evaluated on every regime, else the late return
  of the last (not short) visit of ``i``.
* ``forgetting`` (Continual World, COOM): ``mean_i F_i`` with
  ``F_i = p_i(end of the first visit of i) - p_i(T)``, from the evaluations (the last one at
  or before the end of that visit), so ``F_i = 0`` for a regime first seen last. Without
  evaluations forgetting is measured on revisits: the late return of a visit minus the
  early return of the next visit of the same regime (what was lost while away), averaged
  per regime.
* ``forward_transfer`` (Continual World): ``mean_i (AUC_i - AUC_ref_i) / (1 - AUC_ref_i)``
  for the first visit of regime ``i`` against a from-scratch reference run on ``i``
  (:func:`crl.references.make_references`); AUCs of the episode returns over the
  segment's length, normalised to [0, 1] with the min and max of both curves' returns
  (Continual World normalises success rates; returns need a scale). Needs reference runs.
* On an env that reports ``info["success"]`` (Continual World, :mod:`crl.drift.metaworld`), the
  evaluations also write ``eval/regime_<i>/success`` (success rate per task over time), and
  ``run_metrics(..., measure="success")`` gives average performance and forgetting on it, as
  Continual World defines them.
* ``plasticity_score`` (Dohare et al., Nature 2024, loss of plasticity): the least-squares
  slope of the late return against the segment index, in return per regime change;
  negative means the agent ends each new regime worse than the one before. (Diagnostics of
  the networks, after Lyle et al. 2023 and Plasticine, are in :mod:`crl.diagnostics`.)

**References** (:func:`reference_kind`, the ``reference`` column of ``crl metrics`` and
``crl compare``): the two reference points Continual World and COOM report beside the methods.
*fine-tuning* is the plain agent trained on the sequence, nothing against forgetting (in crl: a
run of an agent in :data:`FINE_TUNING_AGENTS`, on any env but a multi-task one); *multi-task* is
one agent trained on all regimes jointly, the upper bound (a run whose schedule is in
:data:`MULTI_TASK_SCHEDULES`, e.g. ``multitask-halfcheetah``, a regime drawn per episode).
A multi-task run's segments are episodes: its ``average_performance`` (from the regime
evaluations) is the reference; forgetting and forward transfer mean little there.

**Across seeds** (:func:`summary_table`, :func:`improvement_table`): the interquartile mean
(IQM) of a score over seeds with a 95 % stratified-bootstrap interval (rliable, Agarwal et al.
2021) and the number of seeds; with one seed the interval and P(X > Y) are ``n/a (1 seed)``.

**Readers never crash**: :func:`find_runs` reads every run folder below the given paths and
returns one line for each folder it skipped (not a run, not text, half written, ...).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crl.errors import ConfigError
from crl.stats import Estimate, improvement_estimate, iqm_estimate, paired_difference, share_estimate, slope

__all__ = [
    "LATE_FRACTION",
    "MIN_SEGMENT_FRACTION",
    "SCORES",
    "RunReadError",
    "Run",
    "metrics_file",
    "is_run_folder",
    "read_run",
    "find_runs",
    "load_run",
    "intended_segment_length",
    "FINE_TUNING_AGENTS",
    "MULTI_TASK_SCHEDULES",
    "reference_kind",
    "REFERENCE_NOTE",
    "segment_table",
    "normalised_auc",
    "forward_transfer",
    "forgetting",
    "plasticity_score",
    "run_metrics",
    "run_scores",
    "summary_table",
    "improvement_table",
    "paired_table",
    "floor_table",
    "run_table",
    "json_safe",
    "format_value",
]

RET = "charts/episodic_return"
#: Default share of a segment whose episodes give its late (and early) return.
LATE_FRACTION = 0.25
#: Segments shorter than this share of the intended segment length are left out of the scores.
MIN_SEGMENT_FRACTION = 0.5
#: The per-run scores, in the order every output shows them.
SCORES = ("average_performance", "forgetting", "forward_transfer", "plasticity_score")
STATUS_MARK = {"finished": "finished", "running": "RUNNING", "failed": "FAILED", "interrupted": "INTERRUPTED"}


class RunReadError(ConfigError):
    """A folder that cannot be read as a run; the message is one line naming the folder and why."""


# ---------------------------------------------------------------- reading run folders


@dataclass
class Run:
    """One run folder, read: its config, metrics and regimes, status, and notes on what was repaired."""

    path: Path
    config: dict[str, Any]
    metrics: pd.DataFrame
    regimes: pd.DataFrame
    status: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def env(self) -> str:
        """The env's catalog name (``?`` when unknown)."""
        env = self.config.get("env", {})
        return str(env.get("name", "?") if isinstance(env, dict) else env)

    @property
    def agent(self) -> str:
        """The agent's catalog name (``?`` when unknown)."""
        agent = self.config.get("agent", {})
        return str(agent.get("name", "?") if isinstance(agent, dict) else agent)

    @property
    def seed(self) -> int:
        """The run seed (0 when unknown)."""
        try:
            return int(self.config.get("seed", 0))
        except (TypeError, ValueError):
            return 0

    @property
    def reference(self) -> str:
        """``fine-tuning``, ``multi-task`` or ``""``: :func:`reference_kind`."""
        return reference_kind(self.config)

    @property
    def state(self) -> str:
        """``status.json``'s status (``unknown`` without one)."""
        return str(self.status.get("status", "unknown"))

    @property
    def name(self) -> str:
        """The folder's name."""
        return self.path.name


def _text(path: Path, what: str) -> str:
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            import gzip

            data = gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise RunReadError(f"{path.parent}: cannot read {what} ({getattr(e, 'strerror', None) or e})") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RunReadError(f"{path.parent}: {what} is not text (binary byte at offset {e.start})") from e
    if "\x00" in text:
        raise RunReadError(f"{path.parent}: {what} is not text (NUL byte at offset {text.index(chr(0))})")
    return text


def _read_csv(path: Path, notes: list[str], numeric: tuple[str, ...]) -> pd.DataFrame:
    """A run's CSV; a half-written last row and ragged rows are dropped with a note, damaged numbers become NaN.

    ``metrics.csv`` holds numbers only; a ``regimes.csv`` column without a single number (a task's name) stays text.
    """
    if not path.is_file():
        return pd.DataFrame()
    text = _text(path, path.name)
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        notes.append(f"{path}: left out a half-written last row")
    if not text.strip():
        return pd.DataFrame()
    bad: list[list[str]] = []
    try:
        df = pd.read_csv(io.StringIO(text), engine="python", on_bad_lines=lambda row: bad.append(row))
    except (pd.errors.ParserError, ValueError) as e:
        raise RunReadError(f"{path.parent}: {path.name} is not a CSV table ({str(e).splitlines()[0]})") from e
    if bad:
        notes.append(f"{path}: left out {len(bad)} malformed row(s)")
    for col in df.columns:
        if not pd.api.types.is_numeric_dtype(df[col]):
            num = pd.to_numeric(df[col], errors="coerce")
            damaged = col in numeric or num.notna().any() or path.name.startswith("metrics.csv")
            if damaged:  # a damaged cell, not a text column
                df[col] = num
    return df


def _read_config(d: Path) -> dict[str, Any]:
    import yaml

    from crl.config import yaml_load

    path = d / "config.yaml"
    if not path.is_file():
        return {}
    try:
        config = yaml_load(_text(path, "config.yaml"))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise RunReadError(f"{d}: config.yaml is not valid YAML{line}") from e
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise RunReadError(f"{d}: config.yaml is not a mapping of run settings")
    return config


def _read_status(d: Path, notes: list[str]) -> dict[str, Any]:
    path = d / "status.json"
    if not path.is_file():
        return {}
    try:
        status = json.loads(_text(path, "status.json"))
    except (RunReadError, json.JSONDecodeError):
        notes.append(f"{path}: unreadable, status taken as unknown")
        return {"status": "unknown"}
    return status if isinstance(status, dict) else {"status": "unknown"}


def metrics_file(run_dir: Path) -> Path:
    """A run's ``metrics.csv``, or the ``metrics.csv.gz`` of evidence (:mod:`crl.evidence`) when only that exists."""
    plain = run_dir / "metrics.csv"
    return run_dir / "metrics.csv.gz" if not plain.is_file() and (run_dir / "metrics.csv.gz").is_file() else plain


def is_run_folder(path: Path) -> bool:
    """A run folder holds ``config.yaml`` or ``metrics.csv`` (or ``metrics.csv.gz``)."""
    return path.is_dir() and ((path / "config.yaml").is_file() or metrics_file(path).is_file())


def read_run(run_dir: str | Path) -> Run:
    """Read one run folder. Raises :class:`RunReadError` (one line) when it cannot be read as a run."""
    d = Path(run_dir)
    if not d.is_dir():
        raise RunReadError(f"{d}: no such folder")
    if not is_run_folder(d):
        raise RunReadError(f"{d}: not a run folder (no config.yaml or metrics.csv)")
    notes: list[str] = []
    config = _read_config(d)
    metrics = _read_csv(metrics_file(d), notes, ("global_step", RET, "regime/segment"))
    if not metrics.empty:
        if "global_step" not in metrics:
            raise RunReadError(f"{d}: metrics.csv has no global_step column")
        metrics = metrics[metrics["global_step"].notna()].sort_values("global_step", kind="stable")
    regimes = _read_csv(d / "regimes.csv", notes, ("segment", "regime", "start_step", "end_step"))
    if not regimes.empty:
        missing = [c for c in ("segment", "regime", "start_step", "end_step") if c not in regimes]
        if missing:
            raise RunReadError(f"{d}: regimes.csv lacks column(s) {', '.join(missing)}")
        regimes = regimes.dropna(subset=["segment", "regime", "start_step"])
    return Run(d, config, metrics.reset_index(drop=True), regimes, _read_status(d, notes), notes)


def _walk(root: Path, notes: list[str]) -> list[Path]:
    if is_run_folder(root):
        return [root]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        below = _walk(child, [])
        if below:
            found += below
        else:
            notes.append(f"skipped {child}: not a run folder")
    return found


def find_runs(paths: str | Path | Iterable[str | Path]) -> tuple[list[Run], list[str]]:
    """Every run folder at or below ``paths`` (run, experiment or runs folders), read.

    Returns ``(runs, notes)``: the runs sorted by env, agent, seed and path, and one line for
    every folder skipped (not a run, unreadable) or repaired while reading (a half-written row).
    Never raises for a bad folder.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    notes: list[str] = []
    seen: set[Path] = set()
    runs = []
    for p in map(Path, paths):
        if not p.is_dir():
            notes.append(f"skipped {p}: no such folder")
            continue
        found = _walk(p, notes)
        if not found and not any(n.startswith(f"skipped {p}") for n in notes):
            notes.append(f"skipped {p}: not a run folder (no config.yaml or metrics.csv at or below it)")
        for d in found:
            if d.resolve() in seen:
                continue
            seen.add(d.resolve())
            try:
                run = read_run(d)
            except RunReadError as e:
                notes.append(f"skipped {e}")
                continue
            notes += run.notes
            runs.append(run)
    runs.sort(key=lambda r: (r.env, r.agent, r.seed, str(r.path)))
    return runs, notes


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(metrics, regimes)`` data frames of a run folder (raises :class:`RunReadError`)."""
    run = read_run(run_dir)
    if run.metrics.empty and not metrics_file(Path(run_dir)).is_file():
        raise RunReadError(f"{run_dir}: not a run folder (no metrics.csv)")
    return run.metrics, run.regimes


def _as_run(run: str | Path | Run) -> Run:
    return run if isinstance(run, Run) else read_run(run)


# ---------------------------------------------------------------- segments


def _schedule_period(config: dict[str, Any]) -> float | None:
    env = config.get("env")
    kwargs = env.get("make_kwargs", {}) if isinstance(env, dict) else {}
    schedule = kwargs.get("schedule") if isinstance(kwargs, dict) else None
    if not isinstance(schedule, dict) or len(schedule) != 1:
        return None
    args = next(iter(schedule.values()))
    if not isinstance(args, dict):
        return None
    for key in ("change_every", "every"):
        v = args.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
    return None


#: Agents whose runs are the **fine-tuning** reference (Continual World's name for the plain
#: agent trained on the sequence): crl's plain PPO and SAC.
FINE_TUNING_AGENTS: tuple[str, ...] = ("ppo", "sac", "td3")

#: Schedules whose runs are the **multi-task** reference (all regimes trained jointly).
MULTI_TASK_SCHEDULES: tuple[str, ...] = ("uniform",)


def reference_kind(config: dict[str, Any]) -> str:
    """Which reference a run is, from its ``config.yaml`` (see the module docstring):
    ``"multi-task"``, ``"fine-tuning"`` or ``""`` (a method).

    Example:
        >>> env = {"name": "multitask-halfcheetah", "make_kwargs": {"schedule": {"uniform": {"regimes": [0, 1]}}}}
        >>> reference_kind({"env": env, "agent": {"name": "ppo"}})
        'multi-task'
        >>> reference_kind({"env": {"name": "cyclic-halfcheetah"}, "agent": {"name": "ppo"}})
        'fine-tuning'
        >>> reference_kind({"env": {"name": "cyclic-halfcheetah"}, "agent": {"name": "ppo-ewc"}})
        ''
    """
    env = config.get("env")
    kwargs = env.get("make_kwargs", {}) if isinstance(env, dict) else {}
    schedule = kwargs.get("schedule") if isinstance(kwargs, dict) else None
    name = next(iter(schedule), None) if isinstance(schedule, dict) and len(schedule) == 1 else schedule
    if name in MULTI_TASK_SCHEDULES:
        return "multi-task"
    agent = config.get("agent", {})
    return "fine-tuning" if (agent.get("name") if isinstance(agent, dict) else agent) in FINE_TUNING_AGENTS else ""


#: What the ``reference`` column means (under the tables of ``crl compare``, ``crl metrics`` and the report).
REFERENCE_NOTE = (
    "reference: fine-tuning = the plain agent (ppo, sac) on the sequence; multi-task = all regimes "
    "trained jointly (uniform schedule), the upper bound; empty = a method"
)


def _last_step(run: Run) -> float:
    last = run.status.get("global_step")
    steps = [float(last)] if isinstance(last, (int, float)) and not isinstance(last, bool) else []
    if not run.metrics.empty:
        steps.append(float(run.metrics["global_step"].max()))
    return max(steps) if steps else float("nan")


def _segment_bounds(run: Run) -> pd.DataFrame:
    r = run.regimes
    if r.empty:
        return pd.DataFrame(columns=["segment", "regime", "start_step", "end_step"])
    r = r.sort_values("segment").reset_index(drop=True)[["segment", "regime", "start_step", "end_step"]].copy()
    r["end_step"] = r["end_step"].astype(float).fillna(_last_step(run))
    r[["segment", "regime"]] = r[["segment", "regime"]].astype(int)
    return r


def intended_segment_length(run: str | Path | Run) -> float:
    """The length a segment is meant to have, in steps.

    The schedule's period (``change_every``, or ``every`` for a random walk) when the run's
    config names one, else the median length of the closed segments before the last, else
    the one segment's length (NaN without segments).
    """
    run = _as_run(run)
    period = _schedule_period(run.config)
    if period is not None:
        return period
    seg = _segment_bounds(run)
    lengths = (seg["end_step"] - seg["start_step"]).to_numpy(dtype=float)
    if lengths.size > 1:
        return float(np.median(lengths[:-1]))
    return float(lengths[0]) if lengths.size else float("nan")


def _window_mean(rets: np.ndarray, mask: np.ndarray, fallback: int) -> float:
    if rets.size == 0:
        return float("nan")
    sel = rets[mask]
    return float(sel.mean() if sel.size else rets[fallback])


def segment_table(
    run: str | Path | Run, late_fraction: float = LATE_FRACTION, min_fraction: float = MIN_SEGMENT_FRACTION
) -> pd.DataFrame:
    """One row per segment: ``segment, regime, start_step, end_step, length, episodes, late_return,
    early_return, short`` (see the module docstring).

    An open last segment ends at the run's last step. Episodes belong to a segment by their
    ``regime/segment`` column when the run logged one, else by their step.
    """
    run = _as_run(run)
    seg = _segment_bounds(run)
    m = run.metrics
    ep = m[m[RET].notna()] if (not m.empty and RET in m) else pd.DataFrame(columns=["global_step", RET])
    intended = intended_segment_length(run)
    rows = []
    for s in seg.itertuples(index=False):
        length = float(s.end_step - s.start_step)
        if "regime/segment" in ep:
            e = ep[ep["regime/segment"] == s.segment]
        else:
            e = ep[(ep["global_step"] > s.start_step) & (ep["global_step"] <= s.end_step)]
        rel = e["global_step"].to_numpy(dtype=float) - float(s.start_step)
        rets = e[RET].to_numpy(dtype=float)
        rows.append(
            {
                "segment": int(s.segment),
                "regime": int(s.regime),
                "start_step": float(s.start_step),
                "end_step": float(s.end_step),
                "length": length,
                "episodes": int(rets.size),
                "late_return": _window_mean(rets, rel > length * (1 - late_fraction), -1),
                "early_return": _window_mean(rets, rel <= length * late_fraction, 0),
                "short": bool(math.isfinite(intended) and length < min_fraction * intended),
            }
        )
    cols = ["segment", "regime", "start_step", "end_step", "length", "episodes", "late_return", "early_return", "short"]
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------- the definitions


def normalised_auc(steps: np.ndarray, returns: np.ndarray, length: float, lo: float, hi: float) -> float:
    """Mean normalised return over ``[0, length]`` (a step function of the episode returns,
    each episode's return holding from its end to the next one; before the first episode
    the curve is at ``lo``), normalised by ``(r - lo) / (hi - lo)``.

    Example:
        >>> normalised_auc(np.array([0, 50]), np.array([0.0, 10.0]), 100, 0.0, 10.0)
        0.5
    """
    if length <= 0 or hi <= lo:
        return 0.0
    s = np.clip(np.asarray(steps, dtype=float), 0, length)
    r = (np.clip(np.asarray(returns, dtype=float), lo, hi) - lo) / (hi - lo)
    edges = np.append(s, length)
    return float(np.sum(r * np.diff(edges)) / length)


def forward_transfer(auc: float, auc_ref: float) -> float:
    """Continual World's forward transfer ``(AUC - AUC_ref) / (1 - AUC_ref)``.

    Example:
        >>> forward_transfer(0.75, 0.5)
        0.5
    """
    if auc_ref >= 1.0:
        return 0.0
    return (auc - auc_ref) / (1.0 - auc_ref)


def forgetting(p_end: float, p_final: float) -> float:
    """Continual World's forgetting of a regime: performance at its end minus performance at the end of training.

    Example:
        >>> forgetting(10.0, 4.0)
        6.0
    """
    return float(p_end - p_final)


def plasticity_score(segments: Iterable[float], late_returns: Iterable[float]) -> float:
    """Dohare et al.'s trend: least-squares slope of the late return against the segment index.

    Example:
        >>> plasticity_score([0, 1, 2], [10.0, 8.0, 6.0])
        -2.0
    """
    return slope(np.asarray(list(segments), dtype=float), np.asarray(list(late_returns), dtype=float))


def _eval_columns(m: pd.DataFrame, measure: str = "return") -> dict[int, str]:
    out = {}
    for c in m.columns:
        parts = str(c).split("/")
        if len(parts) == 3 and parts[0] == "eval" and parts[1].startswith("regime_") and parts[2] == measure:
            try:
                out[int(parts[1].removeprefix("regime_"))] = c
            except ValueError:
                continue
    return out


def _eval_series(m: pd.DataFrame, col: str) -> pd.DataFrame:
    s = m[["global_step", col]].copy()
    s[col] = pd.to_numeric(s[col], errors="coerce")
    return s.dropna()


def performance_at_end(run: Run, seg: pd.DataFrame, measure: str = "return") -> tuple[dict[int, float], str]:
    """``p_i(T)`` per regime and where it came from (``eval`` or ``train``); ``measure="success"``:
    the evaluations' success rates (Continual World's ``p_i``), never the training returns.
    """
    evals = _eval_columns(run.metrics, measure) if not run.metrics.empty else {}
    if evals or measure != "return":
        out = {}
        for k, c in sorted(evals.items()):
            s = _eval_series(run.metrics, c)
            if len(s):
                out[k] = float(s[c].iloc[-1])
        return out, "eval"
    kept = seg[~seg["short"]]
    return {int(k): float(g["late_return"].iloc[-1]) for k, g in kept.groupby("regime")}, "train"


def regime_forgetting(
    run: Run, seg: pd.DataFrame, p_final: dict[int, float], source: str, measure: str = "return"
) -> dict[int, float]:
    """``F_i`` per regime (see the module docstring); only regimes where it is defined."""
    kept = seg[~seg["short"]]
    out: dict[int, float] = {}
    if source == "eval":
        evals = _eval_columns(run.metrics, measure) if not run.metrics.empty else {}
        for k, c in sorted(evals.items()):
            first = kept[kept["regime"] == k]
            if first.empty or k not in p_final:
                continue
            s = _eval_series(run.metrics, c)
            before = s[s["global_step"] <= float(first["end_step"].iloc[0])]
            if len(before):
                out[k] = forgetting(float(before[c].iloc[-1]), p_final[k])
        return out
    for k, g in kept.groupby("regime"):
        drops = [forgetting(a, b) for a, b in zip(g["late_return"].iloc[:-1], g["early_return"].iloc[1:], strict=True)]
        drops = [d for d in drops if math.isfinite(d)]
        if drops:
            out[int(k)] = float(np.mean(drops))
    return out


def regime_forward_transfer(
    run: Run, seg: pd.DataFrame, reference_dirs: Iterable[str | Path | Run]
) -> dict[int, float]:
    """Forward transfer of the first (not short) visit of each regime with a reference run
    (folders, or runs already read: the same references for many runs are read once).
    """
    refs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for d in reference_dirs:
        ref = _as_run(d)
        rseg = segment_table(ref)
        if rseg.empty:
            raise RunReadError(f"{d}: reference run has no regimes.csv")
        first = rseg.iloc[0]
        e = ref.metrics[ref.metrics[RET].notna()] if RET in ref.metrics else pd.DataFrame(columns=["global_step", RET])
        refs[int(first["regime"])] = (
            e["global_step"].to_numpy(dtype=float) - float(first["start_step"]),
            e[RET].to_numpy(dtype=float),
        )
    m = run.metrics
    ep = m[m[RET].notna()] if (not m.empty and RET in m) else pd.DataFrame(columns=["global_step", RET])
    out: dict[int, float] = {}
    for s in seg[~seg["short"]].itertuples(index=False):
        if s.regime in out or s.regime not in refs:
            continue
        e = (
            ep[ep["regime/segment"] == s.segment]
            if "regime/segment" in ep
            else ep[(ep["global_step"] > s.start_step) & (ep["global_step"] <= s.end_step)]
        )
        steps, rets = e["global_step"].to_numpy(dtype=float) - s.start_step, e[RET].to_numpy(dtype=float)
        rs, rr = refs[s.regime]
        both = np.concatenate([rets, rr[rs <= s.length]])
        if both.size == 0:
            continue
        lo, hi = float(both.min()), float(both.max())
        auc, auc_ref = normalised_auc(steps, rets, s.length, lo, hi), normalised_auc(rs, rr, s.length, lo, hi)
        out[int(s.regime)] = forward_transfer(auc, auc_ref)
    return out


def _mean(d: dict[int, float]) -> float:
    vals = [v for v in d.values() if math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def run_metrics(
    run_dir: str | Path | Run,
    reference_dirs: Iterable[str | Path] | None = None,
    late_fraction: float = LATE_FRACTION,
    min_fraction: float = MIN_SEGMENT_FRACTION,
    measure: str = "return",
) -> dict[str, Any]:
    """Every score of one run with its parts (see the module docstring).

    ``measure="success"`` scores average performance and forgetting on the evaluations'
    ``eval/regime_<i>/success`` (Continual World's success rates; NaN without them); forward
    transfer and the plasticity score stay on returns.

    Returns a dict with the :data:`SCORES` (floats, NaN where undefined) and
    ``performance`` / ``forgetting_by_regime`` / ``forward_transfer_by_regime`` ({regime:
    value}), ``late_returns`` ({segment: value} of the scored segments), ``short_segments``
    (ids left out), ``segments``, ``intended_segment_length``, ``source`` (``eval``/``train``),
    ``late_fraction`` and ``min_segment_fraction``.
    """
    run = _as_run(run_dir)
    if run.regimes.empty:
        raise RunReadError(f"{run.path}: no regimes.csv, not a drifting run")
    seg = segment_table(run, late_fraction, min_fraction)
    kept = seg[~seg["short"]]
    perf, source = performance_at_end(run, seg, measure)
    forget = regime_forgetting(run, seg, perf, source, measure)
    ft = regime_forward_transfer(run, seg, reference_dirs) if reference_dirs else {}
    return {
        "reference": run.reference,
        "average_performance": _mean(perf),
        "forgetting": _mean(forget),
        "forward_transfer": _mean(ft),
        "plasticity_score": plasticity_score(kept["segment"], kept["late_return"]),
        "performance": perf,
        "forgetting_by_regime": forget,
        "forward_transfer_by_regime": ft,
        "late_returns": dict(zip(kept["segment"].tolist(), kept["late_return"].tolist(), strict=True)),
        "short_segments": seg.loc[seg["short"], "segment"].tolist(),
        "segments": len(seg),
        "intended_segment_length": intended_segment_length(run),
        "source": source,
        "late_fraction": late_fraction,
        "min_segment_fraction": min_fraction,
    }


def run_scores(
    run_dir: str | Path | Run,
    reference_dirs: Iterable[str | Path] | None = None,
    late_fraction: float = LATE_FRACTION,
    min_fraction: float = MIN_SEGMENT_FRACTION,
) -> dict[str, float]:
    """The :data:`SCORES` of one run as flat floats (NaN where undefined), plus ``segments_scored``
    and ``segments_short``: what a wandb run summary holds. A run without regimes gives NaN scores.
    """
    run = _as_run(run_dir)
    if run.regimes.empty:
        return {**{k: float("nan") for k in SCORES}, "segments_scored": 0.0, "segments_short": 0.0}
    m = run_metrics(run, reference_dirs, late_fraction, min_fraction)
    out = {k: float(m[k]) for k in SCORES}
    out["segments_scored"] = float(m["segments"] - len(m["short_segments"]))
    out["segments_short"] = float(len(m["short_segments"]))
    return out


# ---------------------------------------------------------------- across seeds


def _groups(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    out: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        out.setdefault((r.env, r.agent), []).append(r)
    return out


def _status_counts(runs: list[Run]) -> str:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.state] = counts.get(r.state, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def summary_table(
    runs: list[Run],
    reps: int = 2000,
    late_fraction: float = LATE_FRACTION,
    min_fraction: float = MIN_SEGMENT_FRACTION,
    seed: int = 0,
    reference_dirs: Iterable[str | Path] | None = None,
    scores: Iterable[str] = SCORES,
) -> pd.DataFrame:
    """One row per (env, agent): ``env, agent, reference`` (:func:`reference_kind`), ``seeds, status,
    short_segments`` and for each score
    ``<score>`` (text), ``<score>_iqm``, ``<score>_lo``, ``<score>_hi``, ``<score>_n`` (seeds with a
    value). The IQM over seeds with a stratified-bootstrap 95 % CI; ``n/a (1 seed)`` with one seed.
    ``reference_dirs``: from-scratch reference runs (one per regime) for forward transfer (NaN without).
    ``scores``: the scores with columns (all :data:`SCORES` by default; each bootstrap costs).
    """
    refs = list(reference_dirs or [])
    rows = []
    for (env, agent), rs in _groups(runs).items():
        sc = [run_scores(r, refs or None, late_fraction=late_fraction, min_fraction=min_fraction) for r in rs]
        row: dict[str, Any] = {"env": env, "agent": agent, "reference": rs[0].reference, "seeds": len(rs)}
        row["status"] = _status_counts(rs)
        row["short_segments"] = int(sum(s["segments_short"] for s in sc))
        for key in scores:
            est = iqm_estimate(np.array([s[key] for s in sc]), reps=reps, seed=seed)
            row[key] = est.text()
            row[f"{key}_iqm"], row[f"{key}_lo"], row[f"{key}_hi"], row[f"{key}_n"] = est.point, est.low, est.high, est.n
        rows.append(row)
    return pd.DataFrame(rows)


def improvement_table(
    runs: list[Run],
    score: str = "average_performance",
    reps: int = 1000,
    late_fraction: float = LATE_FRACTION,
    min_fraction: float = MIN_SEGMENT_FRACTION,
    seed: int = 0,
) -> pd.DataFrame:
    """P(X > Y) of ``score`` for every pair of agents on an env: ``env, X, Y, P(X > Y)`` (text),
    ``p``, ``lo``, ``hi``, ``n`` (the smaller seed count); ``n/a (1 seed)`` below 2 seeds a side.
    """
    vals = {
        key: np.array([run_scores(r, late_fraction=late_fraction, min_fraction=min_fraction)[score] for r in rs])
        for key, rs in _groups(runs).items()
    }
    rows = []
    for env in sorted({e for e, _ in vals}):
        agents = sorted(a for e, a in vals if e == env)
        for i, a in enumerate(agents):
            for b in agents[i + 1 :]:
                est: Estimate = improvement_estimate(vals[(env, a)], vals[(env, b)], reps=reps, seed=seed)
                rows.append(
                    {"env": env, "X": a, "Y": b, "P(X > Y)": est.text(), "p": est.point, "lo": est.low}
                    | {"hi": est.high, "n": est.n}
                )
    return pd.DataFrame(rows, columns=["env", "X", "Y", "P(X > Y)", "p", "lo", "hi", "n"])


def paired_table(
    runs: list[Run],
    base: str,
    reps: int = 2000,
    late_fraction: float = LATE_FRACTION,
    min_fraction: float = MIN_SEGMENT_FRACTION,
    seed: int = 0,
) -> pd.DataFrame:
    """Each agent against ``base`` on the seeds both have, per env and score: ``env, agent, base,
    score, difference`` (text: the mean of the per-seed differences agent - base with a bootstrap
    95 % CI, :func:`crl.stats.paired_difference`), ``mean, lo, hi, n`` (pairs) and ``wins`` (the
    share of pairs where the agent scores higher, with its Wilson interval; ``won``, ``won_lo``,
    ``won_hi``: that count and interval as numbers). Empty when ``base``
    has no runs on an env.
    """
    scores = {
        key: {r.seed: run_scores(r, late_fraction=late_fraction, min_fraction=min_fraction) for r in rs}
        for key, rs in _groups(runs).items()
    }
    rows = []
    for (env, agent), by_seed in sorted(scores.items()):
        ref = scores.get((env, base))
        if agent == base or ref is None:
            continue
        seeds = sorted(set(by_seed) & set(ref))
        for key in SCORES:
            x = np.array([by_seed[s][key] for s in seeds], dtype=float)
            y = np.array([ref[s][key] for s in seeds], dtype=float)
            est = paired_difference(x, y, reps=reps, seed=seed)
            ok = np.isfinite(x) & np.isfinite(y)
            wins = share_estimate(int(np.sum(x[ok] > y[ok])), int(ok.sum()))
            rows.append(
                {"env": env, "agent": agent, "base": base, "score": key, "difference": est.text()}
                | {"mean": est.point, "lo": est.low, "hi": est.high, "n": est.n, "wins": wins.text(2)}
                | {"won": int(np.sum(x[ok] > y[ok])), "won_lo": wins.low, "won_hi": wins.high}
            )
    cols = ["env", "agent", "base", "score", "difference", "mean", "lo", "hi", "n", "wins", "won", "won_lo", "won_hi"]
    return pd.DataFrame(rows, columns=cols)


def floor_table(
    runs: list[Run],
    floor: float,
    late_fraction: float = LATE_FRACTION,
    min_fraction: float = MIN_SEGMENT_FRACTION,
) -> pd.DataFrame:
    """The share of seeds at the floor in each segment: ``env, agent, segment, regime, at_floor``
    (text: the share with its Wilson 95 % interval), ``share, lo, hi, n`` (seeds with a value in
    that segment), ``hits``. A seed is at the floor in a segment when its late return there is
    below ``floor``; short segments are left out, as in every score.
    """
    rows = []
    for (env, agent), rs in sorted(_groups(runs).items()):
        late: dict[int, list[tuple[int, float]]] = {}
        for r in rs:
            for s in segment_table(r, late_fraction, min_fraction).itertuples(index=False):
                if not s.short and math.isfinite(s.late_return):
                    late.setdefault(int(s.segment), []).append((int(s.regime), float(s.late_return)))
        for segment, values in sorted(late.items()):
            hits = sum(v < floor for _, v in values)
            est = share_estimate(hits, len(values))
            rows.append(
                {"env": env, "agent": agent, "segment": segment, "regime": values[0][0], "at_floor": est.text(2)}
                | {"share": est.point, "lo": est.low, "hi": est.high, "n": est.n, "hits": hits}
            )
    cols = ["env", "agent", "segment", "regime", "at_floor", "share", "lo", "hi", "n", "hits"]
    return pd.DataFrame(rows, columns=cols)


def run_table(runs: list[Run], root: str | Path | None = None) -> pd.DataFrame:
    """One row per run: ``run, env, agent, reference, seed, status, step, error, command`` (``run`` relative
    to ``root``; ``reference``: :func:`reference_kind`).
    """
    rows = []
    for r in runs:
        try:
            name = str(r.path.relative_to(root)) if root is not None else str(r.path)
        except ValueError:
            name = str(r.path)
        steps = r.status.get("steps", r.config.get("steps", "?"))
        rows.append(
            {
                "run": name,
                "env": r.env,
                "agent": r.agent,
                "reference": r.reference,
                "seed": r.seed,
                "status": STATUS_MARK.get(r.state, r.state.upper()),
            }
            | {"step": f"{r.status.get('global_step', '?')}/{steps}", "error": r.status.get("error") or ""}
            | {"command": r.config.get("command", "")}
        )
    cols = ["run", "env", "agent", "reference", "seed", "status", "step", "error", "command"]
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------- output


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None``, numpy scalars as Python numbers and keys as text.

    Example:
        >>> json_safe({1: [float("nan"), np.float64(2.0)]})
        {'1': [None, 2.0]}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def format_value(v: Any) -> str:
    """A metric value as table text: floats to 4 significant digits (NaN as ``-``), lists and dicts joined.

    Example:
        >>> format_value({"0": 1.23456, "1": float("nan")})
        '0: 1.235, 1: -'
    """
    if isinstance(v, dict):
        return ", ".join(f"{k}: {format_value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list):
        return ", ".join(format_value(x) for x in v) or "-"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return str(v)
