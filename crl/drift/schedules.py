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
from typing import Any, ClassVar, Literal

from crl.errors import ConfigError, UnknownNameError

__all__ = ["Schedule", "EveryNSteps", "SCHEDULES", "make_schedule", "register_schedule"]


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
        if isinstance(change_every, bool) or not isinstance(change_every, int) or change_every < 1:
            raise ConfigError(f"change_every must be a positive integer, got {change_every!r}")
        if align not in ("episode_end", "exact"):
            raise ConfigError(f"align must be 'episode_end' or 'exact', got {align!r}")
        self.change_every = change_every
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
    if isinstance(spec, str):
        spec = {spec: {}}
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"a schedule is written {{name: {{arguments}}}}, got {spec!r}")
    ((name, args),) = spec.items()
    if name not in SCHEDULES:
        raise UnknownNameError("schedule", name, list(SCHEDULES))
    args = args or {}
    if not isinstance(args, dict):
        raise ConfigError(f"schedule {name!r}: arguments must be a mapping, got {args!r}")
    return _construct(SCHEDULES[name], args, f"schedule {name!r}")


def _construct(cls: type, args: dict[str, Any], what: str) -> Any:
    """Call ``cls(**args)`` and turn unknown or ill-typed arguments into ConfigError."""
    params = inspect.signature(cls.__init__).parameters
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [k for k, p in params.items() if k not in ("self", "env") and p.kind is not inspect.Parameter.VAR_KEYWORD]
    if not has_var_kw:
        unknown = sorted(set(args) - set(valid))
        if unknown:
            raise ConfigError(f"{what}: unknown argument {unknown[0]!r}; valid: {', '.join(valid)}")
    try:
        return cls(**args)
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what}: {e}") from None
