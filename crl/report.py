"""Compare agents from run directories: the HTML report, the terminal tables and the wandb report run.

Reads only the files a run writes (``config.yaml``, ``metrics.csv``, ``regimes.csv``,
``status.json``); nothing here builds a model or trains. A runs directory may hold several
experiments or be one experiment folder: every folder with a ``config.yaml`` below it is a run.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> load_runs(d)
    []
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from crl.config import yaml_load
from crl.errors import ConfigError
from crl.metrics import run_metrics
from crl.stats import iqm_ci, probability_of_improvement, slope

__all__ = [
    "Run",
    "load_runs",
    "binned_returns",
    "late_regime_returns",
    "compare_tables",
    "segment_scores",
    "regime_length",
    "default_bin_steps",
    "per_regime_table",
    "build_report",
    "print_compare",
    "log_report_to_wandb",
]

RETURN = "charts/episodic_return"
STATUS_MARK = {"finished": "finished", "running": "RUNNING", "failed": "FAILED", "interrupted": "INTERRUPTED"}


@dataclass
class Run:
    """One run directory, loaded."""

    path: Path
    config: dict[str, Any]
    metrics: pd.DataFrame
    regimes: pd.DataFrame
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> str:
        env = self.config.get("env", {})
        return str(env.get("name", "?") if isinstance(env, dict) else env)

    @property
    def agent(self) -> str:
        agent = self.config.get("agent", {})
        return str(agent.get("name", "?") if isinstance(agent, dict) else agent)

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def state(self) -> str:
        return str(self.status.get("status", "unknown"))

    @property
    def name(self) -> str:
        return self.path.name


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def load_runs(runs_dir: str | Path) -> list[Run]:
    """Load every run (a folder with ``config.yaml``) below ``runs_dir``, sorted by env, agent, seed.

    Raises ``ConfigError`` if ``runs_dir`` is not a directory.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise ConfigError(f"runs directory {str(root)!r} does not exist or is not a directory")
    runs = []
    for cfg in sorted(root.rglob("config.yaml")):
        d = cfg.parent
        try:
            config = yaml_load(cfg.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{cfg}: not valid YAML ({e})") from e
        status = {}
        if (d / "status.json").is_file():
            try:
                status = json.loads((d / "status.json").read_text())
            except json.JSONDecodeError:
                status = {"status": "unknown"}
        runs.append(Run(d, config, _read_csv(d / "metrics.csv"), _read_csv(d / "regimes.csv"), status))
    runs.sort(key=lambda r: (r.env, r.agent, r.seed, str(r.path)))
    return runs


def _episodes(run: Run) -> pd.DataFrame:
    m = run.metrics
    if m.empty or RETURN not in m:
        return pd.DataFrame(columns=["global_step", RETURN])
    return m.loc[m[RETURN].notna()].sort_values("global_step")


def binned_returns(run: Run, bin_steps: int, n_bins: int) -> np.ndarray:
    """Mean episodic return per bin of ``bin_steps`` steps, by episode end (Dohare Fig. 3); NaN for empty bins.

    Example:
        >>> r = Run(Path("x"), {}, pd.DataFrame({"global_step": [5, 15, 18], RETURN: [1.0, 2.0, 4.0]}), pd.DataFrame())
        >>> binned_returns(r, 10, 3).tolist()[:2]
        [1.0, 3.0]
    """
    ep = _episodes(run)
    out = np.full(n_bins, np.nan)
    if ep.empty:
        return out
    idx = ((ep["global_step"].to_numpy() - 1) // bin_steps).astype(int)
    vals = ep[RETURN].to_numpy(dtype=float)
    for b in range(n_bins):
        sel = vals[idx == b]
        if sel.size:
            out[b] = sel.mean()
    return out


def _segments(run: Run) -> pd.DataFrame:
    r = run.regimes
    if r.empty or "start_step" not in r:
        return pd.DataFrame(columns=["segment", "regime", "start_step", "end_step"])
    r = r.sort_values("segment").reset_index(drop=True).copy()
    end = r["end_step"].astype(float)
    last = float(run.status.get("global_step", 0) or 0)
    if not _episodes(run).empty:
        last = max(last, float(_episodes(run)["global_step"].max()))
    r["end_step"] = end.fillna(last)
    return r


def late_regime_returns(run: Run, late_fraction: float = 0.25) -> pd.DataFrame:
    """Per segment: mean return of the episodes ending in the last ``late_fraction`` of the segment.

    Also returns the early return (first ``late_fraction``), used for forgetting on revisits.
    Columns: segment, regime, start_step, end_step, late_return, early_return.
    """
    seg = _segments(run)
    ep = _episodes(run)
    steps = ep["global_step"].to_numpy(dtype=float)
    vals = ep[RETURN].to_numpy(dtype=float)
    late, early = [], []
    for _, s in seg.iterrows():
        a, b = float(s["start_step"]), float(s["end_step"])
        cut_hi = b - late_fraction * (b - a)
        cut_lo = a + late_fraction * (b - a)
        sel_late = vals[(steps > cut_hi) & (steps <= b)]
        sel_early = vals[(steps > a) & (steps <= cut_lo)]
        late.append(sel_late.mean() if sel_late.size else np.nan)
        early.append(sel_early.mean() if sel_early.size else np.nan)
    seg = seg[["segment", "regime", "start_step", "end_step"]].copy()
    seg["late_return"] = late
    seg["early_return"] = early
    return seg


def _run_scores(run: Run, late_fraction: float) -> dict[str, float]:
    lr = late_regime_returns(run, late_fraction)
    scores = {"average": float(np.nanmean(lr["late_return"])) if lr["late_return"].notna().any() else math.nan}
    scores["plasticity"] = slope(lr["segment"].to_numpy(), lr["late_return"].to_numpy())
    # forgetting on revisits: late return at the previous visit's end minus early return at the revisit
    drops = []
    for i in range(len(lr)):
        prev = lr.iloc[:i][lr.iloc[:i]["regime"] == lr.iloc[i]["regime"]]
        if len(prev):
            drops.append(prev.iloc[-1]["late_return"] - lr.iloc[i]["early_return"])
    # forgetting from evaluation columns: best eval on regime k before the end minus the final eval
    evals = [c for c in run.metrics.columns if c.startswith("eval/regime_")] if not run.metrics.empty else []
    ev = []
    for c in evals:
        s = run.metrics[["global_step", c]].dropna().sort_values("global_step")
        if len(s) >= 2:
            ev.append(float(s[c].iloc[:-1].max() - s[c].iloc[-1]))
    if ev:
        scores["forgetting"] = float(np.mean(ev))
        finals = [run.metrics[c].dropna().iloc[-1] for c in evals if run.metrics[c].notna().any()]
        scores["average"] = float(np.mean(finals))
    else:
        scores["forgetting"] = float(np.nanmean(drops)) if drops and np.isfinite(drops).any() else math.nan
    return scores


def _groups(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    out: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        out.setdefault((r.env, r.agent), []).append(r)
    return out


def _fmt(x: float, lo: float, hi: float) -> str:
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.3g} [{lo:.3g}, {hi:.3g}]"


def compare_tables(
    runs_dir: str | Path, late_fraction: float = 0.25, poi: bool = False, reps: int = 2000
) -> dict[str, pd.DataFrame]:
    """The comparison tables: ``summary`` (per env and agent), ``runs`` (status, command), optional ``poi``.

    ``summary`` has, per (env, agent): number of seeds, IQM and 95 % stratified-bootstrap CI of the
    average performance (late-regime return averaged over segments, or the final evaluation
    returns when ``eval/regime_<k>/return`` columns exist), the plasticity score (slope of the
    late-regime return against the segment index; negative = loss of plasticity) and forgetting
    (on revisited regimes or from evaluation columns). Forward transfer needs reference runs
    trained from scratch on each regime; it is reported as n/a otherwise.
    """
    runs = runs_dir if isinstance(runs_dir, list) else load_runs(runs_dir)
    rows, raw = [], {}
    for (env, agent), rs in _groups(runs).items():
        sc = [_run_scores(r, late_fraction) for r in rs]
        row: dict[str, Any] = {"env": env, "agent": agent, "seeds": len(rs)}
        row["status"] = ", ".join(f"{n} {s}" for s, n in pd.Series([r.state for r in rs]).value_counts().items())
        for key in ("average", "plasticity", "forgetting"):
            vals = np.array([s[key] for s in sc], dtype=float)
            raw[(env, agent, key)] = vals
            m, lo, hi = iqm_ci(vals, reps=reps)
            row[f"{key}_iqm"], row[f"{key}_lo"], row[f"{key}_hi"] = m, lo, hi
            row[key] = _fmt(m, lo, hi)
        row["forward_transfer"] = "n/a"
        rows.append(row)
    tables = {"summary": pd.DataFrame(rows)}
    tables["runs"] = pd.DataFrame(
        [
            {
                "run": str(r.path.relative_to(Path(runs_dir))) if not isinstance(runs_dir, list) else r.name,
                "env": r.env,
                "agent": r.agent,
                "seed": r.seed,
                "status": STATUS_MARK.get(r.state, r.state.upper()),
                "step": f"{r.status.get('global_step', '?')}/{r.status.get('steps', r.config.get('steps', '?'))}",
                "error": r.status.get("error") or "",
                "command": r.config.get("command", ""),
            }
            for r in runs
        ]
    )
    if poi:
        prow = []
        for env in sorted({r.env for r in runs}):
            agents = sorted({r.agent for r in runs if r.env == env})
            for i, a in enumerate(agents):
                for b in agents[i + 1 :]:
                    p, lo, hi = probability_of_improvement(
                        raw[(env, a, "average")], raw[(env, b, "average")], reps=min(reps, 1000)
                    )
                    prow.append({"env": env, "X": a, "Y": b, "P(X > Y)": _fmt(p, lo, hi), "p": p})
        tables["poi"] = pd.DataFrame(prow)
    return tables


# ---------------------------------------------------------------- per-segment scores (from crl.metrics)


def segment_scores(runs: list[Run]) -> tuple[pd.DataFrame, list[str]]:
    """One row per (run, regime segment): its score from :mod:`crl.metrics` and whether it is too short.

    Columns: ``env, agent, seed, run, segment, regime, start_step, end_step, score, short``.
    ``score`` is the segment's final return as :func:`crl.metrics.run_metrics` defines it; the
    report, ``crl compare`` and ``crl metrics`` read the same numbers. Returns the table and one
    note per run that has no scores (no ``regimes.csv``, no episodes, unreadable files).
    """
    rows, notes = [], []
    for r in runs:
        try:
            res = run_metrics(r.path)
        except (ConfigError, ValueError, KeyError, OSError) as e:
            notes.append(f"{r.name}: no per-segment scores ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
            continue
        seg = _segments(r)
        finals = list(res.get("final_returns", []))
        shorts = set(res.get("short_segments", []))
        for i, s in enumerate(seg.itertuples(index=False)):
            score = float(finals[i]) if i < len(finals) and finals[i] is not None else math.nan
            rows.append(
                {
                    "env": r.env,
                    "agent": r.agent,
                    "seed": r.seed,
                    "run": r.name,
                    "segment": int(s.segment),
                    "regime": int(s.regime),
                    "start_step": float(s.start_step),
                    "end_step": float(s.end_step),
                    "score": score,
                    "short": int(s.segment) in shorts,
                }
            )
    cols = ["env", "agent", "seed", "run", "segment", "regime", "start_step", "end_step", "score", "short"]
    return pd.DataFrame(rows, columns=cols), notes


def regime_length(runs: list[Run]) -> float:
    """The intended regime length in steps: the median length of the closed segments of all runs (NaN if none)."""
    lengths = [
        float(e - s)
        for r in runs
        if not r.regimes.empty and {"start_step", "end_step"} <= set(r.regimes.columns)
        for s, e in zip(r.regimes["start_step"], r.regimes["end_step"], strict=True)
        if pd.notna(e) and e > s
    ]
    return float(np.median(lengths)) if lengths else math.nan


def default_bin_steps(runs: list[Run], per_regime: int = 10) -> int:
    """Return-curve bin width: a ``per_regime``-th of the regime length, else a 50th of the longest run."""
    length = regime_length(runs)
    if not math.isfinite(length):
        longest = max([float(r.metrics["global_step"].max()) for r in runs if "global_step" in r.metrics] + [1.0])
        length = longest * per_regime / 50
    return max(1, round(length / per_regime))


def per_regime_table(table: pd.DataFrame, reps: int = 1000) -> pd.DataFrame:
    """Regime segment x agent: IQM [95 % CI] of the segment scores over seeds, with n; short segments marked.

    One seed gives the value and ``n/a (1 seed)`` for the interval.
    """
    out = []
    for (env, seg, regime), t in table.groupby(["env", "segment", "regime"], sort=True):
        row: dict[str, Any] = {"env": env, "segment": int(seg), "regime": int(regime)}
        for agent, a in t.groupby("agent", sort=True):
            vals = a["score"].to_numpy(float)
            n = int(np.isfinite(vals).sum())
            if a["short"].any():
                row[agent] = "too short: left out"
            elif n == 0:
                row[agent] = "n/a (no episodes)"
            elif n == 1:
                row[agent] = f"{vals[np.isfinite(vals)][0]:.3g} [n/a (1 seed)] (n=1)"
            else:
                m, lo, hi = iqm_ci(vals, reps=reps)
                row[agent] = f"{m:.3g} [{lo:.3g}, {hi:.3g}] (n={n})"
        out.append(row)
    return pd.DataFrame(out).fillna("-")


def build_report(
    runs_dir: str | Path,
    out_dir: str | Path | None = None,
    bin_steps: int | None = None,
    late_fraction: float = 0.25,
    poi: bool = False,
    reps: int = 1000,
    wandb: bool = False,
    wandb_project: str = "crl",
    wandb_mode: str = "offline",
) -> Path:
    """Write the comparison report (``index.html`` plus every figure as PNG and SVG) and return the HTML path.

    ``out_dir`` defaults to ``<runs_dir>/report``. ``bin_steps`` is the width of the return and
    diagnostics bins in environment steps (by episode end, as in Dohare et al. Fig. 3); by
    default a tenth of the regime length (:func:`default_bin_steps`). ``poi`` adds the
    probability-of-improvement table; the figure is drawn whenever every agent has >= 3 seeds.
    """
    from crl import report_page

    if bin_steps is not None and bin_steps <= 0:
        raise ConfigError(f"bin_steps must be a positive number of steps, got {bin_steps}")
    if not 0 < late_fraction <= 1:
        raise ConfigError(f"late_fraction must be in (0, 1], got {late_fraction}")
    runs_dir = Path(runs_dir)
    runs = load_runs(runs_dir)
    if not runs:
        raise ConfigError(f"no runs (folders with config.yaml) found under {str(runs_dir)!r}")
    out = Path(out_dir) if out_dir is not None else runs_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    tables = compare_tables(runs, late_fraction=late_fraction, poi=poi, reps=reps)
    tables["runs"]["run"] = [str(r.path.relative_to(runs_dir)) for r in runs]
    page = report_page.ReportInput(runs, runs_dir, tables, bin_steps or default_bin_steps(runs), late_fraction, reps)
    index, figures = report_page.write(page, out)
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)
    if wandb:
        log_report_to_wandb(out, figures, tables, project=wandb_project, mode=wandb_mode)
    return index


def log_report_to_wandb(
    out_dir: Path,
    figures: dict[str, dict[str, Path]],
    tables: dict[str, pd.DataFrame],
    project: str = "crl",
    mode: str = "offline",
) -> Path:
    """Log the figures (``wandb.Image``) and tables (``wandb.Table``) as a ``job_type="report"`` run; return its dir."""
    import wandb

    run = wandb.init(project=project, mode=mode, dir=str(out_dir), job_type="report", name="report", reinit=True)
    try:
        for name, paths in figures.items():
            run.log({f"report/{name}": wandb.Image(str(paths["png"]))})
        for name, df in tables.items():
            run.log({f"report/table_{name}": wandb.Table(dataframe=df.astype(str))})
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
    return run_dir


# ---------------------------------------------------------------- terminal and CLI


def print_compare(
    runs_dir: str | Path, poi: bool = False, late_fraction: float = 0.25, reps: int = 2000, console=None
) -> None:
    """Print the comparison tables with ``rich``."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    tables = compare_tables(runs_dir, late_fraction=late_fraction, poi=poi, reps=reps)
    specs = {
        "summary": (
            "Per agent (IQM [95% CI] over seeds)",
            ["env", "agent", "seeds", "status", "average", "plasticity", "forgetting", "forward_transfer"],
        ),
        "poi": ("Probability of improvement", ["env", "X", "Y", "P(X > Y)"]),
        "runs": ("Runs", ["run", "status", "step", "error", "command"]),
    }
    styles = {"RUNNING": "yellow", "FAILED": "bold red", "INTERRUPTED": "magenta", "finished": "green"}
    for key, (title, cols) in specs.items():
        if key not in tables or tables[key].empty:
            continue
        t = Table(title=title)
        for c in cols:
            t.add_column(c, overflow="fold")
        for _, row in tables[key].iterrows():
            t.add_row(*[f"[{styles[str(row[c])]}]{row[c]}[/]" if str(row[c]) in styles else str(row[c]) for c in cols])
        console.print(t)
