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
* other envs (classic control): their picklable attributes;
* every layer's ``np_random`` generator state.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import random
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

__all__ = ["get_env_state", "set_env_state", "rng_state", "set_rng_state", "atomic_save", "load"]

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
        for attr in _COUNTERS.get(type(layer).__name__, ()):
            if hasattr(layer, attr):
                s.setdefault("counters", {})[attr] = copy.deepcopy(getattr(layer, attr))
        if isinstance(layer, gym.Wrapper):
            rng = layer.__dict__.get("_np_random")
        else:
            rng = layer.__dict__.get("_np_random")
            s.update(_base_state(layer))
        if rng is not None:
            s["np_random"] = copy.deepcopy(rng.bit_generator.state)
        states.append(s)
    return states


def set_env_state(env: gym.Env, states: list[dict[str, Any]]) -> None:
    """Restore :func:`get_env_state` into an env built the same way."""
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


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename: a kill never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str | Path) -> Any:
    """Load a checkpoint written by :func:`atomic_save`."""
    return torch.load(path, map_location="cpu", weights_only=False)
