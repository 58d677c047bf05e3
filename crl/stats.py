"""Statistics for comparing agents: interquartile mean, stratified-bootstrap CIs (rliable), slopes.

Example:
    >>> import numpy as np
    >>> iqm(np.array([1.0, 2.0, 3.0, 100.0]))
    2.5
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["import_rliable", "iqm", "iqm_ci", "iqm_curve", "slope", "probability_of_improvement"]


def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % of the values (25 % trimmed on each side).

    Example:
        >>> iqm(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]))
        3.5
    """
    from scipy.stats import trim_mean

    x = np.asarray(x, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(trim_mean(x, 0.25))


def import_rliable():
    """Import ``rliable.library`` and ``rliable.metrics``.

    ``arch`` 7.2 (a dependency of rliable) calls pandas' private ``deprecate_kwarg`` with the
    pandas-2 signature, which pandas 3 rejects at import time; if that happens the decorator is
    adapted for the duration of the import only.
    """
    try:
        from rliable import library, metrics
    except TypeError:
        import pandas.util._decorators as dec

        original = dec.deprecate_kwarg

        def compat(*args, **kwargs):
            if args and isinstance(args[0], str):
                args = (FutureWarning, *args)
            return original(*args, **kwargs)

        dec.deprecate_kwarg = compat
        try:
            from rliable import library, metrics
        finally:
            dec.deprecate_kwarg = original
    return library, metrics


def _interval(scores: np.ndarray, func: Callable[[np.ndarray], np.ndarray], reps: int, seed: int):
    rly, _ = import_rliable()
    np.random.seed(seed)  # rliable draws from numpy's global generator
    point, ci = rly.get_interval_estimates({"a": scores}, func, reps=reps)
    return np.atleast_1d(point["a"]), np.asarray(ci["a"]).reshape(2, -1)


def iqm_ci(values: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """IQM of per-run scores and its stratified-bootstrap 95 % CI (rliable).

    Returns ``(iqm, low, high)``; with a single run the CI collapses to the value.

    Example:
        >>> point, lo, hi = iqm_ci(np.array([1.0, 2.0, 3.0, 4.0]), reps=200)
        >>> point, lo <= point <= hi
        (2.5, True)
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float(v[0]), float(v[0])
    point, ci = _interval(v.reshape(-1, 1), lambda s: iqm(s), reps, seed)
    return float(point[0]), float(ci[0, 0]), float(ci[1, 0])


def iqm_curve(curves: np.ndarray, reps: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column IQM over runs of a ``(n_runs, n_bins)`` array with 95 % stratified-bootstrap bands.

    NaN cells (a run that has no data in a bin, e.g. a run still going) are left out: bins are
    grouped by which runs have data and each group is bootstrapped over those runs only.

    Example:
        >>> m, lo, hi = iqm_curve(np.array([[1.0, 2.0], [3.0, np.nan]]), reps=100)
        >>> m.tolist()
        [2.0, 2.0]
    """
    c = np.asarray(curves, dtype=float)
    n_bins = c.shape[1]
    mean, low, high = (np.full(n_bins, np.nan) for _ in range(3))
    groups: dict[tuple[bool, ...], list[int]] = {}
    for b in range(n_bins):
        groups.setdefault(tuple(np.isfinite(c[:, b])), []).append(b)
    for mask, cols in groups.items():
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            continue
        sub = c[np.ix_(rows, cols)]
        if rows.size == 1:
            mean[cols] = low[cols] = high[cols] = sub[0]
            continue
        point, ci = _interval(
            sub[:, None, :], lambda s: np.array([iqm(s[..., j]) for j in range(s.shape[-1])]), reps, seed
        )
        mean[cols], low[cols], high[cols] = point, ci[0], ci[1]
    return mean, low, high


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``y`` against ``x`` (NaN with fewer than two finite points).

    Example:
        >>> slope(np.array([0, 1, 2]), np.array([1.0, 3.0, 5.0]))
        2.0
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return float("nan")
    return float(round(np.polyfit(x[ok], y[ok], 1)[0], 12))


def probability_of_improvement(
    x: np.ndarray, y: np.ndarray, reps: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """P(X > Y) over runs (Mann-Whitney, ties count half) with a stratified-bootstrap 95 % CI (rliable).

    Example:
        >>> probability_of_improvement(np.array([2.0, 3.0]), np.array([0.0, 1.0]), reps=50)[0]
        1.0
    """
    rly, metrics = import_rliable()
    a = np.asarray(x, dtype=float).reshape(-1, 1)
    b = np.asarray(y, dtype=float).reshape(-1, 1)
    np.random.seed(seed)
    point, ci = rly.get_interval_estimates({"p": (a, b)}, metrics.probability_of_improvement, reps=reps)
    c = np.asarray(ci["p"]).ravel()
    return float(np.asarray(point["p"]).ravel()[0]), float(c[0]), float(c[1])
