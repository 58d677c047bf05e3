"""Continual-learning metrics of finished runs (Continual World, Wolczyk et al. 2021).

Reads run folders only (``metrics.csv``, ``regimes.csv``, ``config.yaml``): no torch.

* **average performance**: mean over regime ids ``i`` of ``p_i(T)``, the performance on
  regime ``i`` at the end: the last ``eval/regime_<i>/return`` when the run evaluated
  across regimes, else the ``final_return`` of the last segment of regime ``i``.
* **forgetting** of regime ``i``: ``p_i(end of regime i) - p_i(T)``. With evaluation
  columns, ``p_i(end of regime i)`` is the last evaluation at or before the end of the
  first segment of ``i``. Without them, forgetting is measured on revisits:
  ``final_return`` of a visit minus the mean return over the first ``frac`` of the next
  visit of the same regime (what was lost while away).
* **forward transfer** of the first visit of regime ``i`` against a reference run (a
  from-scratch run on regime ``i``): ``(AUC_i - AUC_ref_i) / (1 - AUC_ref_i)``, AUCs of the
  episode returns over the segment's length, normalised to [0, 1] with the min and max of
  both curves' returns (Continual World normalises success rates; returns need a scale, and
  this one makes a curve that is always above the reference give FT > 0 and one always
  at the top give 1).
* **plasticity score**: the slope of ``final_return`` against segment index (return per
  regime); negative means loss of plasticity (Dohare et al. 2024).

:func:`run_metrics` computes them; ``crl metrics RUN_DIR ... [--reference DIR]`` prints them;
:func:`crl.references.make_references` launches the from-scratch reference runs of a run
(it trains, so it lives outside this module, which only reads run folders).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crl.errors import ConfigError

__all__ = [
    "load_run",
    "regime_curves",
    "normalised_auc",
    "forward_transfer",
    "forgetting",
    "plasticity_score",
    "run_metrics",
    "format_value",
]

RET = "charts/episodic_return"


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(metrics, regimes)`` data frames of a run folder."""
    d = Path(run_dir)
    if not (d / "metrics.csv").exists():
        raise ConfigError(f"{d} is not a run folder (no metrics.csv)")
    m = pd.read_csv(d / "metrics.csv")
    r = pd.read_csv(d / "regimes.csv") if (d / "regimes.csv").exists() else pd.DataFrame()
    return m, r


def regime_curves(metrics: pd.DataFrame, regimes: pd.DataFrame) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Per segment: ``(segment, regime, steps - start_step, returns)`` of its episodes."""
    ep = metrics.dropna(subset=[RET])
    out = []
    for _, row in regimes.iterrows():
        seg = int(row["segment"])
        e = ep[ep["regime/segment"] == seg] if "regime/segment" in ep else ep
        out.append(
            (
                seg,
                int(row["regime"]),
                e["global_step"].to_numpy() - int(row["start_step"]),
                e[RET].to_numpy(dtype=float),
            )
        )
    return out


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
    """Forgetting of a regime: performance at its end minus performance at the end of training.

    Example:
        >>> forgetting(10.0, 4.0)
        6.0
    """
    return float(p_end - p_final)


def plasticity_score(final_returns: list[float]) -> float:
    """Slope of the regimes' final returns against their index (least squares).

    Example:
        >>> round(plasticity_score([10.0, 8.0, 6.0]), 6)
        -2.0
    """
    y = np.asarray([v for v in final_returns if v is not None and math.isfinite(v)], dtype=float)
    if y.size < 2:
        return float("nan")
    return float(np.polyfit(np.arange(y.size), y, 1)[0])


def _final(curve_steps: np.ndarray, rets: np.ndarray, length: float, frac: float) -> float:
    if rets.size == 0:
        return float("nan")
    late = rets[curve_steps >= length * (1 - frac)]
    return float(np.mean(late if late.size else rets[-1:]))


def _reference_curves(reference_dirs: list[str | Path]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    refs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for d in reference_dirs:
        m, r = load_run(d)
        if r.empty:
            raise ConfigError(f"reference run {d} has no regimes.csv")
        curves = regime_curves(m, r)
        _, regime, steps, rets = curves[0]
        refs[regime] = (steps, rets)
    return refs


def run_metrics(run_dir: str | Path, reference_dirs: list[str | Path] | None = None, frac: float = 0.1) -> dict:
    """Continual-learning metrics of one run folder (see the module docstring).

    Args:
        run_dir: the run folder.
        reference_dirs: from-scratch runs, one per regime (each its regime 0..), for forward transfer.
        frac: share of a segment whose episodes give its final (and, on revisits, initial) return.

    Returns: a dict with ``average_performance``, ``forgetting`` ({regime: value}),
    ``mean_forgetting``, ``forward_transfer`` ({regime: value}), ``mean_forward_transfer``,
    ``plasticity_score``, ``final_returns`` (per segment) and ``source`` (``eval`` or ``train``).
    """
    m, reg = load_run(run_dir)
    if reg.empty:
        raise ConfigError(f"{run_dir} has no regimes.csv: not a drifting run")
    curves = regime_curves(m, reg)
    ends = reg["end_step"].fillna(m["global_step"].max()).astype(float).to_numpy()
    lengths = ends - reg["start_step"].to_numpy(dtype=float)
    finals = [_final(s, r, L, frac) for (_, _, s, r), L in zip(curves, lengths, strict=True)]
    out: dict[str, Any] = {"segments": len(curves), "final_returns": finals}
    eval_cols = {int(c.split("/")[1].split("_")[1]): c for c in m.columns if c.startswith("eval/regime_")}
    forget: dict[int, float] = {}
    if eval_cols:
        out["source"] = "eval"
        last = {k: float(m[c].dropna().iloc[-1]) for k, c in eval_cols.items() if m[c].notna().any()}
        out["average_performance"] = float(np.mean(list(last.values()))) if last else float("nan")
        for k, c in eval_cols.items():
            first = reg[reg["regime"] == k]
            if first.empty or pd.isna(first["end_step"].iloc[0]):
                continue
            e = m[[c, "global_step"]].dropna()
            before = e[e["global_step"] <= float(first["end_step"].iloc[0])]
            if len(before):
                forget[k] = forgetting(float(before[c].iloc[-1]), last[k])
    else:
        out["source"] = "train"
        last_by_regime: dict[int, float] = {}
        for (_, k, _, _), f in zip(curves, finals, strict=True):
            last_by_regime[k] = f
        vals = [v for v in last_by_regime.values() if math.isfinite(v)]
        out["average_performance"] = float(np.mean(vals)) if vals else float("nan")
        prev: dict[int, float] = {}
        acc: dict[int, list[float]] = {}
        for (_, k, s, r), f, L in zip(curves, finals, lengths, strict=True):
            if k in prev and r.size:
                early = r[s <= L * frac]
                acc.setdefault(k, []).append(forgetting(prev[k], float(np.mean(early if early.size else r[:1]))))
            prev[k] = f
        forget = {k: float(np.mean(v)) for k, v in acc.items()}
    out["forgetting"] = forget
    out["mean_forgetting"] = float(np.mean(list(forget.values()))) if forget else float("nan")
    out["plasticity_score"] = plasticity_score(finals)
    ft: dict[int, float] = {}
    if reference_dirs:
        refs = _reference_curves(reference_dirs)
        seen: set[int] = set()
        for (_, k, s, r), L in zip(curves, lengths, strict=True):
            if k in seen or k not in refs:
                continue
            seen.add(k)
            rs, rr = refs[k]
            both = np.concatenate([r, rr[rs <= L]])
            if both.size == 0:
                continue
            lo, hi = float(both.min()), float(both.max())
            ft[k] = forward_transfer(normalised_auc(s, r, L, lo, hi), normalised_auc(rs, rr, L, lo, hi))
    out["forward_transfer"] = ft
    out["mean_forward_transfer"] = float(np.mean(list(ft.values()))) if ft else float("nan")
    return out


def format_value(v: Any) -> str:
    """A metric value as table text: floats to 4 significant digits (NaN as ``-``), lists and dicts joined.

    Example:
        >>> format_value({"0": 1.23456, "1": float("nan")})
        '0: 1.235, 1: -'
    """
    if isinstance(v, dict):
        return ", ".join(f"{k}: {format_value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list):
        return ", ".join(format_value(x) for x in v)
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return str(v)
