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

import base64
import html
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
from crl.stats import iqm_ci, iqm_curve, probability_of_improvement, slope

__all__ = [
    "Run",
    "load_runs",
    "binned_returns",
    "late_regime_returns",
    "compare_tables",
    "build_report",
    "print_compare",
    "log_report_to_wandb",
    "report_wandb_init",
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


# ---------------------------------------------------------------- figures


def _colours(agents: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {a: cmap(i % 10) for i, a in enumerate(sorted(agents))}


#: regimes.csv columns that are per-regime summaries, not drift parameters.
_SUMMARY_COLUMNS = (
    "segment",
    "regime",
    "start_step",
    "end_step",
    "episodes",
    "final_return",
    "best_return",
    "steps_to_reach",
)


def _drift_params(regimes: pd.DataFrame) -> list[str]:
    """Drift parameters recorded in regimes.csv (not the summaries; diagnostics have a '/')."""
    return [c for c in regimes.columns if c not in _SUMMARY_COLUMNS and "/" not in c]


def _fig_returns(runs: list[Run], colours: dict, bin_steps: int, reps: int):
    import matplotlib.pyplot as plt

    envs = sorted({r.env for r in runs})
    fig, axes = plt.subplots(
        2 * len(envs), 1, figsize=(9, 4.2 * len(envs)), gridspec_kw={"height_ratios": [3, 1] * len(envs)}, squeeze=False
    )
    for i, env in enumerate(envs):
        ax, dax = axes[2 * i, 0], axes[2 * i + 1, 0]
        env_runs = [r for r in runs if r.env == env]
        max_step = max(
            [float(_episodes(r)["global_step"].max()) for r in env_runs if not _episodes(r).empty] + [bin_steps]
        )
        n_bins = math.ceil(max_step / bin_steps)
        centres = (np.arange(n_bins) + 0.5) * bin_steps
        for agent in sorted({r.agent for r in env_runs}):
            rs = [r for r in env_runs if r.agent == agent]
            curves = np.stack([binned_returns(r, bin_steps, n_bins) for r in rs])
            m, lo, hi = iqm_curve(curves, reps=reps)
            unfinished = sum(r.state != "finished" for r in rs)
            note = f", {unfinished} not finished" if unfinished else ""
            ax.plot(centres, m, color=colours[agent], label=f"{agent} (n={len(rs)}{note})", lw=1.8)
            ax.fill_between(centres, lo, hi, color=colours[agent], alpha=0.2, lw=0)
        # boundaries from the run that got furthest (every seed of an experiment shares the schedule)
        seg = max((_segments(r) for r in env_runs), key=len)
        for a in seg.get("start_step", pd.Series(dtype=float)).iloc[1:]:
            for axx in (ax, dax):
                axx.axvline(a, color="0.4", ls="--", lw=0.8)
        ax.set_title(f"{env}: episodic return (IQM over seeds, 95% bootstrap CI; bins of {bin_steps} steps)")
        ax.set_ylabel("episodic return")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        ax.tick_params(labelbottom=False)
        params = _drift_params(seg)
        if params and not seg.empty:
            for p in params:
                xs = np.r_[seg["start_step"].to_numpy(float), seg["end_step"].to_numpy(float)[-1]]
                ys = np.r_[seg[p].to_numpy(float), seg[p].to_numpy(float)[-1]]
                dax.step(xs, ys, where="post", label=p, lw=1.5)
            dax.set_ylabel(params[0] if len(params) == 1 else "drift value")
            if len(params) > 1:
                dax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        else:
            dax.text(0.5, 0.5, "no drift parameters recorded", ha="center", va="center", transform=dax.transAxes)
        dax.set_xlabel("environment steps")
        ax.sharex(dax)
        dax.set_xlim(0, max_step)
    fig.tight_layout()
    return fig


def _fig_regimes(runs: list[Run], colours: dict, late_fraction: float, reps: int):
    import matplotlib.pyplot as plt

    envs = sorted({r.env for r in runs})
    fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs) + 2, 3.8), squeeze=False)
    for j, env in enumerate(envs):
        ax = axes[0, j]
        for agent in sorted({r.agent for r in runs if r.env == env}):
            rs = [r for r in runs if r.env == env and r.agent == agent]
            tabs = [late_regime_returns(r, late_fraction) for r in rs]
            n = max(len(t) for t in tabs)
            if n == 0:
                continue
            arr = np.full((len(rs), n), np.nan)
            for k, t in enumerate(tabs):
                arr[k, : len(t)] = t["late_return"].to_numpy(float)
            m, lo, hi = iqm_curve(arr, reps=reps)
            x = np.arange(n)
            ax.errorbar(x, m, yerr=[m - lo, hi - m], color=colours[agent], marker="o", capsize=3, label=agent)
        ax.set_title(f"{env}: return late in each regime (last {late_fraction:.0%})", fontsize=10)
        ax.set_xlabel("regime segment index")
        ax.set_ylabel("late-regime return (IQM, 95% CI)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0, -1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _fig_diagnostics(runs: list[Run], colours: dict, bin_steps: int, max_panels: int = 16):
    import matplotlib.pyplot as plt

    cols = sorted({c for r in runs for c in r.metrics.columns if c.startswith("plasticity/")})
    if not cols:
        return None
    cols = cols[:max_panels]
    envs = sorted({r.env for r in runs})
    ncol = min(4, len(cols))
    nrow = math.ceil(len(cols) / ncol) * len(envs)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol + 1.5, 2.8 * nrow), squeeze=False)
    for a in axes.ravel():
        a.set_visible(False)
    per_env = math.ceil(len(cols) / ncol)
    for e, env in enumerate(envs):
        for k, c in enumerate(cols):
            ax = axes[e * per_env + k // ncol, k % ncol]
            ax.set_visible(True)
            for agent in sorted({r.agent for r in runs if r.env == env}):
                series = []
                for r in runs:
                    if r.env == env and r.agent == agent and c in r.metrics:
                        s = r.metrics[["global_step", c]].dropna()
                        if len(s):
                            b = ((s["global_step"] - 1) // bin_steps).astype(int)
                            series.append(s.groupby(b)[c].mean())
                if series:
                    df = pd.concat(series, axis=1)
                    ax.plot((df.index + 0.5) * bin_steps, df.median(axis=1), color=colours[agent], label=agent)
            ax.set_title(f"{env}\n{c.removeprefix('plasticity/')}", fontsize=8)
            ax.set_xlabel("environment steps", fontsize=8)
            ax.set_ylabel(c.rsplit("/", 1)[-1], fontsize=8)
            ax.tick_params(labelsize=7)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    handles = [plt.Line2D([], [], color=v, label=a) for a, v in colours.items()]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _save(fig, out: Path, name: str) -> dict[str, Path]:
    paths = {}
    for ext in ("png", "svg"):
        p = out / f"{name}.{ext}"
        fig.savefig(p, dpi=110, bbox_inches="tight")
        paths[ext] = p
    return paths


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;margin:1em 0;font-size:13px}}
th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}} th{{background:#eee}}
img{{max-width:100%;border:1px solid #ddd}} .RUNNING{{color:#b60}} .FAILED{{color:#c00;font-weight:bold}}
.INTERRUPTED{{color:#a0a}} pre{{background:#f6f6f6;padding:6px;font-size:11px;overflow:auto}}
</style>
<script>window.__crlErrors=[];window.addEventListener("error",function(e){{window.__crlErrors.push(String(e.message));}});</script>
</head><body>
<h1>{title}</h1>
<p>{n_runs} runs from <code>{runs_dir}</code>. Statistics: interquartile mean (IQM) over seeds with 95&nbsp;%
stratified-bootstrap confidence intervals (rliable). Late-regime return = mean return of episodes ending in the
last {late:.0%} of each regime segment; plasticity score = slope of that against the segment index
(negative: loss of plasticity).</p>
{body}
<div id="crl-status">pending</div>
<script>
var e=window.__crlErrors;
document.getElementById("crl-status").textContent=e.length?"errors: "+e.join("; "):"rendered-ok";
</script>
</body></html>
"""


def _table_html(df: pd.DataFrame, cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = str(row[c])
            cls = f' class="{v}"' if c == "status" and v in STATUS_MARK.values() else ""
            cells.append(f"<td{cls}>{html.escape(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def build_report(
    runs_dir: str | Path,
    out_dir: str | Path | None = None,
    bin_steps: int = 10_000,
    late_fraction: float = 0.25,
    poi: bool = False,
    reps: int = 1000,
    wandb: bool = False,
    wandb_project: str = "crl",
    wandb_mode: str = "offline",
) -> Path:
    """Write the comparison report (``index.html`` plus every figure as PNG and SVG) and return the HTML path.

    ``out_dir`` defaults to ``<runs_dir>/report``. ``bin_steps`` is the width of the return bins
    in environment steps (by episode end, as in Dohare et al. Fig. 3).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if bin_steps <= 0:
        raise ConfigError(f"bin_steps must be a positive number of steps, got {bin_steps}")
    if not 0 < late_fraction <= 1:
        raise ConfigError(f"late_fraction must be in (0, 1], got {late_fraction}")
    runs_dir = Path(runs_dir)
    runs = load_runs(runs_dir)
    if not runs:
        raise ConfigError(f"no runs (folders with config.yaml) found under {str(runs_dir)!r}")
    out = Path(out_dir) if out_dir is not None else runs_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    colours = _colours(sorted({r.agent for r in runs}))
    tables = compare_tables(runs, late_fraction=late_fraction, poi=poi, reps=reps)
    tables["runs"]["run"] = [str(r.path.relative_to(runs_dir)) for r in runs]

    figures: dict[str, dict[str, Path]] = {}
    makers = {
        "returns": lambda: _fig_returns(runs, colours, bin_steps, reps),
        "per_regime": lambda: _fig_regimes(runs, colours, late_fraction, reps),
        "diagnostics": lambda: _fig_diagnostics(runs, colours, bin_steps),
    }
    for name, make in makers.items():
        fig = make()
        if fig is not None:
            figures[name] = _save(fig, out, name)
            plt.close(fig)

    captions = {
        "returns": "Return across regime changes (dashed lines: regime boundaries; lower panel: drift value)",
        "per_regime": "Late-regime return against regime index: a falling line is loss of plasticity",
        "diagnostics": "Plasticity diagnostics over time (median over seeds)",
    }
    parts = []
    for name, paths in figures.items():
        b64 = base64.b64encode(paths["png"].read_bytes()).decode()
        parts.append(f'<h2>{captions[name]}</h2><img alt="{name}" src="data:image/png;base64,{b64}">')
    s = tables["summary"]
    parts.append("<h2>Per agent</h2>")
    parts.append(
        _table_html(s, ["env", "agent", "seeds", "status", "average", "plasticity", "forgetting", "forward_transfer"])
    )
    if "poi" in tables and len(tables["poi"]):
        parts.append("<h2>Probability of improvement (average performance)</h2>")
        parts.append(_table_html(tables["poi"], ["env", "X", "Y", "P(X > Y)"]))
    parts.append("<h2>Runs</h2>")
    parts.append(_table_html(tables["runs"], ["run", "env", "agent", "seed", "status", "step", "error", "command"]))
    parts.append("<h2>Configs</h2>")
    for r in runs:
        cfg = html.escape(yaml.safe_dump(r.config, sort_keys=False))
        parts.append(f"<details><summary>{html.escape(r.name)} ({r.state})</summary><pre>{cfg}</pre></details>")
    page = _PAGE.format(
        title="crl report",
        n_runs=len(runs),
        runs_dir=html.escape(str(runs_dir)),
        late=late_fraction,
        body="\n".join(parts),
    )
    index = out / "index.html"
    index.write_text(page)
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
