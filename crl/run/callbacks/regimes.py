"""Episode rows, regime boundaries, ``regimes.csv`` and per-regime summaries."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crl.fast import FastLoop
from crl.run.callbacks.base import CrlCallback, Sink

__all__ = [
    "RegimeLogger",
    "RegimeSummary",
    "write_regimes_csv",
    "regimes_csv_columns",
    "REGIME_COLUMNS",
    "SUMMARY_COLUMNS",
]

#: The first columns of ``regimes.csv``; the drift values (``friction``...) and summaries follow.
REGIME_COLUMNS = ["segment", "regime", "start_step", "end_step"]
#: The summary columns, present in every ``regimes.csv`` (empty where a segment has no value).
SUMMARY_COLUMNS = ["episodes", "final_return", "best_return", "steps_to_reach"]


def regimes_csv_columns(regimes: list[dict[str, Any]]) -> list[str]:
    """The columns of ``regimes.csv``: :data:`REGIME_COLUMNS`, the drift values of the first row,
    :data:`SUMMARY_COLUMNS`, then any other column (diagnostics) in first-seen order. A run's
    columns do not depend on which of its segments had episodes.

    Example:
        >>> row = {"segment": 0, "regime": 0, "start_step": 0, "end_step": None, "friction": 1.0}
        >>> regimes_csv_columns([row])[4:]
        ['friction', 'episodes', 'final_return', 'best_return', 'steps_to_reach']
    """
    cols = list(REGIME_COLUMNS)
    if regimes:
        cols += [k for k in regimes[0] if k not in cols and k not in SUMMARY_COLUMNS and "/" not in k]
    cols += SUMMARY_COLUMNS
    for r in regimes:
        cols += [k for k in r if k not in cols]
    return cols


def write_regimes_csv(path: str | Path, regimes: list[dict[str, Any]]) -> None:
    """Write the regime rows to ``path`` atomically (columns: :func:`regimes_csv_columns`)."""
    cols = regimes_csv_columns(regimes)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in regimes:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    os.replace(tmp, path)


def drift_values(info: dict[str, Any]) -> dict[str, float]:
    """The scalar ``drift/<name>`` values of a step's ``info``, keyed by ``<name>``.

    Example:
        >>> drift_values({"drift/friction": 0.5, "regime": 1, "drift/offsets": [1, 2]})
        {'friction': 0.5}
    """
    return {k[6:]: float(v) for k, v in info.items() if k.startswith("drift/") and np.ndim(v) == 0}


class RegimeSummary:
    """The summary columns of one regime from its episodes.

    ``episodes``; ``final_return``: mean return of the episodes in the regime's last
    ``last_frac`` of steps; ``best_return``; ``steps_to_reach``: steps until an episode
    reaches ``reach_frac`` of the previous regime's final return.

    Example:
        >>> s = RegimeSummary(last_frac=0.5)
        >>> s.add(10, 0, 1.0); s.add(60, 0, 3.0); s.add(90, 0, 5.0)
        >>> s.close(0, 0, 100)
        {'episodes': 3, 'final_return': 4.0, 'best_return': 5.0}
    """

    def __init__(self, last_frac: float = 0.1, reach_frac: float = 0.9) -> None:
        self.last_frac, self.reach_frac = float(last_frac), float(reach_frac)
        self.episodes: list[tuple[int, int, float]] = []  # (step, segment, return) of open segments
        self.prev_final: float | None = None

    def add(self, step: int, segment: int, ret: float) -> None:
        """Record an episode of ``segment`` that ended at ``step``."""
        self.episodes.append((int(step), int(segment), float(ret)))

    def close(self, segment: int, start: int, end: int) -> dict[str, Any]:
        """The summary of ``segment`` (steps ``start`` to ``end``); forget its episodes."""
        eps = [(s, r) for s, g, r in self.episodes if g == segment]
        self.episodes = [e for e in self.episodes if e[1] > segment]
        out: dict[str, Any] = {"episodes": len(eps)}
        if eps:
            cut = end - self.last_frac * (end - start)
            final = float(np.mean([r for s, r in eps if s >= cut] or [eps[-1][1]]))
            out["final_return"] = final
            out["best_return"] = max(r for _, r in eps)
            if self.prev_final is not None:
                target = self.prev_final - (1.0 - self.reach_frac) * abs(self.prev_final)
                hit = next((s for s, r in eps if r >= target), None)
                out["steps_to_reach"] = None if hit is None else hit - start
            self.prev_final = final
        return out

    def state(self) -> dict[str, Any]:
        return {"episodes": list(self.episodes), "prev_final": self.prev_final}

    def load(self, state: dict[str, Any]) -> None:
        self.episodes, self.prev_final = list(state["episodes"]), state["prev_final"]


class RegimeLogger(CrlCallback):
    """Log episodes with their regime, and each regime change, from the drift's ``info`` keys.

    * every finished episode: a row ``charts/episodic_return``, ``charts/episodic_length``,
      ``regime/index``, ``regime/segment`` and ``regime/<drift value>``;
    * every new segment (a regime change): a row ``regime/boundary``, a line of
      ``regimes.csv`` (segment, regime, start and end step, drift values, summary columns),
      and a call of each ``on_regime_change(regime)`` listener (an agent's interventions);
    * at a segment's end: its :class:`RegimeSummary` in ``regimes.csv`` and the sink's summary
      (``regime_<segment>/<column>``), with the latest diagnostics averaged per network.

    With several envs, segment ``n`` starts when the first env enters it.

    Args:
        sink: where rows go.
        regimes_csv: path of ``regimes.csv`` (None: keep the rows in memory only).
        on_regime_change: listeners called with the new regime id (after
            :meth:`crl.fast.FastLoop.policy_will_change`, since they may change the weights).
        diagnostics: returns the latest diagnostics per network (``<net>/<metric>``) for the summaries.
        last_frac: share of a regime (at its end) giving its ``final_return``.
        reach_frac: the share of the previous regime's final return that ``steps_to_reach`` waits for.
    """

    def __init__(
        self,
        sink: Sink,
        regimes_csv: str | Path | None = None,
        on_regime_change: Sequence[Callable[[int], None]] = (),
        diagnostics: Callable[[], dict[str, float]] | None = None,
        last_frac: float = 0.1,
        reach_frac: float = 0.9,
    ) -> None:
        super().__init__()
        self.sink = sink
        self.path = None if regimes_csv is None else Path(regimes_csv)
        self.listeners = list(on_regime_change)
        self.diagnostics = diagnostics
        self.summary = RegimeSummary(last_frac, reach_frac)
        self.segments: list[int] = []
        self.pending: list[bool] = []
        self.regimes: list[dict[str, Any]] = []
        self.seen_regimes: list[int] = []

    def _init_callback(self) -> None:
        if not self.segments:
            n = self.training_env.num_envs
            self.segments, self.pending = [0] * n, [False] * n

    def _on_step(self) -> bool:
        step = self.num_timesteps
        for i, info in enumerate(self.locals["infos"]):
            if self.pending[i]:
                self.pending[i] = False
                self._segment_started(i, info, step)
            elif not self.regimes and "regime" in info:
                self._open(0, info, 0)
            ep = info.get("episode")
            if ep is not None:
                self._episode(i, info, ep, step)
            if info.get("regime_change"):
                self._segment_ended(i, step)
        return True

    def _on_training_end(self) -> None:
        if self.regimes and self.regimes[-1]["end_step"] is None:  # summary of the regime still open
            self.regimes[-1].update(self._close({**self.regimes[-1], "end_step": self.num_timesteps}))
        self.write()

    def _episode(self, i: int, info: dict[str, Any], ep: dict[str, Any], step: int) -> None:
        row = {"charts/episodic_return": ep["r"], "charts/episodic_length": ep["l"]}
        if "regime" in info:
            row["regime/index"] = info["regime"]
            row["regime/segment"] = self.segments[i]
            row.update({"regime/" + k: v for k, v in drift_values(info).items()})
            self.summary.add(step, self.segments[i], float(ep["r"]))
        self.sink.log(step, row)

    def _segment_ended(self, i: int, step: int) -> None:
        self.segments[i] += 1
        self.pending[i] = True
        if self.regimes and self.segments[i] > len(self.regimes) - 1 and self.regimes[-1]["end_step"] is None:
            self.regimes[-1]["end_step"] = step  # the first env to leave the segment closes it
            self.regimes[-1].update(self._close(self.regimes[-1]))

    def _segment_started(self, i: int, info: dict[str, Any], step: int) -> None:
        seg = self.segments[i]
        if seg <= len(self.regimes) - 1:
            return  # another env already opened this segment
        start = self.regimes[-1]["end_step"] if self.regimes and self.regimes[-1]["end_step"] else step
        self._open(seg, info, start)
        regime = int(info["regime"])
        if self.listeners:
            if isinstance(self.model, FastLoop):  # this rollout's outputs so far, with the weights before
                self.model.policy_will_change()
            for listener in self.listeners:
                listener(regime)
        self.sink.log(start, {"regime/boundary": seg, "regime/index": regime})

    def _open(self, segment: int, info: dict[str, Any], start: int) -> None:
        row: dict[str, Any] = {"segment": segment, "regime": int(info["regime"]), "start_step": start, "end_step": None}
        row.update(drift_values(info))
        self.regimes.append(row)
        if row["regime"] not in self.seen_regimes:
            self.seen_regimes.append(row["regime"])
        self.write()

    def _close(self, reg: dict[str, Any]) -> dict[str, Any]:
        out = self.summary.close(reg["segment"], int(reg["start_step"]), int(reg["end_step"]))
        out.update(self.diagnostics() if self.diagnostics is not None else {})
        self.sink.summary({f"regime_{reg['segment']}/{k}": v for k, v in out.items() if v is not None})
        return out

    def write(self) -> None:
        """Write ``regimes.csv`` (if it has a path and rows)."""
        if self.path is not None and self.regimes:
            write_regimes_csv(self.path, self.regimes)

    def label(self) -> str:
        """The current regime with its drift values, e.g. ``2 (friction=0.31)``."""
        if not self.regimes:
            return "0"
        r = self.regimes[-1]
        params = ", ".join(f"{k}={v:.3g}" for k, v in r.items() if k not in REGIME_COLUMNS and isinstance(v, float))
        return f"{r['regime']}" + (f" ({params})" if params else "")

    def get_state(self) -> dict[str, Any]:
        return {
            "segments": list(self.segments),
            "pending": list(self.pending),
            "regimes": [dict(r) for r in self.regimes],
            "seen_regimes": list(self.seen_regimes),
            "summary": self.summary.state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.segments, self.pending = list(state["segments"]), list(state["pending"])
        self.regimes = [dict(r) for r in state["regimes"]]
        self.seen_regimes = list(state["seen_regimes"])
        self.summary.load(state["summary"])
        self.write()
