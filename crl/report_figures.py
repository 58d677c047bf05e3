"""The report's figures: matplotlib figures from loaded runs and their per-segment scores.

Every function takes the runs (:class:`crl.report.Run`) and/or the long per-segment table of
:func:`crl.report.segment_scores` (one row per run and regime segment, with its ``score`` and a
``short`` flag) and returns a matplotlib figure, or ``None`` when there is nothing to draw.
Nothing here computes a continual-learning score: the scores come from :mod:`crl.metrics`
through :func:`crl.report.segment_scores`; this module only aggregates them over seeds (IQM and
stratified-bootstrap CIs, :mod:`crl.stats` and rliable) and draws them.

Short segments (``short`` true: shorter than the fraction of the intended regime length that
:mod:`crl.metrics` documents) are left out of every aggregate and marked "too short" in the bars.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from crl.report import RETURN, Run, binned_returns
from crl.stats import import_rliable, iqm, iqm_curve

__all__ = [
    "NET_ORDER",
    "colours",
    "seed_counts",
    "diagnostic_networks",
    "boundaries",
    "score_matrices",
    "fig_returns",
    "fig_regime_bars",
    "fig_aggregates",
    "fig_profiles",
    "fig_poi",
    "fig_diagnostics",
    "fig_columns",
]

#: Networks in the order the diagnostics sections appear (others follow, sorted).
NET_ORDER = ("policy", "value", "actor", "critic", "critic_1", "critic_2", "qf")


def colours(agents: list[str]) -> dict[str, Any]:
    """One colour per agent, the same in every figure: tab10, or tab20 for more than 10 agents."""
    import matplotlib

    n = 10 if len(set(agents)) <= 10 else 20
    cmap = matplotlib.colormaps[f"tab{n}"]
    return {a: cmap(i % n) for i, a in enumerate(sorted(agents))}


def seed_counts(runs: list[Run]) -> dict[tuple[str, str], int]:
    """Number of runs (seeds) per (env, agent)."""
    out: dict[tuple[str, str], int] = {}
    for r in runs:
        out[(r.env, r.agent)] = out.get((r.env, r.agent), 0) + 1
    return out


def diagnostic_networks(runs: list[Run]) -> list[str]:
    """The networks with ``plasticity/<net>/...`` columns, policy and value (or actor, critics) first."""
    nets = {
        c.split("/")[1] for r in runs for c in r.metrics.columns if c.startswith("plasticity/") and c.count("/") >= 3
    }
    first = [n for n in NET_ORDER if n in nets]
    return first + sorted(nets - set(first))


def boundaries(table: pd.DataFrame, env: str) -> list[float]:
    """The regime-change steps of ``env`` (start of every segment but the first) from the segment table."""
    t = table[table["env"] == env]
    return sorted({float(s) for s in t["start_step"] if float(s) > 0})


def _vlines(ax, steps: list[float]) -> None:
    for s in steps:
        ax.axvline(s, color="0.45", ls="--", lw=0.7, zorder=0)


def _n_label(agent: str, n: int) -> str:
    return f"{agent} (n={n} seed{'s' if n != 1 else ''})"


def fig_returns(runs: list[Run], table: pd.DataFrame, col: dict, bin_steps: int, reps: int):
    """Episodic return binned by episode end, IQM over seeds with 95 % bands, regime lines, drift value below."""
    import matplotlib.pyplot as plt

    envs = sorted({r.env for r in runs})
    fig, axes = plt.subplots(
        2 * len(envs), 1, figsize=(9, 4.2 * len(envs)), gridspec_kw={"height_ratios": [3, 1] * len(envs)}, squeeze=False
    )
    for i, env in enumerate(envs):
        ax, dax = axes[2 * i, 0], axes[2 * i + 1, 0]
        env_runs = [r for r in runs if r.env == env]
        steps = [float(r.metrics["global_step"].max()) for r in env_runs if RETURN in r.metrics]
        max_step = max([*steps, float(bin_steps)])
        n_bins = math.ceil(max_step / bin_steps)
        centres = (np.arange(n_bins) + 0.5) * bin_steps
        for agent in sorted({r.agent for r in env_runs}):
            rs = [r for r in env_runs if r.agent == agent]
            m, lo, hi = iqm_curve(np.stack([binned_returns(r, bin_steps, n_bins) for r in rs]), reps=reps)
            ax.plot(centres, m, color=col[agent], label=_n_label(agent, len(rs)), lw=1.8)
            if len(rs) > 1:
                ax.fill_between(centres, lo, hi, color=col[agent], alpha=0.2, lw=0)
        for axx in (ax, dax):
            _vlines(axx, boundaries(table, env))
        ax.set_title(f"{env}: episodic return (IQM over seeds, 95% CI; bins of {bin_steps:,} steps)", fontsize=10)
        ax.set_ylabel("episodic return")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        ax.tick_params(labelbottom=False)
        _drift_panel(dax, env_runs)
        dax.set_xlabel("environment steps")
        ax.sharex(dax)
        dax.set_xlim(0, max_step)
    fig.tight_layout()
    return fig


def _drift_panel(dax, env_runs: list[Run]) -> None:
    """The drift parameters of regimes.csv as steps (from the run that got furthest)."""
    regimes = max((r.regimes for r in env_runs), key=len)
    summary = {"segment", "regime", "start_step", "end_step", "episodes", "final_return", "best_return"}
    params = [c for c in regimes.columns if c not in summary | {"steps_to_reach"} and "/" not in c]
    if regimes.empty or not params:
        dax.text(0.5, 0.5, "no drift parameters recorded", ha="center", va="center", transform=dax.transAxes)
        return
    last = max(float(r.metrics["global_step"].max()) for r in env_runs if "global_step" in r.metrics)
    starts = regimes["start_step"].to_numpy(float)
    for p in params:
        vals = pd.to_numeric(regimes[p], errors="coerce").to_numpy(float)
        dax.step(np.r_[starts, last], np.r_[vals, vals[-1]], where="post", label=p, lw=1.5)
    dax.set_ylabel(params[0] if len(params) == 1 else "drift value")
    if len(params) > 1:
        dax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _segment_labels(t: pd.DataFrame) -> list[tuple[int, int]]:
    return sorted({(int(s), int(g)) for s, g in zip(t["segment"], t["regime"], strict=True)})


def fig_regime_bars(table: pd.DataFrame, col: dict, reps: int):
    """Per env: one group of bars per regime segment, one bar per agent (IQM over seeds, 95 % CI)."""
    import matplotlib.pyplot as plt

    from crl.stats import iqm_ci

    envs = sorted(table["env"].unique())
    if not envs:
        return None
    fig, axes = plt.subplots(len(envs), 1, figsize=(10, 3.6 * len(envs)), squeeze=False)
    for ax, env in zip(axes[:, 0], envs, strict=True):
        t = table[table["env"] == env]
        segs = _segment_labels(t)
        agents = sorted(t["agent"].unique())
        width = 0.8 / len(agents)
        for j, agent in enumerate(agents):
            n = t.loc[t["agent"] == agent, "run"].nunique()
            for k, (seg, _) in enumerate(segs):
                cell = t[(t["agent"] == agent) & (t["segment"] == seg)]
                x = k - 0.4 + width * (j + 0.5)
                if len(cell) and cell["short"].all():
                    ax.text(x, 0, "too short", rotation=90, ha="center", va="bottom", fontsize=7, color=col[agent])
                    continue
                m, lo, hi = iqm_ci(cell["score"].to_numpy(float), reps=reps)
                if not np.isfinite(m):
                    continue
                ax.bar(x, m, width, color=col[agent], alpha=0.9)
                if n > 1:
                    err = [[m - lo], [hi - m]]
                    ax.errorbar(x, m, yerr=err, color="black", capsize=2, lw=0.8)
            ax.bar(np.nan, np.nan, color=col[agent], label=_n_label(agent, n))
        ax.set_xticks(range(len(segs)), [f"seg {s}\n(regime {g})" for s, g in segs], fontsize=8)
        ax.set_ylabel("late-segment return")
        ax.set_title(f"{env}: return at the end of each regime segment (IQM, 95% CI)", fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def score_matrices(table: pd.DataFrame) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Normalised ``(runs, tasks)`` score matrices per agent for rliable, the task names and notes.

    A task is one (env, regime segment) that is not short and has a score for every run of that
    env that reached it; scores are min-max normalised per task over all runs shown (0 = the
    lowest run, 1 = the highest). Rows are seeds; an agent with fewer runs on one env than on
    another keeps as many rows as its smallest count. Runs without a score on every task are
    left out (named in the notes).
    """
    t = table[~table["short"] & np.isfinite(table["score"].astype(float))]
    notes: list[str] = []
    tasks: list[tuple[str, int]] = []
    for env in sorted(t["env"].unique()):
        e = t[t["env"] == env]
        full = e.groupby("run")["segment"].nunique()
        need = int(full.max())
        keep = set(full[full == need].index)
        for run in sorted(set(full.index) - keep):
            notes.append(f"{run}: scores on {int(full[run])} of {need} segments, left out of the aggregates")
        segs = sorted(e.loc[e["run"].isin(keep), "segment"].unique())
        tasks += [(env, int(s)) for s in segs]
        t = t[(t["env"] != env) | t["run"].isin(keep)]
    out: dict[str, np.ndarray] = {}
    for agent in sorted(t["agent"].unique()):
        cols = []
        for env, seg in tasks:
            cell = t[(t["agent"] == agent) & (t["env"] == env) & (t["segment"] == seg)].sort_values("seed")
            cols.append(cell["score"].to_numpy(float))
        if cols and all(c.size for c in cols):
            n = min(c.size for c in cols)
            out[agent] = np.stack([c[:n] for c in cols], axis=1)
    for j in range(len(tasks)):
        allv = np.concatenate([m[:, j] for m in out.values()]) if out else np.array([])
        lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
        for m in out.values():
            m[:, j] = (m[:, j] - lo) / (hi - lo) if hi > lo else 0.5
    return out, [f"{e}/seg{s}" for e, s in tasks], notes


def _aggregate_funcs():
    _, metrics = import_rliable()
    return {
        "IQM": metrics.aggregate_iqm,
        "Mean": metrics.aggregate_mean,
        "Median": metrics.aggregate_median,
        "Optimality gap": metrics.aggregate_optimality_gap,
    }


def fig_aggregates(scores: dict[str, np.ndarray], col: dict, reps: int):
    """Interval estimates (rliable) of IQM, mean, median and optimality gap of the normalised scores."""
    if not scores:
        return None
    rly, _ = import_rliable()
    from rliable import plot_utils

    funcs = _aggregate_funcs()

    def agg(x: np.ndarray) -> np.ndarray:
        return np.array([f(x) for f in funcs.values()])

    np.random.seed(0)  # rliable draws from numpy's global generator
    point, ci = rly.get_interval_estimates(scores, agg, reps=reps)
    agents = sorted(scores)
    fig, _ = plot_utils.plot_interval_estimates(
        point,
        ci,
        metric_names=list(funcs),
        algorithms=agents,
        colors={a: col[a] for a in agents},
        xlabel="normalised late-segment return",
        xlabel_y_coordinate=-0.3,
        subfigure_width=3.2,
        row_height=0.5,
    )
    fig.set_size_inches(13, 0.6 * len(agents) + 1.3)
    return fig


def fig_profiles(scores: dict[str, np.ndarray], col: dict, reps: int):
    """Performance profiles (rliable): fraction of (run, segment) scores above each normalised threshold."""
    if not scores:
        return None
    import matplotlib.pyplot as plt

    rly, _ = import_rliable()
    from rliable import plot_utils

    taus = np.linspace(0.0, 1.0, 41)
    np.random.seed(0)
    dist, cis = rly.create_performance_profile(scores, taus, reps=reps)
    fig, ax = plt.subplots(figsize=(7, 4))
    agents = sorted(scores)
    plot_utils.plot_performance_profiles(
        dist,
        taus,
        performance_profile_cis=cis,
        colors={a: col[a] for a in agents},
        xlabel=r"normalised score $\tau$",
        ax=ax,
    )
    for line in ax.get_lines():
        if line.get_label() in scores:
            line.set_label(_n_label(line.get_label(), scores[line.get_label()].shape[0]))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def fig_poi(scores: dict[str, np.ndarray], reps: int):
    """Probability of improvement (rliable) P(X > Y) of each pair of agents, 95 % CIs."""
    agents = sorted(scores)
    if len(agents) < 2:
        return None
    rly, metrics = import_rliable()
    from rliable import plot_utils

    pairs = {f"{a},{b}": (scores[a], scores[b]) for i, a in enumerate(agents) for b in agents[i + 1 :]}
    np.random.seed(0)
    point, ci = rly.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps)
    ax = plot_utils.plot_probability_of_improvement(point, ci, figsize=(6, 0.55 * len(pairs) + 1.2))
    return ax.figure


def _binned(r: Run, col_name: str, bin_steps: int) -> pd.Series:
    s = r.metrics[["global_step", col_name]].dropna()
    b = ((s["global_step"] - 1) // bin_steps).astype(int)
    return s.groupby(b)[col_name].mean()


def fig_diagnostics(runs: list[Run], table: pd.DataFrame, col: dict, net: str, bin_steps: int):
    """Every ``plasticity/<net>/<layer>/<metric>`` of one network: a panel each, IQM over seeds, regime lines."""
    import matplotlib.pyplot as plt

    cols = sorted({c for r in runs for c in r.metrics.columns if c.startswith(f"plasticity/{net}/")})
    if not cols:
        return None
    envs = sorted({r.env for r in runs if any(c in r.metrics for c in cols)})
    ncol = 4
    per_env = math.ceil(len(cols) / ncol)
    fig, axes = plt.subplots(per_env * len(envs), ncol, figsize=(15, 2.5 * per_env * len(envs)), squeeze=False)
    for a in axes.ravel():
        a.set_visible(False)
    for e, env in enumerate(envs):
        for k, c in enumerate(cols):
            ax = axes[e * per_env + k // ncol, k % ncol]
            ax.set_visible(True)
            for agent in sorted({r.agent for r in runs if r.env == env}):
                series = [
                    _binned(r, c, bin_steps) for r in runs if r.env == env and r.agent == agent and c in r.metrics
                ]
                series = [s for s in series if len(s)]
                if series:
                    df = pd.concat(series, axis=1)
                    y = [iqm(row) for row in df.to_numpy(float)]
                    ax.plot((df.index + 0.5) * bin_steps, y, color=col[agent], lw=1.2)
            _vlines(ax, boundaries(table, env))
            layer, metric = c.split("/", 3)[2:]
            ax.set_title(f"{env}: layer {layer}, {metric}" if len(envs) > 1 else f"layer {layer}: {metric}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    n = seed_counts(runs)
    handles = [
        plt.Line2D([], [], color=v, label=_n_label(a, max(c for (_, ag), c in n.items() if ag == a)))
        for a, v in col.items()
    ]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def fig_columns(runs: list[Run], table: pd.DataFrame, col: dict, columns: list[str], bin_steps: int, log: bool = False):
    """Any logged ``metrics.csv`` columns (e.g. ``optimizer/policy/trac_scale``), a panel per column
    and env: IQM over seeds per bin of ``bin_steps`` steps, regime lines; ``None`` when no run has one.
    """
    import matplotlib.pyplot as plt

    envs = sorted({r.env for r in runs if any(c in r.metrics for c in columns)})
    if not envs:
        return None
    fig, axes = plt.subplots(len(columns), len(envs), figsize=(9 * len(envs), 3 * len(columns)), squeeze=False)
    for j, env in enumerate(envs):
        for i, c in enumerate(columns):
            ax = axes[i, j]
            for agent in sorted({r.agent for r in runs if r.env == env}):
                rs = [r for r in runs if r.env == env and r.agent == agent and c in r.metrics]
                series = [s for s in (_binned(r, c, bin_steps) for r in rs) if len(s)]
                if series:
                    df = pd.concat(series, axis=1)
                    y = [iqm(row) for row in df.to_numpy(float)]
                    ax.plot((df.index + 0.5) * bin_steps, y, color=col[agent], lw=1.2, label=_n_label(agent, len(rs)))
            _vlines(ax, boundaries(table, env))
            if log:
                ax.set_yscale("log")
            ax.set_title(f"{env}: {c} (IQM over seeds, bins of {bin_steps:,} steps)", fontsize=9)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("environment steps")
    fig.tight_layout()
    return fig
