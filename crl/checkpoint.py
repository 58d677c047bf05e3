"""Exact snapshots of environment stacks and training state, for checkpoints.

Pickling a Gymnasium env rebuilds it from its constructor arguments and loses its
state, so crl captures the state of each layer explicitly:

* drift wrappers: their ``get_state()`` (schedule counters, pinned regime);
* ``TimeLimit`` / ``OrderEnforcing`` / SB3 ``Monitor``: their counters;
* MuJoCo envs: the whole ``MjData`` (pickled, restored with ``mj_copyData``). The
  integration state alone (``mj_getState``) is not enough: rewards such as Ant's read
  derived quantities (``xpos``) that ``mj_step`` leaves from before its integration, so a
  recomputed ``mj_forward`` would change the next reward. With the whole ``MjData``
  physics and rewards continue bit for bit;
* an env with its own ``get_state()`` / ``set_state()`` (Continual World's, DMC's): those;
* a wrapper that holds several envs (``task_sequence``, its ``task_envs()``): every one of
  them (the stack below it in a new env is task 0's until its ``set_state`` selects the
  saved task: restored in its turn, task 0's own state then overwrites what that stack got);
* other envs (classic control): their picklable attributes;
* every layer's ``np_random`` generator state.

Checkpoint files are framed (:func:`save_checkpoint`): a magic line, a JSON header line with
the step, the payload's size and its SHA-256, then the ``torch.save`` payload. A torn,
truncated or altered file is detected (:class:`DamagedCheckpoint`) instead of being unpickled,
and the step is read from the header without loading the payload (:func:`checkpoint_header`).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickle
import random
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from crl.errors import CrlError

__all__ = [
    "get_env_state",
    "set_env_state",
    "rng_state",
    "set_rng_state",
    "atomic_save",
    "load",
    "MAGIC",
    "DamagedCheckpoint",
    "save_checkpoint",
    "read_checkpoint",
    "checkpoint_header",
]

_COUNTERS = {
    "TimeLimit": ("_elapsed_steps",),
    "OrderEnforcing": ("_has_reset",),
    "PassiveEnvChecker": ("checked_reset", "checked_step", "checked_render", "checked_data_reuse", "_previous_data"),
    "Monitor": (
        "rewards",
        "needs_reset",
        "total_steps",
        "episode_returns",
        "episode_lengths",
        "episode_times",
        "current_reset_info",
    ),
}


def _layers(env: gym.Env) -> list[gym.Env]:
    out = [env]
    while isinstance(out[-1], gym.Wrapper):
        out.append(out[-1].env)
    return out


def _base_state(env: gym.Env) -> dict[str, Any]:
    model = getattr(env, "model", None)
    data = getattr(env, "data", None)
    if model is not None and data is not None and type(model).__module__.startswith("mujoco"):
        return {"mujoco": pickle.dumps(data)}
    attrs = {}
    for k, v in vars(env).items():
        if k.startswith("_np_random") or k in ("spec", "render_mode", "screen", "clock", "viewer"):
            continue
        try:
            attrs[k] = pickle.loads(pickle.dumps(v))
        except Exception:
            continue
    return {"attrs": attrs}


def get_env_state(env: gym.Env) -> list[dict[str, Any]]:
    """The state of every layer of ``env`` (outermost first), to pass to :func:`set_env_state`."""
    states = []
    for layer in _layers(env):
        s: dict[str, Any] = {"type": type(layer).__name__}
        if hasattr(layer, "get_state") and isinstance(layer, gym.Wrapper):
            s["drift"] = layer.get_state()
        if callable(getattr(layer, "task_envs", None)):
            s["task_envs"] = [get_env_state(e) for e in layer.task_envs()]
        for attr in _COUNTERS.get(type(layer).__name__, ()):
            if hasattr(layer, attr):
                s.setdefault("counters", {})[attr] = copy.deepcopy(getattr(layer, attr))
        if isinstance(layer, gym.Wrapper):
            rng = layer.__dict__.get("_np_random")
        else:
            rng = layer.__dict__.get("_np_random")
            own = getattr(layer, "get_state", None)  # an env that states its own state (Continual World's)
            s.update({"own": own()} if callable(own) else _base_state(layer))
        if rng is not None:
            s["np_random"] = copy.deepcopy(rng.bit_generator.state)
        states.append(s)
    return states


def set_env_state(env: gym.Env, states: list[dict[str, Any]]) -> None:
    """Restore :func:`get_env_state` into an env built the same way."""
    for i, s in enumerate(states):  # a task sequence runs the saved task first: its stack is below
        layer = _layers(env)[i] if i < len(_layers(env)) else None
        if "drift" in s and "active" in s["drift"] and callable(getattr(layer, "select_task", None)):
            layer.select_task(s["drift"]["active"])  # type: ignore[union-attr]
    layers = _layers(env)
    if [type(x).__name__ for x in layers] != [s["type"] for s in states]:
        raise ValueError(
            "checkpoint env stack does not match: "
            f"{[s['type'] for s in states]} vs {[type(x).__name__ for x in layers]}"
        )
    # innermost first, so drift wrappers re-apply their parameters on top of restored physics
    for layer, s in reversed(list(zip(layers, states))):
        if "np_random" in s:
            if layer.__dict__.get("_np_random") is None:
                layer.__dict__["_np_random"] = np.random.Generator(np.random.PCG64())
            layer.__dict__["_np_random"].bit_generator.state = copy.deepcopy(s["np_random"])
        if "mujoco" in s:
            import mujoco

            mujoco.mj_copyData(layer.data, layer.model, pickle.loads(s["mujoco"]))
        if "attrs" in s:
            for k, v in s["attrs"].items():
                setattr(layer, k, copy.deepcopy(v))
        for k, v in s.get("counters", {}).items():
            setattr(layer, k, copy.deepcopy(v))
        if "own" in s:
            layer.set_state(s["own"])
        for task_env, task_state in zip(layer.task_envs() if "task_envs" in s else [], s.get("task_envs", [])):
            set_env_state(task_env, task_state)
        if "drift" in s:
            layer.set_state(s["drift"])


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch, numpy, random) that training draws from."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])


def _write_atomic(data: bytes, path: Path, previous: Path | None = None) -> None:
    """Write ``data`` to a temporary file, fsync, then rename it to ``path`` (the old ``path``
    renamed to ``previous`` first, if given): a kill never leaves a torn file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if previous is not None and path.exists():
        os.replace(path, previous)
    os.replace(tmp, path)
    try:  # the renames themselves reach the disk
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename: a kill never leaves a torn file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    _write_atomic(buf.getvalue(), Path(path))


#: First line of a framed checkpoint file (format 1 of the framing).
MAGIC = b"CRL-CHECKPOINT 1\n"


class DamagedCheckpoint(CrlError):
    """A checkpoint file is truncated, altered or unreadable (the message says which and why)."""

    def __init__(self, path: str | Path, why: str) -> None:
        self.path = Path(path)
        self.why = why
        super().__init__(f"{path} is damaged ({why})")


def save_checkpoint(obj: Any, path: str | Path, step: int, previous: str | Path | None = None) -> None:
    """Write ``obj`` as a framed checkpoint of global step ``step``, atomically.

    Args:
        obj: what ``torch.save`` can write.
        path: the checkpoint file.
        step: the global step it belongs to (in the header, see :func:`checkpoint_header`).
        previous: where the file ``path`` held before goes (kept as a fallback); None: replaced.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    header = {"step": int(step), "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    data = MAGIC + json.dumps(header).encode() + b"\n" + payload
    _write_atomic(data, Path(path), None if previous is None else Path(previous))


def _split(path: Path, data: bytes) -> tuple[dict[str, Any], bytes]:
    end = data.find(b"\n", len(MAGIC))
    try:
        header = json.loads(data[len(MAGIC) : end]) if end > 0 else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or not {"step", "size", "sha256"} <= set(header):
        raise DamagedCheckpoint(path, "unreadable header")
    return header, data[end + 1 :]


def checkpoint_header(path: str | Path) -> dict[str, Any] | None:
    """The header of a framed checkpoint (``step``, ``size``, ``sha256``) without reading its
    payload; None if the file is missing, not framed or its header is unreadable.
    """
    try:
        with Path(path).open("rb") as f:
            head = f.read(len(MAGIC) + 4096)
    except OSError:
        return None
    if not head.startswith(MAGIC):
        return None
    try:
        return _split(Path(path), head)[0]
    except DamagedCheckpoint:
        return None


def read_checkpoint(path: str | Path) -> tuple[Any, int]:
    """The object and the step of a checkpoint written by :func:`save_checkpoint`, verified.

    A file without the frame (written by crl 0.2) is loaded as it is, its step taken from
    ``model.num_timesteps``.

    Raises:
        DamagedCheckpoint: the file is missing, truncated, fails its checksum or does not load.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DamagedCheckpoint(path, e.strerror or type(e).__name__) from None
    if not data:
        raise DamagedCheckpoint(path, "empty file")
    if data.startswith(MAGIC):
        header, payload = _split(path, data)
        if len(payload) != header["size"]:
            raise DamagedCheckpoint(path, f"{len(payload):,} of {header['size']:,} bytes")
        if hashlib.sha256(payload).hexdigest() != header["sha256"]:
            raise DamagedCheckpoint(path, "checksum mismatch")
    elif data.startswith(b"PK"):  # a zip file of torch.save without the frame
        payload, header = data, None
    else:
        raise DamagedCheckpoint(path, "no checkpoint header")
    try:
        obj = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as e:  # a legacy file cut short: zip, pickle or EOF errors
        raise DamagedCheckpoint(path, f"{type(e).__name__} while loading") from None
    if header is not None:
        return obj, int(header["step"])
    step = obj.get("model", {}).get("num_timesteps", 0) if isinstance(obj, dict) else 0
    return obj, int(step)


def load(path: str | Path) -> Any:
    """Load a file written by :func:`atomic_save` or :func:`save_checkpoint` (verified)."""
    with Path(path).open("rb") as f:
        framed = f.read(len(MAGIC)) == MAGIC
    if framed:
        return read_checkpoint(path)[0]
    return torch.load(path, map_location="cpu", weights_only=False)
