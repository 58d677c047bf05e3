"""crl.stats.median_interval: the order statistics behind the paired bench's 95 % interval."""

import math

import numpy as np
import pytest

from crl.stats import median_interval


def _coverage(n: int, j: int) -> float:
    """P(x(j) <= median <= x(n + 1 - j)) for n draws of a continuous distribution."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2**n


@pytest.mark.parametrize("n", [6, 7, 10, 19, 20, 31, 64])
def test_the_interval_is_the_narrowest_pair_of_order_statistics_with_95_percent_coverage(n):
    v = np.random.default_rng(n).permutation(np.arange(1.0, n + 1))  # x(k) == k once sorted
    point, low, high = median_interval(v)
    j = int(low)
    assert point == (n + 1) / 2 and high == n + 1 - j
    assert _coverage(n, j) >= 0.95 > _coverage(n, j + 1)


def test_known_table_values_and_other_levels():
    assert median_interval(np.arange(1.0, 21.0)) == (10.5, 6.0, 15.0)  # n=20: x(6), x(15)
    assert median_interval(np.arange(1.0, 11.0), level=0.85)[1:] == (3.0, 8.0)  # n=10: x(3), x(8) cover 89 %
    assert median_interval(np.arange(1.0, 11.0), level=0.9)[1:] == (2.0, 9.0)  # ... less than 90 %


def test_the_interval_covers_the_true_median_as_often_as_it_says():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(4000):
        _, lo, hi = median_interval(rng.lognormal(size=15))  # true median 1
        hits += lo <= 1.0 <= hi
    assert 0.95 <= hits / 4000 <= 0.99  # n=15: exact coverage 0.9648


def test_too_few_values_or_none_give_nan_bounds():
    assert median_interval(np.array([3.0, 1.0, 2.0, 5.0, 4.0]))[0] == 3.0
    assert all(math.isnan(x) for x in median_interval(np.array([3.0, 1.0, 2.0, 5.0, 4.0]))[1:])
    assert all(math.isnan(x) for x in median_interval(np.array([np.nan])))
    assert median_interval(np.array([1.0, np.inf, 2.0]))[0] == 1.5  # non-finite values left out


def test_level_outside_zero_one_is_rejected():
    with pytest.raises(ValueError, match="level must be in"):
        median_interval(np.arange(10.0), level=1.0)
