"""A replay buffer's checkpoint: the transitions it holds, not the memory it reserved.

SB3 allocates a replay buffer's arrays for its whole capacity up front (SAC: one million rows),
so pickling the buffer writes every row, stored or not: ~200 MB for a 6k-step run. Here only
the rows written so far are saved (``pos`` rows, all of them once the buffer is ``full``, plus
one: with ``optimize_memory_usage`` the row after ``pos`` holds the last next observation),
with every other attribute of the buffer (``pos``, ``full``, and a subclass's own state such as
the reservoir's ``seen`` counter and generator). The rows never written are zeros in a fresh
buffer as in the saved one, so the restored buffer equals the saved one bit for bit.

Next observations are mostly the following row's observation; only the rows where they differ
(episode ends, the newest row, reservoir replacements) are saved, which halves the size of a
FIFO buffer. The comparison is on the stored bytes, so ``-0.0`` and NaNs come back exactly.

Size of a checkpoint (FIFO buffer, ``n`` transitions, observations of ``d`` float64 values,
``a`` actions): about ``n * (8 * d + 4 * a + 12)`` bytes plus the next observations that differ.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer

__all__ = ["buffer_state", "restore_buffer_state", "stored_rows"]

#: Attributes rebuilt by the agent's constructor, never taken from a checkpoint.
_REBUILT = ("observation_space", "action_space", "device")
#: Rows compared at a time when looking for next observations that differ (bounds the memory).
_CHUNK = 65_536


def stored_rows(buffer: ReplayBuffer) -> int:
    """Rows of ``buffer`` that hold written data (``buffer_size`` once full)."""
    return buffer.buffer_size if buffer.full else min(buffer.pos + 1, buffer.buffer_size)


def _is_rows(buffer: ReplayBuffer, value: Any) -> bool:
    """Whether ``value`` is one of the buffer's per-row arrays (or a dict of them)."""
    if isinstance(value, dict):
        return bool(value) and all(_is_rows(buffer, v) for v in value.values())
    return isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == buffer.buffer_size


def _as_words(rows: np.ndarray) -> np.ndarray:
    """``rows`` as unsigned integers of the same width, one row per line: compares bytes, not values."""
    flat = np.ascontiguousarray(rows).reshape(len(rows), -1)
    size = flat.dtype.itemsize
    return flat.view(f"u{size}") if size in (1, 2, 4, 8) else flat.view(np.uint8)


def _differing(obs: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Indices ``t`` where ``nxt[t]`` is not byte-equal to ``obs[(t + 1) % len(obs)]``."""
    n = len(obs)
    found = []
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        succ = obs[start + 1 : stop + 1] if stop < n else np.concatenate([obs[start + 1 : n], obs[:1]])
        diff = (_as_words(nxt[start:stop]) != _as_words(succ)).any(axis=1)
        found.append(np.flatnonzero(diff) + start)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _tensor(rows: np.ndarray) -> torch.Tensor | np.ndarray:
    """A copy of ``rows`` as a tensor: ``torch.save`` writes tensors as raw bytes, but pickles numpy
    arrays with protocol 2, which stores bytes as latin-1 text (up to 1.5 times larger).
    """
    try:
        return torch.from_numpy(np.array(rows, copy=True))
    except TypeError:  # a dtype torch has no tensor for
        return np.array(rows, copy=True)


def _array(saved: torch.Tensor | np.ndarray) -> np.ndarray:
    return saved.numpy() if isinstance(saved, torch.Tensor) else saved


def buffer_state(buffer: ReplayBuffer) -> dict[str, Any]:
    """The checkpoint of ``buffer``: its stored rows and its other attributes.

    Example:
        >>> import gymnasium as gym
        >>> space = gym.spaces.Box(-1, 1, (3,))
        >>> buf = ReplayBuffer(1_000_000, space, space, device="cpu")
        >>> for t in range(10):
        ...     o = np.full((1, 3), t, dtype=np.float32)
        ...     buf.add(o, o + 1, o[:, :3], np.zeros(1), np.zeros(1), [{}])
        >>> state = buffer_state(buf)
        >>> state["rows"], tuple(state["arrays"]["observations"].shape)  # 10 written rows and the next
        (11, (11, 1, 3))
        >>> state["next_differs"][0].tolist()  # the newest row's next observation is in no row yet
        [9]
    """
    n = stored_rows(buffer)
    arrays, attrs = {}, {}
    for k, v in vars(buffer).items():
        if _is_rows(buffer, v):
            arrays[k] = {kk: vv[:n] for kk, vv in v.items()} if isinstance(v, dict) else v[:n]
        elif k not in _REBUILT:
            attrs[k] = copy.deepcopy(v)
    state: dict[str, Any] = {"type": type(buffer).__name__, "rows": n, "attrs": attrs}
    obs, nxt = arrays.get("observations"), arrays.get("next_observations")
    if isinstance(obs, np.ndarray) and isinstance(nxt, np.ndarray) and obs.shape == nxt.shape:
        idx = _differing(obs, nxt)
        state["next_differs"] = (_tensor(idx), _tensor(nxt[idx]))
        del arrays["next_observations"]
    state["arrays"] = {
        k: {kk: _tensor(vv) for kk, vv in v.items()} if isinstance(v, dict) else _tensor(v) for k, v in arrays.items()
    }
    return state


def _check(buffer: ReplayBuffer, state: dict[str, Any]) -> None:
    """Refuse a checkpoint whose buffer does not fit ``buffer`` (one line)."""
    saved = state["attrs"].get("buffer_size")
    if state["type"] != type(buffer).__name__ or saved != buffer.buffer_size:
        raise ValueError(
            f"the checkpoint's replay buffer ({state['type']}, {saved} rows) does not match this "
            f"agent's ({type(buffer).__name__}, {buffer.buffer_size} rows); use --overwrite to start again"
        )
    for k, v in state["arrays"].items():
        have = getattr(buffer, k, None)
        if isinstance(v, dict):
            pairs = [(v[kk], have.get(kk) if isinstance(have, dict) else None) for kk in v]
        else:
            pairs = [(v, have)]
        for saved, target in pairs:
            rows = _array(saved)
            if not isinstance(target, np.ndarray) or (target.shape[1:], target.dtype) != (rows.shape[1:], rows.dtype):
                raise ValueError(f"the checkpoint's replay buffer array {k!r} does not match this agent's")


def restore_buffer_state(buffer: ReplayBuffer, state: dict[str, Any]) -> None:
    """Restore :func:`buffer_state` into ``buffer``, a freshly built buffer of the same agent.

    Raises:
        ValueError: the checkpoint's buffer has another class, capacity or row shape.
    """
    _check(buffer, state)
    n = state["rows"]
    for k, v in state["arrays"].items():
        target = getattr(buffer, k)
        if isinstance(v, dict):
            for kk, vv in v.items():
                target[kk][:n] = _array(vv)
        else:
            target[:n] = _array(v)
    if "next_differs" in state:
        idx, rows = (_array(x) for x in state["next_differs"])
        obs, nxt = buffer.observations, buffer.next_observations
        nxt[: n - 1] = obs[1:n]
        nxt[n - 1] = obs[0]
        nxt[idx] = rows
    for k, v in state["attrs"].items():
        setattr(buffer, k, copy.deepcopy(v))
