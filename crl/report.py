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

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import crl.metrics as metrics
from crl.errors import ConfigError
from crl.stats import iqm_estimate

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
    "report_wandb_init",
]

RETURN = "charts/episodic_return"
STATUS_MARK = {"finished": "finished", "running": "RUNNING", "failed": "FAILED", "interrupted": "INTERRUPTED"}


#: One run folder, read (the same class as :class:`crl.metrics.Run`).
Run = metrics.Run


def load_runs(runs_dir: str | Path) -> list[Run]:
    """Load every run (a folder with ``config.yaml`` or ``metrics.csv``) below ``runs_dir``, sorted by
    env, agent, seed (:func:`crl.metrics.find_runs`); a folder that cannot be read is skipped with
    one line on stderr.

    Raises ``ConfigError`` if ``runs_dir`` is not a directory.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise ConfigError(f"runs directory {str(root)!r} does not exist or is not a directory")
    runs, notes = metrics.find_runs(root)
    for note in notes:
        print(f"crl: note: {note}", file=sys.stderr)
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


def late_regime_returns(run: Run, late_fraction: float = metrics.LATE_FRACTION) -> pd.DataFrame:
    """Per segment: late and early return and whether it is too short to score (:func:`crl.metrics.segment_table`)."""
    return metrics.segment_table(run, late_fraction)


def compare_tables(
    runs_dir: str | Path | list[Run], late_fraction: float = metrics.LATE_FRACTION, poi: bool = False, reps: int = 2000
) -> dict[str, pd.DataFrame]:
    """The comparison tables: ``summary`` (:func:`crl.metrics.summary_table`), ``runs``
    (:func:`crl.metrics.run_table`) and, with ``poi``, ``poi`` (:func:`crl.metrics.improvement_table`).
    """
    runs = runs_dir if isinstance(runs_dir, list) else load_runs(runs_dir)
    tables = {
        "summary": metrics.summary_table(runs, reps=reps, late_fraction=late_fraction),
        "runs": metrics.run_table(runs, None if isinstance(runs_dir, list) else runs_dir),
    }
    if poi:
        tables["poi"] = metrics.improvement_table(runs, reps=min(reps, 1000), late_fraction=late_fraction)
    return tables


# ---------------------------------------------------------------- per-segment scores (from crl.metrics)


def segment_scores(runs: list[Run], late_fraction: float = metrics.LATE_FRACTION) -> tuple[pd.DataFrame, list[str]]:
    """One row per (run, regime segment): its late return and whether it is too short (:mod:`crl.metrics`).

    Columns: ``env, agent, seed, run, segment, regime, start_step, end_step, score, short``;
    ``score`` is :func:`crl.metrics.segment_table`'s ``late_return`` (NaN for a short segment,
    which every score leaves out), so the report, ``crl compare`` and ``crl metrics`` read the
    same numbers. Returns the table and one note per run without segments (no ``regimes.csv``).
    """
    cols = ["env", "agent", "seed", "run", "segment", "regime", "start_step", "end_step", "score", "short"]
    frames, notes = [], []
    for r in runs:
        seg = metrics.segment_table(r, late_fraction)
        if seg.empty:
            notes.append(f"{r.name}: no regime segments (no regimes.csv rows), left out of the per-regime scores")
            continue
        seg = seg.assign(env=r.env, agent=r.agent, seed=r.seed, run=r.name)
        seg["score"] = seg["late_return"].where(~seg["short"].astype(bool))
        frames.append(seg[cols])
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    table["short"] = table["short"].astype(bool)
    return table, notes


def regime_length(runs: list[Run]) -> float:
    """The intended regime length in steps: the median over runs of :func:`crl.metrics.intended_segment_length`."""
    lengths = [metrics.intended_segment_length(r) for r in runs]
    lengths = [x for x in lengths if math.isfinite(x) and x > 0]
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

    One seed gives the value and ``CI n/a (1 seed)`` (:class:`crl.stats.Estimate`); a segment
    too short in every run reads ``too short: left out``.
    """
    out = []
    for (env, seg, regime), t in table.groupby(["env", "segment", "regime"], sort=True):
        row: dict[str, Any] = {"env": env, "segment": int(seg), "regime": int(regime)}
        for agent, a in t.groupby("agent", sort=True):
            vals = a["score"].to_numpy(float)
            n = int(np.isfinite(vals).sum())
            if a["short"].all():
                row[agent] = "too short: left out"
            elif n == 0:
                row[agent] = "n/a (no episodes)"
            else:
                row[agent] = iqm_estimate(vals, reps=reps).text(digits=3)
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
    from crl.report_page import ReportInput, write

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
    page = ReportInput(runs, runs_dir, tables, bin_steps or default_bin_steps(runs), late_fraction, reps)
    index, figures = write(page, out)
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)
    if wandb:
        log_report_to_wandb(out, figures, tables, project=wandb_project, mode=wandb_mode, runs_dir=runs_dir)
    return index


def report_wandb_init(runs_dir: str | Path, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``wandb.init`` arguments of the report run of the runs under ``runs_dir``: group, tags, config.

    The group is the runs' experiment (the training runs' groups are
    ``<experiment>__<env>__<agent>``, so the report sits beside them), the tags are
    ``report``, the experiment, the envs and the agents, and the config lists them with the
    seeds, the steps, the run count and ``options`` (the report's own settings).

    Example:
        >>> import tempfile, yaml
        >>> d = Path(tempfile.mkdtemp())
        >>> for seed in (0, 1):
        ...     (d / f"r{seed}").mkdir()
        ...     cfg = {"experiment": "quick", "env": {"name": "ant"}, "agent": {"name": "ppo"}, "seed": seed}
        ...     _ = (d / f"r{seed}" / "config.yaml").write_text(yaml.safe_dump(cfg))
        >>> init = report_wandb_init(d, {"bin_steps": 5})
        >>> init["group"], init["tags"], init["config"]["seeds"], init["config"]["bin_steps"]
        ('quick', ['report', 'quick', 'ant', 'ppo'], [0, 1], 5)
    """
    import yaml

    configs = []
    for path in sorted(Path(runs_dir).rglob("config.yaml")):
        try:
            cfg = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(cfg, dict) and isinstance(cfg.get("env"), dict) and isinstance(cfg.get("agent"), dict):
            configs.append(cfg)

    def values(get: Any) -> list[Any]:
        return sorted({get(c) for c in configs if get(c) is not None}, key=str)

    experiments = values(lambda c: c.get("experiment"))
    group = experiments[0] if len(experiments) == 1 else Path(runs_dir).resolve().name
    envs, agents = values(lambda c: c["env"].get("name")), values(lambda c: c["agent"].get("name"))
    config = {
        "runs_dir": str(runs_dir),
        "experiment": group,
        "runs": len(configs),
        "envs": envs,
        "agents": agents,
        "seeds": values(lambda c: c.get("seed")),
        "steps": values(lambda c: c.get("steps")),
        **(options or {}),
    }
    tags = list(dict.fromkeys(str(t)[:64] for t in ["report", group, *envs, *agents]))
    return {"group": group, "job_type": "report", "name": f"{group}__report", "tags": tags, "config": config}


def log_report_to_wandb(
    out_dir: Path,
    figures: dict[str, dict[str, Path]],
    tables: dict[str, pd.DataFrame],
    project: str = "crl",
    mode: str = "offline",
    runs_dir: str | Path | None = None,
) -> Path:
    """Log the figures (``wandb.Image``) and tables (``wandb.Table``) as a ``job_type="report"`` run; return its dir.

    With ``runs_dir``, the run is grouped, tagged and configured like the runs it reports
    (:func:`report_wandb_init`).
    """
    import wandb

    init = {"job_type": "report", "name": "report", **(report_wandb_init(runs_dir) if runs_dir is not None else {})}
    run = wandb.init(project=project, mode=mode, dir=str(out_dir), reinit=True, **init)
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
            ["env", "agent", "reference", "seeds", "status", *metrics.SCORES, "short_segments"],
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
    console.print(metrics.REFERENCE_NOTE)
