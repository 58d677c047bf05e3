"""Schedules: exact seeded sequences, state round trips, invalid arguments."""

from __future__ import annotations

import copy

import pytest

from crl.drift import Cyclic, EveryNSteps, Explicit, Gradual, RandomWalk, make_schedule
from crl.errors import ConfigError, UnknownNameError


def _run(s, ends):
    return [(s.advance(1, e), s.segment, s.regime()) for e in ends]


def test_every_n_aligned_waits_for_episode_end():
    s = EveryNSteps(change_every=3)
    out = _run(s, [False, False, False, False, True, True])
    assert [c for c, *_ in out] == [False, False, False, False, True, False]


def test_cyclic_revisits_in_order():
    s = Cyclic(change_every=2, cycle=[0, 1, 2], align="exact")
    regimes = [r for *_, r in _run(s, [False] * 12)]
    assert regimes == [0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2, 0]


def test_gradual_mix_is_linear():
    s = Gradual(change_every=10, window=4)
    mixes = []
    for _ in range(10):
        s.advance()
        mixes.append(s.mix())
    assert mixes[:6] == [None] * 6
    assert [m[2] for m in mixes[6:9]] == [0.25, 0.5, 0.75]
    assert mixes[9] is None and s.segment == 1


def test_random_walk_seeded_bounded_and_resumable():
    a, b = RandomWalk(every=1, step=0.3, low=0.2, high=0.8), RandomWalk(every=1, step=0.3, low=0.2, high=0.8)
    a.seed(4)
    b.seed(4)
    xs = []
    for _ in range(50):
        a.advance()
        xs.append(a.position)
    for _ in range(50):
        b.advance()
    assert xs[-1] == b.position and all(0.2 <= x <= 0.8 for x in xs) and len(set(xs)) > 10
    c = RandomWalk(every=1, step=0.3, low=0.2, high=0.8)
    c.set_state(copy.deepcopy(a.get_state()))
    a.advance()
    c.advance()
    assert a.position == c.position


def test_explicit_changes():
    s = Explicit(changes=[[3, 7], [5, 2]], initial=4, align="exact")
    assert [r for *_, r in _run(s, [False] * 6)] == [4, 4, 7, 7, 2, 2]


@pytest.mark.parametrize(
    "spec",
    [
        {"every_n_steps": {"change_every": 0}},
        {"every_n_steps": {"change_every": 1.5}},
        {"every_n_steps": {"align": "never"}},
        {"cyclic": {"cycle": []}},
        {"cyclic": {"cycle": [-1]}},
        {"gradual": {"change_every": 10, "window": 11}},
        {"random_walk": {"step": -1.0}},
        {"random_walk": {"low": 0.9, "high": 0.1}},
        {"explicit": {"changes": [[5, 1], [3, 2]]}},
        {"every_n_steps": {"bogus": 1}},
    ],
)
def test_invalid_schedules(spec):
    with pytest.raises(ConfigError):
        make_schedule(spec)


def test_unknown_schedule_lists_valid():
    with pytest.raises(UnknownNameError, match="valid: constant, cyclic, every_n_steps"):
        make_schedule({"sometimes": {}})


def test_config_round_trip():
    for s in (Cyclic(5, [2, 0]), Gradual(10, 3), RandomWalk(7), Explicit([[1, 2]])):
        assert make_schedule(s.config()).config() == s.config()
