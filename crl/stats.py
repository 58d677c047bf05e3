"""Statistics for comparing agents: interquartile mean, stratified-bootstrap CIs (rliable), slopes.

An :class:`Estimate` is what a table shows: a point value, its 95 % interval and the number of
seeds behind it. With one seed there is no interval and no probability of improvement: they
are ``n/a (1 seed)`` (:data:`NA_ONE_SEED`), never an interval of zero width.

Example:
    >>> import numpy as np
    >>> iqm(np.array([1.0, 2.0, 3.0, 100.0]))
    2.5
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NA_ONE_SEED",
    "Estimate",
    "import_rliable",
    "iqm",
    "iqm_ci",
    "iqm_estimate",
    "iqm_curve",
    "slope",
    "probability_of_improvement",
    "improvement_estimate",
    "paired_difference",
    "share_estimate",
    "median_interval",
]

#: What an interval or a probability of improvement is with a single seed.
NA_ONE_SEED = "n/a (1 seed)"


def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % of the values (25 % trimmed on each side).

    Example:
        >>> iqm(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]))
        3.5
    """
    x = np.asarray(x, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    # scipy.stats.trim_mean(x, 0.25) step by step (the same partition and mean, so the same bits),
    # without its argument handling, which cost ~1 ms a call: a bootstrap calls this thousands of times
    low = int(0.25 * x.size)
    high = x.size - low
    return float(np.mean(np.partition(x, (low, high - 1))[low:high]))


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

    Returns ``(iqm, low, high)``; with a single run there is no interval: ``low`` and ``high`` are NaN.

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
        return float(v[0]), float("nan"), float("nan")
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
        point, ci = _interval(sub[:, None, :], _column_iqm, reps, seed)
        mean[cols], low[cols], high[cols] = point, ci[0], ci[1]
    return mean, low, high


def _column_iqm(s: np.ndarray) -> np.ndarray:
    """:func:`iqm` of every column (last axis) of a resample of finite values, in one partition."""
    x = s.reshape(-1, s.shape[-1])
    low = int(0.25 * x.shape[0])
    high = x.shape[0] - low
    return np.partition(x, (low, high - 1), axis=0)[low:high].mean(axis=0)


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


def _num(x: float, digits: int) -> str:
    return f"{x:.{digits}g}"


@dataclass(frozen=True)
class Estimate:
    """A point value with its 95 % interval over ``n`` seeds (``low``/``high`` NaN when ``n < 2``).

    Example:
        >>> Estimate(2.5, 1.0, 4.0, 4).text()
        '2.5 [1, 4] (n=4)'
        >>> Estimate(-280.0, float("nan"), float("nan"), 1).text()
        '-280, CI n/a (1 seed)'
        >>> Estimate(float("nan"), float("nan"), float("nan"), 0).text()
        'n/a (no value)'
    """

    point: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 4) -> str:
        """The estimate as table text: ``point [low, high] (n=K)``; ``n/a`` where undefined."""
        if not math.isfinite(self.point):
            return "n/a (no value)"
        if self.n < 2:
            return f"{_num(self.point, digits)}, CI {NA_ONE_SEED}"
        return f"{_num(self.point, digits)} [{_num(self.low, digits)}, {_num(self.high, digits)}] (n={self.n})"

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: ``{"point", "low", "high", "n"}`` with ``None`` for undefined values (never NaN)."""

        def clean(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {"point": clean(self.point), "low": clean(self.low), "high": clean(self.high), "n": self.n}


def iqm_estimate(values: np.ndarray, reps: int = 2000, seed: int = 0) -> Estimate:
    """IQM of per-seed scores with its stratified-bootstrap 95 % CI; non-finite scores are left out of ``n``.

    Example:
        >>> iqm_estimate(np.array([3.0, np.nan])).text()
        '3, CI n/a (1 seed)'
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    point, lo, hi = iqm_ci(v, reps=reps, seed=seed)
    return Estimate(point, lo, hi, int(v.size))


def improvement_estimate(x: np.ndarray, y: np.ndarray, reps: int = 1000, seed: int = 0) -> Estimate:
    """P(X > Y) with its CI, or an undefined estimate (text ``n/a (1 seed)``) when a side has under 2 seeds.

    ``n`` is the smaller number of seeds of the two sides.

    Example:
        >>> e = improvement_estimate(np.array([1.0]), np.array([0.0, 2.0]))
        >>> e.n, e.text()
        (1, 'n/a (1 seed)')
    """
    a = np.asarray(x, dtype=float).ravel()
    b = np.asarray(y, dtype=float).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    n = int(min(a.size, b.size))
    if n < 2:
        return _UndefinedImprovement(float("nan"), float("nan"), float("nan"), n)
    p, lo, hi = probability_of_improvement(a, b, reps=reps, seed=seed)
    return Estimate(p, lo, hi, n)


class _UndefinedImprovement(Estimate):
    """A probability of improvement that cannot be estimated (fewer than 2 seeds on a side)."""

    def text(self, digits: int = 4) -> str:
        return NA_ONE_SEED if self.n == 1 else "n/a (no value)"


def paired_difference(x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0) -> Estimate:
    """Mean of the per-seed differences ``x[i] - y[i]`` with a percentile-bootstrap 95 % CI over seeds.

    ``x`` and ``y`` are the scores of two methods on the same seeds, in the same order (a pair
    with a non-finite side is left out of ``n``). Pairing removes what a seed does to both
    methods (its regimes, its initial weights' luck), so the interval is about the difference
    itself, not about two overlapping intervals. Resamples are drawn from
    ``numpy.random.default_rng(seed)``; fewer than 2 pairs give no interval.

    Example:
        >>> e = paired_difference(np.array([2.0, 3.0, 5.0, 4.0]), np.array([1.0, 1.0, 2.0, 2.0]), reps=500)
        >>> e.point, e.n, 1.0 <= e.low <= e.point <= e.high <= 3.0
        (2.0, 4, True)
    """
    a, b = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same seeds on both sides, got {a.size} and {b.size}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if d.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if d.size == 1:
        return Estimate(float(d[0]), float("nan"), float("nan"), 1)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(reps, d.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Estimate(float(d.mean()), float(lo), float(hi), int(d.size))


def share_estimate(hits: int, n: int) -> Estimate:
    """The share ``hits / n`` (seeds at a floor, seeds where a method wins) with its Wilson 95 % interval.

    The Wilson score interval stays inside [0, 1] and is not empty at 0 or ``n`` hits, unlike
    the normal approximation; ``n == 0`` is undefined.

    Example:
        >>> e = share_estimate(0, 20)
        >>> e.point, e.low, round(e.high, 3)
        (0.0, 0.0, 0.161)
        >>> share_estimate(7, 10).text(3)
        '0.7 [0.397, 0.892] (n=10)'
    """
    if n <= 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if not 0 <= hits <= n:
        raise ValueError(f"hits must be in [0, n], got {hits} of {n}")
    z, p = 1.959963984540054, hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if hits == 0 else max(0.0, centre - half)  # exact at the ends, not a rounding error away
    high = 1.0 if hits == n else min(1.0, centre + half)
    return Estimate(float(p), low, high, int(n))


def median_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """The median of ``values`` and its distribution-free ``level`` confidence interval.

    The interval is the pair of order statistics ``x(j)`` and ``x(n + 1 - j)`` (1-based, sorted)
    with the largest ``j`` whose coverage ``1 - 2 P(Binomial(n, 1/2) < j)`` is at least
    ``level``: exact for any continuous distribution, no bootstrap and no normality. With too few
    values for that (5 or fewer at 95 %), ``low`` and ``high`` are NaN. Non-finite values are
    left out.

    Example:
        >>> median_interval(np.arange(1.0, 21.0))  # 20 values: the 6th and the 15th
        (10.5, 6.0, 15.0)
        >>> median_interval(np.array([1.0, 2.0, 3.0]))
        (2.0, nan, nan)
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = np.sort(np.asarray(values, dtype=float).ravel())
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    point = float(np.median(v))
    below = 0.0  # P(Binomial(n, 1/2) < j), for j = 1, 2, ...
    j = 0
    while j < n // 2:
        below += math.comb(n, j) / 2.0**n
        if 1 - 2 * below < level:
            break
        j += 1
    if j == 0:
        return point, float("nan"), float("nan")
    return point, float(v[j - 1]), float(v[n - j])
