"""Schedules: *when* a drifting environment changes regime.

A schedule is a small seeded object fed one call of :meth:`Schedule.advance` per
environment step. It counts steps, decides when the next regime starts, and maps
each *segment* (the n-th stretch between two changes) to a *regime id* (the
parameter set a drift applies). Most schedules map segment ``i`` to regime ``i``;
cyclic schedules revisit earlier regimes so forgetting can be measured.

Schedules hold no reference to an environment, so any drift wrapper can own one,
and their whole state is a small JSON-compatible dict (:meth:`Schedule.get_state`)
saved in checkpoints.

Example:
    >>> from crl.drift.schedules import EveryNSteps
    >>> s = EveryNSteps(change_every=3, align="episode_end")
    >>> [s.advance(1, episode_end=end) for end in (False, False, False, False, True)]
    [False, False, False, False, True]
    >>> s.segment, s.regime()
    (1, 1)
"""

from __future__ import annotations

import copy
import inspect
import itertools
from typing import Any, ClassVar, Literal

import numpy as np

from crl.errors import ConfigError, check_int, check_non_negative
from crl.named import check_arguments, parse_named
from crl.seeding import generator

__all__ = [
    "SCHEDULES",
    "Cyclic",
    "EveryNSteps",
    "Explicit",
    "Gradual",
    "RandomWalk",
    "Schedule",
    "Uniform",
    "make_schedule",
    "register_schedule",
]


class Schedule:
    """Base class: a schedule that never changes the regime.

    Subclasses override :meth:`_due` (is a change due after this step?) and, when
    they revisit regimes, :meth:`regime`. Counters live here, not in subclasses:

    * ``total_steps``: steps seen (scaled by ``n_steps`` per call, see :meth:`advance`);
    * ``since_change``: steps since the current segment started;
    * ``segment``: how many changes happened so far.
    """

    #: Name under which the schedule is registered (``schedule: {<name>: {...}}`` in YAML).
    name: ClassVar[str] = "constant"

    def __init__(self) -> None:
        self.total_steps = 0
        self.since_change = 0
        self.segment = 0

    # -- the template method -------------------------------------------------
    def advance(self, n_steps: int = 1, episode_end: bool = False) -> bool:
        """Count one environment step; return True when a new segment starts after it.

        Args:
            n_steps: how many global steps this env step stands for. A drift wrapper in
                one of ``k`` parallel envs passes ``k``, so ``change_every`` counts the
                steps of all envs together.
            episode_end: whether the step ended an episode (terminated or truncated).
        """
        self.total_steps += n_steps
        self.since_change += n_steps
        if self._due(episode_end):
            self.segment += 1
            self.since_change = 0
            return True
        return False

    def _due(self, episode_end: bool) -> bool:
        """Whether a change is due after the current step. Never, by default."""
        return False

    def regime(self, segment: int | None = None) -> int:
        """Regime id of ``segment`` (default: the current one). Identity by default."""
        return self.segment if segment is None else segment

    def segment_of(self, regime: int) -> int:
        """A segment whose regime id is ``regime`` (where ``set_regime(..., hold=False)`` moves
        the schedule). Identity by default.
        """
        return regime

    def regime_ids(self) -> list[int] | None:
        """Every regime id this schedule can produce, in order of first appearance, or None when
        the set is unbounded (a new id per segment). Task identities are positions in this list
        (:meth:`DriftWrapper.task_index <crl.drift.base.DriftWrapper.task_index>`).
        A schedule that never changes has the one regime 0.
        """
        return [0] if type(self)._due is Schedule._due else None

    def mix(self) -> tuple[int, int, float] | None:
        """For gradual schedules: ``(from_regime, to_regime, alpha)``; None otherwise."""
        return None

    def seed(self, seed: int) -> None:
        """Seed the schedule's own randomness (no-op for deterministic schedules)."""

    # -- state ---------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: a JSON-compatible dict."""
        return {"total_steps": self.total_steps, "since_change": self.since_change, "segment": self.segment}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""
        self.total_steps = int(state["total_steps"])
        self.since_change = int(state["since_change"])
        self.segment = int(state["segment"])

    def config(self) -> dict[str, Any]:
        """The constructor arguments, as ``{name: {arg: value}}`` (round-trips through
        :func:`make_schedule`).
        """
        params = inspect.signature(type(self).__init__).parameters
        return {self.name: {k: copy.deepcopy(getattr(self, k)) for k in params if k != "self"}}

    def __repr__(self) -> str:
        ((_name, args),) = self.config().items()
        inner = ", ".join(f"{k}={v!r}" for k, v in args.items())
        return f"{type(self).__name__}({inner})"


class EveryNSteps(Schedule):
    """Change the regime every ``change_every`` steps (Dohare et al., Nature 2024).

    With ``align="episode_end"`` (the Slippery Ant rule) the change happens at the first
    episode end after ``change_every`` steps have passed since the last change, so an
    episode never straddles two regimes. With ``align="exact"`` it happens right after
    the ``change_every``-th step, mid-episode if need be.

    Args:
        change_every: steps between changes (counted over all parallel envs).
        align: ``"episode_end"`` or ``"exact"``.

    Example:
        >>> s = EveryNSteps(change_every=2, align="exact")
        >>> [s.advance() for _ in range(5)], s.segment
        ([False, True, False, True, False], 2)
    """

    name = "every_n_steps"

    def __init__(self, change_every: int = 2_000_000, align: Literal["episode_end", "exact"] = "episode_end") -> None:
        super().__init__()
        self.change_every = check_int("change_every", change_every, minimum=1)
        if align not in ("episode_end", "exact"):
            raise ConfigError(f"align must be 'episode_end' or 'exact', got {align!r}")
        self.align = align

    def _due(self, episode_end: bool) -> bool:
        if self.since_change < self.change_every:
            return False
        return self.align == "exact" or episode_end


#: Registry of schedules by name; :func:`register_schedule` adds to it.
SCHEDULES: dict[str, type[Schedule]] = {"constant": Schedule, "every_n_steps": EveryNSteps}


def register_schedule(cls: type[Schedule]) -> type[Schedule]:
    """Class decorator: make a schedule available by ``cls.name`` in YAML and kwargs."""
    SCHEDULES[cls.name] = cls
    return cls


def make_schedule(spec: Schedule | dict[str, Any] | str | None) -> Schedule:
    """Build a schedule from a spec: an instance (copied), ``"name"`` or ``{name: {args}}``.

    Example:
        >>> make_schedule({"every_n_steps": {"change_every": 10}})
        EveryNSteps(change_every=10, align='episode_end')
    """
    if spec is None:
        return Schedule()
    if isinstance(spec, Schedule):
        return copy.deepcopy(spec)
    name, args = parse_named(spec, "schedule", SCHEDULES)
    return _construct(SCHEDULES[name], args, f"schedule {name!r}")


def _construct(cls: type, args: dict[str, Any], what: str) -> Any:
    """Call ``cls(**args)`` and turn unknown or ill-typed arguments into ConfigError."""
    params = inspect.signature(cls.__init__).parameters
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [k for k, p in params.items() if k not in ("self", "env") and p.kind is not inspect.Parameter.VAR_KEYWORD]
    if not has_var_kw:
        check_arguments(what, args, valid)
    try:
        return cls(**args)
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what}: {e}") from None


class Cyclic(EveryNSteps):
    """Revisit a fixed list of regimes in turn (A B A B ..., or A B C A B C ...).

    Segment ``i`` uses regime id ``cycle[i % len(cycle)]``; since a drift's parameters are a
    function of the regime id, a revisited regime has exactly the parameters it had the
    first time, so forgetting can be measured when it comes back.

    Args:
        change_every: steps between changes.
        cycle: the regime ids to cycle through (default ``[0, 1]``).
        align: ``"episode_end"`` or ``"exact"``.

    Example:
        >>> s = Cyclic(change_every=1, cycle=[0, 1, 2], align="exact")
        >>> [s.regime() for _ in range(7) if s.advance() or True]
        [1, 2, 0, 1, 2, 0, 1]
    """

    name = "cyclic"

    def __init__(
        self,
        change_every: int = 2_000_000,
        cycle: list[int] | None = None,
        align: Literal["episode_end", "exact"] = "episode_end",
    ) -> None:
        super().__init__(change_every=change_every, align=align)
        if cycle is not None and (not isinstance(cycle, (list, tuple)) or not cycle):
            raise ConfigError(f"cycle must be a non-empty list of regime ids, got {cycle!r}")
        self.cycle = [check_int(f"cycle[{i}]", c) for i, c in enumerate([0, 1] if cycle is None else cycle)]

    def regime(self, segment: int | None = None) -> int:
        seg = self.segment if segment is None else segment
        return self.cycle[seg % len(self.cycle)]

    def segment_of(self, regime: int) -> int:
        """The segment of ``regime`` in the current pass through the cycle."""
        if regime not in self.cycle:
            raise ConfigError(f"regime {regime} is not in the cycle {self.cycle}")
        return self.segment - self.segment % len(self.cycle) + self.cycle.index(regime)

    def regime_ids(self) -> list[int]:
        """The cycle's distinct regime ids, in cycle order."""
        return list(dict.fromkeys(self.cycle))


class Gradual(Schedule):
    """Interpolate linearly from each regime to the next over a window of steps.

    Segment ``i`` holds regime ``i`` for ``change_every - window`` steps, then its
    parameters move linearly towards those of regime ``i + 1`` over the last ``window``
    steps; the change to segment ``i + 1`` happens after ``change_every`` steps.

    Args:
        change_every: steps per segment.
        window: steps of the transition (``0 < window <= change_every``).

    Example:
        >>> s = Gradual(change_every=4, window=2)
        >>> out = []
        >>> for _ in range(5):
        ...     _ = s.advance()
        ...     out.append(s.mix())
        >>> out
        [None, None, (0, 1, 0.5), None, None]
    """

    name = "gradual"

    def __init__(self, change_every: int = 2_000_000, window: int = 200_000) -> None:
        super().__init__()
        self.change_every = check_int("change_every", change_every, minimum=1)
        self.window = check_int("window", window, minimum=1, maximum=self.change_every)

    def _due(self, episode_end: bool) -> bool:
        return self.since_change >= self.change_every

    def mix(self) -> tuple[int, int, float] | None:
        start = self.change_every - self.window
        if self.since_change <= start:
            return None
        return (self.regime(), self.regime(self.segment + 1), (self.since_change - start) / self.window)


class RandomWalk(Schedule):
    """Move the drift's parameters by a small seeded step every ``every`` steps.

    The position ``x`` walks inside ``[low, high]`` (Gaussian steps of standard deviation
    ``step``, reflected at the bounds) and the drift applies the interpolation
    ``(1 - x) * params(regime 0) + x * params(regime 1)``: a bounded random walk on the
    segment between two seeded anchor regimes, for any drift that supports interpolation.
    Each move counts as a new segment.

    Args:
        every: steps between moves.
        step: standard deviation of a move.
        low, high: bounds of the position (within [0, 1]).
        start: initial position.

    Example:
        >>> s = RandomWalk(every=2, step=0.1)
        >>> s.seed(0)
        >>> [s.advance() for _ in range(4)]
        [False, True, False, True]
        >>> x = s.mix()[2]
        >>> 0.0 <= x <= 1.0 and x != 0.5
        True
    """

    name = "random_walk"

    def __init__(
        self, every: int = 10_000, step: float = 0.05, low: float = 0.0, high: float = 1.0, start: float = 0.5
    ) -> None:
        super().__init__()
        every, step = check_int("every", every, minimum=1), check_non_negative("step", step, strict=True)
        if not 0.0 <= low < high <= 1.0 or not low <= start <= high:
            raise ConfigError(f"need 0 <= low < high <= 1 and low <= start <= high; got {low}, {high}, {start}")
        self.every, self.step, self.low, self.high, self.start = every, step, float(low), float(high), float(start)
        self.position = self.start
        self._rng = np.random.default_rng(0)

    def seed(self, seed: int) -> None:
        self._rng = generator(seed, "random_walk")

    def _due(self, episode_end: bool) -> bool:
        if self.since_change < self.every:
            return False
        x = self.position + self._rng.normal(0.0, self.step)
        span = self.high - self.low
        x = self.low + abs(((x - self.low) + span) % (2 * span) - span)  # reflect into [low, high]
        self.position = float(x)
        return True

    def regime(self, segment: int | None = None) -> int:
        return self.segment if segment is None else segment

    def mix(self) -> tuple[int, int, float] | None:
        return (0, 1, self.position)

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "position": self.position, "rng": self._rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.position = float(state["position"])
        self._rng.bit_generator.state = state["rng"]


class Explicit(Schedule):
    """Change to given regimes at given steps: ``changes=[[step, regime], ...]``.

    Args:
        changes: pairs (global step, regime id), steps strictly increasing.
        initial: regime id before the first change.
        align: ``"exact"`` (at the step) or ``"episode_end"`` (at the first episode end after it).

    Example:
        >>> s = Explicit(changes=[[2, 5], [3, 1]], align="exact")
        >>> [(s.advance(), s.regime()) for _ in range(4)]
        [(False, 0), (True, 5), (True, 1), (False, 1)]
    """

    name = "explicit"

    def __init__(
        self, changes: list[list[int]] | None = None, initial: int = 0, align: Literal["episode_end", "exact"] = "exact"
    ) -> None:
        super().__init__()
        pairs = list(changes or [])
        if any(not isinstance(c, (list, tuple)) or len(c) != 2 for c in pairs):
            raise ConfigError(f"changes must be [[step, regime], ...], got {changes!r}")
        changes = [
            [check_int(f"changes[{i}] step", a), check_int(f"changes[{i}] regime", b)] for i, (a, b) in enumerate(pairs)
        ]
        if any(b[0] <= a[0] for a, b in itertools.pairwise(changes)):
            raise ConfigError("changes: steps must be strictly increasing")
        if align not in ("episode_end", "exact"):
            raise ConfigError(f"align must be 'episode_end' or 'exact', got {align!r}")
        self.changes, self.initial, self.align = changes, check_int("initial", initial), align

    def _due(self, episode_end: bool) -> bool:
        if self.segment >= len(self.changes) or self.total_steps < self.changes[self.segment][0]:
            return False
        return self.align == "exact" or episode_end

    def regime(self, segment: int | None = None) -> int:
        seg = self.segment if segment is None else segment
        return self.initial if seg == 0 else self.changes[min(seg, len(self.changes)) - 1][1]

    def segment_of(self, regime: int) -> int:
        """The first segment with regime id ``regime``."""
        for seg in range(len(self.changes) + 1):
            if self.regime(seg) == regime:
                return seg
        raise ConfigError(f"regime {regime} never occurs in this schedule (regimes: {self.initial} then changes)")

    def regime_ids(self) -> list[int]:
        """The initial regime, then each changed-to regime not seen before."""
        return list(dict.fromkeys([self.initial] + [r for _, r in self.changes]))


class Uniform(Schedule):
    """The multi-task reference: a regime drawn uniformly from ``regimes`` for every episode.

    Continual World's and COOM's upper bound trains one agent on all tasks jointly; here a new
    segment starts at every episode end and its regime id is drawn uniformly from ``regimes``
    (the same set a sequential schedule visits one after another, e.g. ``[0, 1]`` for the
    cyclic HalfCheetah's forward and backward tasks). The draw of segment ``k`` is a pure
    function of the drift seed and ``k`` (``crl.seeding.generator(drift_seed, "uniform", k)``),
    so the state is the counters and the seed, and a resumed run draws the same regimes.
    Parallel copies of one env (``num_envs``) share the drift seed, hence the sequence of draws.

    Args:
        regimes: the regime ids to draw from (default ``[0, 1]``).

    Example:
        >>> s = Uniform(regimes=[0, 1, 2])
        >>> s.seed(0)
        >>> draws = []
        >>> for end in [False, True] * 6:
        ...     if s.advance(episode_end=end):
        ...         draws.append(s.regime())
        >>> len(draws), set(draws) <= {0, 1, 2}
        (6, True)
        >>> s.regime(4) == s.regime(4), s.segment_of(s.regime(9)) >= s.segment
        (True, True)
    """

    name = "uniform"

    def __init__(self, regimes: list[int] | None = None) -> None:
        super().__init__()
        if regimes is not None and (not isinstance(regimes, (list, tuple)) or not regimes):
            raise ConfigError(f"regimes must be a non-empty list of regime ids, got {regimes!r}")
        self.regimes = [check_int(f"regimes[{i}]", r) for i, r in enumerate([0, 1] if regimes is None else regimes)]
        self._seed = 0
        self._last: tuple[int, int] = (-1, 0)  # (segment, regime) of the last draw asked for

    def seed(self, seed: int) -> None:
        self._seed = check_int("seed", seed)
        self._last = (-1, 0)

    def _due(self, episode_end: bool) -> bool:
        return episode_end

    def regime(self, segment: int | None = None) -> int:
        seg = self.segment if segment is None else int(segment)
        if self._last[0] != seg:
            rng = generator(self._seed, "uniform", seg)
            self._last = (seg, self.regimes[int(rng.integers(len(self.regimes)))])
        return self._last[1]

    def segment_of(self, regime: int) -> int:
        """The first segment from the current one on whose draw is ``regime``."""
        if regime not in self.regimes:
            raise ConfigError(f"regime {regime} is not one of the regimes {self.regimes}")
        seg = self.segment
        while self.regime(seg) != regime:  # each draw hits with probability >= 1 / len(regimes)
            seg += 1
        return seg

    def regime_ids(self) -> list[int]:
        """The regimes drawn from, in the order given."""
        return list(dict.fromkeys(self.regimes))

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "seed": self._seed}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.seed(int(state["seed"]))


SCHEDULES.update({c.name: c for c in (Cyclic, Gradual, RandomWalk, Explicit, Uniform)})
