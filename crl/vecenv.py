"""Vectorised envs whose simulation runs in worker processes.

:class:`ProcVecEnv` is an SB3 :class:`~stable_baselines3.common.vec_env.VecEnv` that splits
``n_envs`` environments over ``W`` worker processes (default ``min(n_envs, os.cpu_count())``).
Each worker steps its share of the envs one after the other and sends back stacked arrays, so
one step of the vector env costs one message round trip per worker, not per env, and the
workers simulate on all cores at once.

It behaves like :class:`~stable_baselines3.common.vec_env.DummyVecEnv` step for step: the same
auto-reset (``terminal_observation`` and ``TimeLimit.truncated`` in the infos, ``reset_infos``),
the same per-index seeding (``seed(s)`` gives env ``i`` the seed ``s + i`` at the next reset),
the same observation and reward dtypes. With the same seeds and actions it returns identical
observations, rewards, dones and infos (tested on drifting MuJoCo envs).

Checkpoints: :meth:`ProcVecEnv.get_env_states` / :meth:`ProcVecEnv.set_env_states` run
:func:`crl.checkpoint.get_env_state` / :func:`~crl.checkpoint.set_env_state` inside the
workers; :func:`env_states` and :func:`set_env_states` do the same for any crl vec env.

Timing: ``sim_wall`` is the wall time the main process spent waiting on ``step``/``reset``
(simulation plus message passing), ``sim_busy`` the time the workers spent inside
``env.step``/``env.reset``, summed over workers.

Example:
    >>> import gymnasium as gym
    >>> venv = ProcVecEnv([lambda: gym.make("Pendulum-v1")] * 4, n_workers=2)
    >>> venv.seed(0)
    [0, 1, 2, 3]
    >>> venv.reset().shape
    (4, 3)
    >>> obs, rew, done, info = venv.step(np.zeros((4, 1), dtype=np.float32))
    >>> obs.shape, rew.dtype, len(info)
    ((4, 3), dtype('float32'), 4)
    >>> venv.close()
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.patch_gym import _patch_env
from stable_baselines3.common.vec_env.util import dict_to_obs, obs_space_info

from crl.checkpoint import get_env_state, set_env_state

__all__ = ["ProcVecEnv", "env_states", "set_env_states", "split"]


def split(n_envs: int, n_workers: int) -> list[range]:
    """Contiguous env index ranges of ``n_workers`` workers, as even as possible.

    Example:
        >>> split(8, 3)
        [range(0, 3), range(3, 6), range(6, 8)]
    """
    base, extra = divmod(n_envs, n_workers)
    out, lo = [], 0
    for w in range(n_workers):
        hi = lo + base + (w < extra)
        out.append(range(lo, hi))
        lo = hi
    return out


def _stack(obs: list[Any], space: gym.Space) -> Any:
    if isinstance(space, gym.spaces.Dict):
        return {k: np.stack([o[k] for o in obs]) for k in space.spaces}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(np.stack([o[i] for o in obs]) for i in range(len(space.spaces)))
    return np.stack(obs)


class _Worker:
    """The worker side: a share of the envs and the commands it answers."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        self.envs = [_patch_env(fn()) for fn in env_fns]
        self.space = self.envs[0].observation_space
        self.busy = 0.0

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, list[dict], dict[int, dict], float]:
        t = time.perf_counter()
        n = len(self.envs)
        obs_list, rews, dones = [], np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool)
        infos: list[dict[str, Any]] = []
        reset_infos: dict[int, dict[str, Any]] = {}
        for j, env in enumerate(self.envs):
            obs, rews[j], terminated, truncated, info = env.step(actions[j])
            dones[j] = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if dones[j]:
                info["terminal_observation"] = obs
                obs, reset_infos[j] = env.reset()
            obs_list.append(obs)
            infos.append(info)
        busy = time.perf_counter() - t
        self.busy += busy
        return _stack(obs_list, self.space), rews, dones, infos, reset_infos, busy

    def reset(self, seeds: list[int | None], options: list[dict]) -> tuple[Any, list[dict], float]:
        t = time.perf_counter()
        obs_list, infos = [], []
        for env, seed, opts in zip(self.envs, seeds, options, strict=True):
            obs, info = env.reset(seed=seed, **({"options": opts} if opts else {}))
            obs_list.append(obs)
            infos.append(info)
        busy = time.perf_counter() - t
        self.busy += busy
        return _stack(obs_list, self.space), infos, busy

    def get_attr(self, name: str, idx: list[int]) -> list[Any]:
        return [self.envs[j].get_wrapper_attr(name) for j in idx]

    def set_attr(self, name: str, value: Any, idx: list[int]) -> None:
        for j in idx:
            setattr(self.envs[j], name, value)

    def env_method(self, name: str, args: tuple, kwargs: dict, idx: list[int]) -> list[Any]:
        return [self.envs[j].get_wrapper_attr(name)(*args, **kwargs) for j in idx]

    def env_is_wrapped(self, wrapper_class: type, idx: list[int]) -> list[bool]:
        from stable_baselines3.common.env_util import is_wrapped

        return [is_wrapped(self.envs[j], wrapper_class) for j in idx]

    def get_env_state(self) -> list[Any]:
        return [get_env_state(e) for e in self.envs]

    def set_env_state(self, states: list[Any]) -> None:
        for e, s in zip(self.envs, states, strict=True):
            set_env_state(e, s)

    def spaces(self) -> tuple[gym.Space, gym.Space, Any]:
        return self.space, self.envs[0].action_space, self.envs[0].metadata

    def close(self) -> None:
        for e in self.envs:
            e.close()


def _worker_main(conn: Any, payload: bytes, main_ends: list[Any]) -> None:
    """Worker process: build the envs, then answer ``(command, args)`` messages until ``close``.

    ``main_ends`` are the main process's pipe ends that this worker inherited (fork); closing
    them here lets the worker see end-of-file, and exit, when the main process dies (even by SIGKILL).
    """
    for c in main_ends:
        c.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C and closes us
    try:
        worker = _Worker(cloudpickle.loads(payload))
    except BaseException as e:  # report why the envs could not be built
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        conn.close()
        return
    conn.send(("ok", None))
    while True:
        try:
            cmd, args = conn.recv()
        except (EOFError, OSError):  # main process gone
            break
        if cmd == "close":
            worker.close()
            with contextlib.suppress(OSError):
                conn.send(("ok", None))
            break
        try:
            reply = ("ok", getattr(worker, cmd)(*args))
        except Exception as e:
            reply = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        try:
            conn.send(reply)
        except OSError:  # main process gone
            break
    conn.close()


class _LocalConn:
    """A :class:`_Worker` in the main process behind the pipe interface: ``send`` runs the command
    at once (after the messages to the real workers went out), ``recv`` returns its reply.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        self.worker = _Worker(env_fns)
        self.reply: Any = None

    def send(self, msg: tuple[str, tuple]) -> None:
        cmd, args = msg
        try:
            self.reply = ("ok", getattr(self.worker, cmd)(*args))
        except Exception as e:
            self.reply = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")

    def recv(self) -> Any:
        reply, self.reply = self.reply, None
        return reply

    def close(self) -> None:
        pass


class ProcVecEnv(VecEnv):
    """``n_envs`` envs simulated in worker processes, stepping like ``DummyVecEnv``.

    Args:
        env_fns: one function per env returning a fresh env (pickled with cloudpickle, so
            closures work).
        n_workers: worker processes; default ``min(n_envs, os.cpu_count())``, less one if
            ``in_main``.
        in_main: the main process simulates the last share of the envs itself while the workers
            simulate theirs, instead of waiting idle (default True: on 2 cores, one worker and
            the main process; where the other cores are busy this costs little over in-process envs).
        start_method: multiprocessing start method; default ``fork`` where available (fast,
            and envs registered at run time in the main process stay visible), else ``spawn``.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        n_workers: int | None = None,
        in_main: bool = True,
        start_method: str | None = None,
    ) -> None:
        n_envs = len(env_fns)
        if n_envs < 1:
            raise ValueError("ProcVecEnv needs at least one env")
        if n_workers is None:
            n_workers = min(n_envs, os.cpu_count() or 1) - int(in_main)
        shares = n_workers + int(in_main)
        if n_workers < 0 or not 1 <= shares <= n_envs:
            raise ValueError(f"n_workers must be in [{1 - int(in_main)}, {n_envs - int(in_main)}], got {n_workers}")
        if start_method is None:
            start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(start_method)
        self.slices = split(n_envs, shares)
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        self.closed = False
        self.waiting = False
        self.sim_wall = 0.0
        self.sim_busy = 0.0
        for rng in self.slices[:n_workers]:
            parent, child = ctx.Pipe()
            payload = cloudpickle.dumps([env_fns[i] for i in rng])
            inherited = [*self.conns, parent] if start_method == "fork" else []
            p = ctx.Process(target=_worker_main, args=(child, payload, inherited), daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        for c in self.conns:
            self._recv(c)
        if in_main:  # last, so that its work starts after the messages to the workers went out
            self.conns.append(_LocalConn([env_fns[i] for i in self.slices[-1]]))
        obs_space, act_space, metadata = self._call(0, "spaces")
        super().__init__(n_envs, obs_space, act_space)
        self.keys, shapes, dtypes = obs_space_info(obs_space)
        self.buf_obs = {k: np.zeros((n_envs, *tuple(shapes[k])), dtype=dtypes[k]) for k in self.keys}
        self.buf_rews = np.zeros(n_envs, dtype=np.float32)
        self.buf_dones = np.zeros(n_envs, dtype=bool)
        self.metadata = metadata

    # -- messaging -----------------------------------------------------------
    def _recv(self, conn: Any) -> Any:
        try:
            status, value = conn.recv()
        except (EOFError, OSError):
            raise RuntimeError("a ProcVecEnv worker died") from None
        if status == "error":
            raise RuntimeError(f"ProcVecEnv worker failed: {value}")
        return value

    def _call(self, w: int, cmd: str, *args: Any) -> Any:
        self.conns[w].send((cmd, args))
        return self._recv(self.conns[w])

    def _broadcast(self, cmd: str, per_worker_args: list[tuple]) -> list[Any]:
        for c, args in zip(self.conns, per_worker_args, strict=True):
            c.send((cmd, args))
        return [self._recv(c) for c in self.conns]

    def _by_worker(self, indices: VecEnvIndices) -> dict[int, list[int]]:
        """Worker -> local indices of the target envs, in worker order."""
        out: dict[int, list[int]] = {}
        for i in self._get_indices(indices):
            for w, rng in enumerate(self.slices):
                if i in rng:
                    out.setdefault(w, []).append(i - rng.start)
        return dict(sorted(out.items()))  # the main process's share (last) after the workers'

    def _gather(self, cmd: str, indices: VecEnvIndices, *args: Any) -> list[Any]:
        targets = list(self._get_indices(indices))
        by_w = self._by_worker(targets)
        for w, idx in by_w.items():
            self.conns[w].send((cmd, (*args, idx)))
        found: dict[int, Any] = {}
        for w, idx in by_w.items():
            for j, v in zip(idx, self._recv(self.conns[w]), strict=True):
                found[self.slices[w].start + j] = v
        return [found[i] for i in targets]

    def _save_obs(self, lo: int, hi: int, obs: Any) -> None:
        for key in self.keys:
            if key is None:
                self.buf_obs[key][lo:hi] = obs
            else:
                self.buf_obs[key][lo:hi] = obs[key]

    def _obs(self) -> VecEnvObs:
        return dict_to_obs(self.observation_space, {k: v.copy() for k, v in self.buf_obs.items()})

    # -- VecEnv API ----------------------------------------------------------
    def step_async(self, actions: np.ndarray) -> None:
        t = time.perf_counter()
        actions = np.asarray(actions)
        for c, rng in zip(self.conns, self.slices, strict=True):
            c.send(("step", (actions[rng.start : rng.stop],)))
        self.waiting = True
        self.sim_wall += time.perf_counter() - t

    def step_wait(self) -> VecEnvStepReturn:
        t = time.perf_counter()
        infos: list[dict[str, Any]] = []
        for c, rng in zip(self.conns, self.slices, strict=True):
            obs, rews, dones, w_infos, reset_infos, busy = self._recv(c)
            self._save_obs(rng.start, rng.stop, obs)
            self.buf_rews[rng.start : rng.stop] = rews
            self.buf_dones[rng.start : rng.stop] = dones
            for j, info in reset_infos.items():
                self.reset_infos[rng.start + j] = info
            infos.extend(w_infos)
            self.sim_busy += busy
        self.waiting = False
        self.sim_wall += time.perf_counter() - t
        return self._obs(), self.buf_rews.copy(), self.buf_dones.copy(), infos

    def reset(self) -> VecEnvObs:
        t = time.perf_counter()
        args = [(self._seeds[r.start : r.stop], self._options[r.start : r.stop]) for r in self.slices]
        for rng, (obs, infos, busy) in zip(self.slices, self._broadcast("reset", args), strict=True):
            self._save_obs(rng.start, rng.stop, obs)
            self.reset_infos[rng.start : rng.stop] = infos
            self.sim_busy += busy
        self._reset_seeds()
        self._reset_options()
        self.sim_wall += time.perf_counter() - t
        return self._obs()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for c in self.conns:
            try:
                if self.waiting:
                    c.recv()
                c.send(("close", ()))
            except (EOFError, OSError):
                pass
        for c in self.conns:
            with contextlib.suppress(EOFError, OSError):
                c.recv()
            c.close()
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self.env_method("render")

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attribute of the envs (see ``VecEnv.get_attr``)."""
        return self._gather("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute in the envs (see ``VecEnv.set_attr``)."""
        by_w = self._by_worker(indices)
        for w, idx in by_w.items():
            self.conns[w].send(("set_attr", (attr_name, value, idx)))
        for w in by_w:
            self._recv(self.conns[w])

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the envs (see ``VecEnv.env_method``)."""
        return self._gather("env_method", indices, method_name, method_args, method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Whether the envs are wrapped with ``wrapper_class``."""
        return self._gather("env_is_wrapped", indices, wrapper_class)

    # -- checkpoints ---------------------------------------------------------
    def get_env_states(self) -> list[Any]:
        """:func:`crl.checkpoint.get_env_state` of every env, in env order."""
        return [s for states in self._broadcast("get_env_state", [()] * len(self.conns)) for s in states]

    def set_env_states(self, states: Sequence[Any]) -> None:
        """Restore :meth:`get_env_states` (envs built the same way)."""
        if len(states) != self.num_envs:
            raise ValueError(f"{len(states)} env states for {self.num_envs} envs")
        self._broadcast("set_env_state", [(list(states[r.start : r.stop]),) for r in self.slices])


def env_states(venv: VecEnv) -> list[Any]:
    """Exact state of every env of ``venv`` (a ``DummyVecEnv`` or a :class:`ProcVecEnv`)."""
    if isinstance(venv, ProcVecEnv):
        return venv.get_env_states()
    if isinstance(venv, DummyVecEnv):
        return [get_env_state(e) for e in venv.envs]
    raise TypeError(f"cannot snapshot the envs of a {type(venv).__name__}")


def set_env_states(venv: VecEnv, states: Sequence[Any]) -> None:
    """Restore :func:`env_states` into a vec env built the same way (either kind)."""
    if isinstance(venv, ProcVecEnv):
        venv.set_env_states(states)
    elif isinstance(venv, DummyVecEnv):
        if len(states) != len(venv.envs):
            raise ValueError(f"{len(states)} env states for {len(venv.envs)} envs")
        for e, s in zip(venv.envs, states, strict=True):
            set_env_state(e, s)
    else:
        raise TypeError(f"cannot restore the envs of a {type(venv).__name__}")
