"""A vectorised env that simulates in worker processes, with checkpointable env state.

:class:`ProcVecEnv` splits ``n`` envs over ``W`` worker processes; each worker steps its share
sequentially, all workers at the same time, so simulation uses every core while the learner's
process only batches the observations and runs the policy. It behaves exactly like SB3's
``DummyVecEnv`` (same auto-reset, ``terminal_observation``, ``TimeLimit.truncated``,
``reset_infos``, per-index seeds and options), so a run gives the same transitions with either
(tested), and it answers :meth:`ProcVecEnv.get_env_states` / :meth:`ProcVecEnv.set_env_states`
with :func:`crl.checkpoint.get_env_state` of each env, so crl's checkpoints stay exact.

Workers are forked by default (Linux): they inherit the Gymnasium registry, including envs
registered from user catalogs.

Example:
    >>> import gymnasium as gym
    >>> venv = ProcVecEnv([lambda: gym.make("CartPole-v1")] * 4, n_workers=1)
    >>> venv.seed(0)
    [0, 1, 2, 3]
    >>> obs = venv.reset()
    >>> obs.shape, venv.n_workers, venv.in_main
    ((4, 4), 1, True)
    >>> obs, rewards, dones, infos = venv.step(np.zeros(4, dtype=np.int64))
    >>> rewards.tolist()
    [1.0, 1.0, 1.0, 1.0]
    >>> venv.close()
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.reduction import ForkingPickler
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from crl.system import usable_cores

__all__ = ["ProcVecEnv"]


def _scalar_reducers() -> dict[type, Callable[[Any], tuple[Any, tuple[Any]]]]:
    """Pickle reducers of NumPy's scalar types through a Python number: ``np.float64(x)``
    becomes ``(np.float64, (float(x),))``. The value and the type come back exactly (every float16,
    float32 and float64 is a Python float, every fixed-size integer a Python int), at a fraction of
    the cost of NumPy's own reducer (which pickles the dtype and the raw bytes): an Ant step's
    ``info`` holds ten NumPy scalars, and pickling 8 envs' results took 97 us with
    multiprocessing's pickler, 37 us with these.
    """
    table: dict[type, Callable[[Any], tuple[Any, tuple[Any]]]] = {}
    for t in (np.float16, np.float32, np.float64):
        table[t] = lambda x, t=t: (t, (float(x),))
    for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        table[t] = lambda x, t=t: (t, (int(x),))
    table[np.bool_] = lambda x: (np.bool_, (bool(x),))
    return table


class _Pickler(ForkingPickler):
    """multiprocessing's pickler (what ``Connection.send`` uses) with the fast reducers of NumPy
    scalars (:func:`_scalar_reducers`); any unpickler reads what it writes.
    """

    _scalars = _scalar_reducers()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dispatch_table.update(self._scalars)  # a per-instance copy of multiprocessing's table


def _step_env(env: gym.Env, action: Any) -> tuple[Any, float, bool, dict[str, Any], dict[str, Any] | None]:
    """One DummyVecEnv-style step: auto-reset with ``terminal_observation``."""
    obs, reward, terminated, truncated, info = env.step(action)
    done = terminated or truncated
    info["TimeLimit.truncated"] = truncated and not terminated
    reset_info = None
    if done:
        info["terminal_observation"] = obs
        obs, reset_info = env.reset()
    return obs, float(reward), bool(done), info, reset_info


class _Envs:
    """A share of the envs and the commands they answer (in a worker process or in the main one)."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        self.envs: list[gym.Env] = [fn() for fn in env_fns]
        self.sim = 0.0
        self.sent = 0.0  # when the last step's reply had been sent (``perf_counter``; workers only)

    def handle(self, cmd: str, data: Any) -> Any:
        from crl.checkpoint import get_env_state, set_env_state

        envs = self.envs
        if cmd == "step":  # the results, this step's stepping time, when the last reply was sent
            t = time.perf_counter()
            out = [_step_env(env, a) for env, a in zip(envs, data, strict=True)]
            dt = time.perf_counter() - t
            self.sim += dt
            return out, dt, self.sent
        if cmd == "reset":
            t = time.perf_counter()
            res = [
                env.reset(seed=seed, **({"options": options} if options else {}))
                for env, (seed, options) in zip(envs, data, strict=True)
            ]
            self.sim += time.perf_counter() - t
            return res
        if cmd == "spaces":
            return envs[0].observation_space, envs[0].action_space, None
        if cmd == "get_state":
            return [get_env_state(envs[i]) for i in data]
        if cmd == "set_state":
            for i, state in data:
                set_env_state(envs[i], state)
            return None
        if cmd == "env_method":
            i, name, args, kwargs = data
            return getattr(envs[i], name)(*args, **kwargs)
        if cmd == "get_attr":
            i, name = data
            return getattr(envs[i], name)
        if cmd == "set_attr":
            i, name, value = data
            setattr(envs[i], name, value)
            return None
        if cmd == "is_wrapped":
            from stable_baselines3.common.env_util import is_wrapped

            i, cls = data
            return is_wrapped(envs[i], cls)
        if cmd == "sim_time":
            return self.sim
        if cmd == "give":  # hand the env at position ``data`` over (its state; the env is closed here)
            env = envs.pop(data)
            state = get_env_state(env)
            env.close()
            return state
        if cmd == "take":  # a new env at position ``pos``: built by its factory, then given the state
            fn, state, pos = data
            env = cloudpickle.loads(fn)()  # closures travel with cloudpickle
            set_env_state(env, state)
            envs.insert(pos if pos >= 0 else len(envs), env)
            return None
        if cmd == "close":
            for env in envs:
                env.close()
            return None
        raise ValueError(f"unknown command {cmd!r}")  # pragma: no cover - a programming error


class _InMain:
    """The main process's own share behind the pipe interface: ``send`` runs the command at
    once (it is sent last, after the workers got theirs), ``recv`` returns the reply.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        self.share = _Envs(env_fns)
        self.reply: Any = None

    def send(self, msg: tuple[str, Any]) -> None:
        try:
            self.reply = ("ok", self.share.handle(*msg))
        except Exception as e:  # raised by _replies, after the workers' answers are read
            self.reply = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")

    def recv(self) -> Any:
        reply, self.reply = self.reply, None
        return reply


_yield: Callable[[], None] = getattr(os, "sched_yield", lambda: None)


def _spin(conn: Any, seconds: float) -> None:
    """Poll ``conn`` without sleeping until a message is there or ``seconds`` have passed:
    waking a process blocked on a pipe takes tens of microseconds, a vectorised step of 8 Ant
    envs about 1.5 ms.
    """
    end = time.perf_counter() + seconds
    while not conn.poll(0) and time.perf_counter() < end:
        _yield()  # another process runnable on this core (a loaded machine) goes first


def _worker(conn: Any, inherited: list[Any], payload: bytes, parent_pid: int, spin_s: float = 0.0) -> None:
    """Worker loop: build the envs, then answer commands until ``close`` (or until the parent
    process is gone, e.g. killed with SIGKILL: then the worker exits by itself).
    """
    for c in inherited:  # pipe ends of the parent (and of earlier workers) copied by fork
        c.close()
    share = _Envs(cloudpickle.loads(payload))
    try:
        while True:
            while not conn.poll(1.0):
                if os.getppid() != parent_pid:
                    return
            cmd, data = conn.recv()
            try:
                reply = _Pickler.dumps(("ok", share.handle(cmd, data)))
            except Exception as e:  # the trainer raises it (see _reply)
                reply = _Pickler.dumps(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
            conn.send_bytes(reply)
            if cmd == "step":  # the balance compares it with the main process's own finish
                share.sent = time.perf_counter()
                if spin_s:  # the next step's actions usually follow within a millisecond
                    _spin(conn, spin_s)
            if cmd == "close":
                return
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return


def _reply(conn: Any) -> Any:
    """A worker's answer; its exception, if any, raised here with the worker's traceback."""
    return _replies([conn])[0]


def _replies(conns: list[Any]) -> list[Any]:
    """Every worker's answer, read before the first error (if any) is raised, so that no
    answer is left in a pipe.
    """
    answers = []
    for conn in conns:
        try:
            answers.append(conn.recv())
        except EOFError:
            answers.append(("error", "an env worker process died (see its output above)"))
    for status, value in answers:
        if status == "error":
            raise RuntimeError(f"env worker failed: {value}")
    return [value for _, value in answers]


def _stack(items: list[Any], space: gym.Space) -> Any:
    if isinstance(space, gym.spaces.Dict):
        return {k: _stack([o[k] for o in items], s) for k, s in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(_stack([o[i] for o in items], s) for i, s in enumerate(space.spaces))
    return np.stack(items)


@dataclass
class _Balance:
    """Timings of the steps since the last balance check (one worker and the main process)."""

    own: float = 0.0  # the main process stepping its envs
    busy: float = 0.0  # the worker stepping its envs
    gaps: list[float] = field(default_factory=list)  # per step: the worker's reply sent minus the main process done
    steps: int = 0
    last_end: float | None = None  # the main process done, last step


class ProcVecEnv(VecEnv):
    """``DummyVecEnv`` semantics, simulation in ``n_workers`` processes.

    Args:
        env_fns: one factory per env (closures are fine: they travel with cloudpickle).
        n_workers: worker processes (default: ``min(len(env_fns), usable_cores())``, one less
            with ``in_main``); the envs are split in contiguous blocks, one per worker (and one
            for the main process).
        in_main: the main process steps the last block itself while the workers step theirs,
            instead of waiting idle (on 2 cores: one worker and the main process).
        start_method: multiprocessing start method (default ``fork`` where available).
        rebalance: with one worker and ``in_main``, move one env at a time between the worker
            and the main process when the move shortens the main process's part of a step
            (stepping its own envs, then waiting for the worker's reply) by more than half an
            env's step, as predicted from the measured time of one env's step on each side
            and the median of how much later than the main process the worker finished, over
            :attr:`BALANCE_EVERY` steps, and only when two such checks in a row agree (twice as
            many after each move back: training's timings are noisy, single steps up to 3 ms
            late, and a move builds an env, 15-30 ms for Ant). Messaging makes an env cost more
            in a worker, so the best split can leave it fewer envs than the main process. A move
            hands the env's exact state over
            (:func:`crl.checkpoint.get_env_state`), so transitions stay exactly those of
            ``DummyVecEnv``.
        spin: seconds a process polls the pipe without sleeping before it blocks: the main
            process waiting for a step's replies, a worker waiting for the next step's actions
            (which follow its reply within a millisecond during rollouts). Waking a process
            blocked on a pipe takes tens of microseconds, twice per step; polling saved ~0.1 ms
            per vectorised step of 16 Ant envs (1.94 to 1.77 ms). The default, :attr:`SPIN`
            where every process has a usable core of its own and 0 (block at once) elsewhere;
            a spinning process yields its core to any other runnable process.
    """

    #: Vectorised steps between two balance checks.
    BALANCE_EVERY = 32
    #: Default of ``spin`` (seconds) where every process has a core of its own.
    SPIN = 0.002

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        n_workers: int | None = None,
        in_main: bool = True,
        start_method: str | None = None,
        rebalance: bool = True,
        spin: float | None = None,
    ) -> None:
        n = len(env_fns)
        if n < 1:
            raise ValueError("ProcVecEnv needs at least one env")
        if n_workers is None:
            n_workers = min(n, usable_cores()) - int(in_main)
        shares = n_workers + int(in_main)
        if n_workers < 0 or not 1 <= shares <= n:
            raise ValueError(f"n_workers must be in [{1 - int(in_main)}, {n - int(in_main)}], got {n_workers!r}")
        self.n_workers, self.in_main = n_workers, in_main
        if spin is None:  # spin only where every process has a core of its own
            spin = self.SPIN if usable_cores() >= shares else 0.0
        if not spin >= 0:
            raise ValueError(f"spin must be a non-negative number of seconds, got {spin!r}")
        self.spin = float(spin)
        self._env_fns = list(env_fns)
        self.rebalance = rebalance and in_main and n_workers == 1
        self._bal = _Balance()
        # balance checks in a row that wish a move (+: an env to the main process, -: to the
        # worker), how many must agree, and the last move's direction
        self._votes, self._needed, self._last_move = 0, 2, 0
        self.moves = 0  #: envs moved between processes so far (by the balance or by hand)
        self._main_end = 0.0  # when the main process started waiting for the workers in the current step
        self._blocks = [list(range(k * n // shares, (k + 1) * n // shares)) for k in range(shares)]
        self._index_blocks()
        method = start_method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        ctx = mp.get_context(method)
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        for block in self._blocks[:n_workers]:
            parent, child = ctx.Pipe()
            payload = cloudpickle.dumps([env_fns[i] for i in block])
            inherited = [*self._conns, parent] if method == "fork" else []
            proc = ctx.Process(target=_worker, args=(child, inherited, payload, os.getpid(), self.spin), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        if in_main:  # last: its work runs after the messages to the workers went out
            self._conns.append(_InMain([env_fns[i] for i in self._blocks[-1]]))
        self._conns[0].send(("spaces", None))
        obs_space, act_space, _ = _reply(self._conns[0])
        self.num_envs = n  # the base class asks every env's render_mode through get_attr
        super().__init__(n, obs_space, act_space)
        self.closed = False

    # -- stepping ------------------------------------------------------------
    def step_async(self, actions: np.ndarray) -> None:
        sliced = isinstance(actions, np.ndarray) and actions.shape[:1] == (self.num_envs,)
        for conn, block in zip(self._conns, self._blocks, strict=True):  # blocks are contiguous
            conn.send(("step", actions[block[0] : block[-1] + 1] if sliced else [actions[i] for i in block]))

    def step_wait(self) -> Any:
        # the main process's part of the step ends here: its own envs (the last send ran them),
        # then whatever its caller did before waiting
        self._main_end = time.perf_counter()
        if self.spin:
            for conn in self._conns[: self.n_workers]:
                _spin(conn, self.spin)
        parts = _replies(self._conns)
        if self.rebalance:
            self._account(parts)
        results = [r for part, _, _ in parts for r in part]
        obs, rewards, dones, infos = [], [], [], []
        for i, (o, r, d, info, reset_info) in enumerate(results):
            obs.append(o)
            rewards.append(r)
            dones.append(d)
            infos.append(info)
            if reset_info is not None:
                self.reset_infos[i] = reset_info
        return (
            _stack(obs, self.observation_space),
            np.array(rewards, dtype=np.float32),
            np.array(dones, dtype=bool),
            infos,
        )

    def reset(self) -> Any:
        for conn, block in zip(self._conns, self._blocks, strict=True):
            conn.send(("reset", [(self._seeds[i], self._options[i]) for i in block]))
        results = [r for part in _replies(self._conns) for r in part]
        obs = []
        for i, (o, info) in enumerate(results):
            obs.append(o)
            self.reset_infos[i] = info
        self._reset_seeds()
        self._reset_options()
        return _stack(obs, self.observation_space)

    # -- balance ---------------------------------------------------------------
    @property
    def main_envs(self) -> int:
        """How many envs the main process steps itself."""
        return len(self._blocks[-1]) if self.in_main else 0

    def move_to_main(self) -> None:
        """Move the last env of the last worker to the main process (exact state hand-over)."""
        if not self.in_main or self.n_workers < 1 or len(self._blocks[-2]) < 2:
            raise ValueError("move_to_main needs in_main and a worker with at least two envs")
        self._move(len(self._blocks) - 2, -1, len(self._blocks) - 1, 0)

    def move_to_worker(self) -> None:
        """Move the first env of the main process to the last worker (exact state hand-over)."""
        if not self.in_main or self.n_workers < 1 or len(self._blocks[-1]) < 2:
            raise ValueError("move_to_worker needs in_main, a worker and at least two envs in the main process")
        self._move(len(self._blocks) - 1, 0, len(self._blocks) - 2, -1)

    def _move(self, src: int, src_pos: int, dst: int, dst_pos: int) -> None:
        """Move the env at ``src_pos`` of share ``src`` to ``dst_pos`` of share ``dst`` (-1: the
        end); the shares are neighbours, so the blocks stay contiguous.
        """
        self._conns[src].send(("give", src_pos))
        state = _reply(self._conns[src])
        i = self._blocks[src].pop(src_pos)
        self._conns[dst].send(("take", (cloudpickle.dumps(self._env_fns[i]), state, dst_pos)))
        _reply(self._conns[dst])
        self._blocks[dst].insert(dst_pos if dst_pos >= 0 else len(self._blocks[dst]), i)
        self._index_blocks()
        self.moves += 1
        self._bal = _Balance()  # the next lagged send time belongs to the old split

    def _index_blocks(self) -> None:
        """Env index -> (share, position in the share), after the blocks changed."""
        self._where = {i: (k, j) for k, block in enumerate(self._blocks) for j, i in enumerate(block)}

    def _account(self, parts: list[Any]) -> None:
        """Record one step's timings (one worker and the main process) and balance every
        :attr:`BALANCE_EVERY` steps.
        """
        (_, busy, sent), (_, own, _) = parts
        b = self._bal
        if b.last_end is not None and sent > 0.0:  # ``sent`` is the worker's for the last step
            b.gaps.append(sent - b.last_end)
        b.last_end = self._main_end
        b.own += own
        b.busy += busy
        b.steps += 1
        if b.steps >= self.BALANCE_EVERY and b.gaps:
            self._balance()

    def _balance(self) -> None:
        b = self._bal
        self._bal = _Balance(last_end=b.last_end)
        gap = float(np.median(b.gaps))  # > 0: the main process waited for the worker
        main, worker = len(self._blocks[-1]), len(self._blocks[-2])
        own, busy = b.own / (main * b.steps), b.busy / (worker * b.steps)  # one env's step, each side
        move = own + busy  # what one move changes the gap by

        def cost(m: int, g: float) -> float:  # the main process's time per step: its envs, then waiting
            return m * own + max(g, 0.0)

        now = cost(main, gap)
        margin = own / 2  # no move for less: half an env's step per step (a move builds an env: ~20 ms for Ant)
        vote = 0
        if worker > 1 and cost(main + 1, gap - move) < now - margin:
            vote = 1
        elif main > 1 and cost(main - 1, gap + move) < now - margin:
            vote = -1
        self._votes = self._votes + vote if vote and (self._votes > 0) == (vote > 0) else vote
        back = vote == -self._last_move != 0  # undoing the last move: twice as many checks, from now on
        need = min(2 * self._needed, 64) if back else self._needed
        if vote and abs(self._votes) >= need:  # enough checks in a row agree: move
            self._votes, self._last_move, self._needed = 0, vote, need
            if vote > 0:
                self.move_to_main()
            else:
                self.move_to_worker()

    def close(self) -> None:
        if self.closed:
            return
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, EOFError, OSError):
                conn.send(("close", None))
                conn.recv()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self.closed = True

    # -- per-env calls -------------------------------------------------------
    def _call(self, index: int, cmd: str, data: Any) -> Any:
        k, j = self._where[index]
        self._conns[k].send((cmd, (j, *data)))
        return _reply(self._conns[k])

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [self._call(i, "get_attr", (attr_name,)) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for i in self._get_indices(indices):
            self._call(i, "set_attr", (attr_name, value))

    def env_method(self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list[Any]:
        return [self._call(i, "env_method", (method_name, args, kwargs)) for i in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [self._call(i, "is_wrapped", (wrapper_class,)) for i in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self.env_method("render")

    # -- crl extras ----------------------------------------------------------
    def get_env_states(self) -> list[Any]:
        """:func:`crl.checkpoint.get_env_state` of every env, in index order."""
        for conn, block in zip(self._conns, self._blocks, strict=True):
            conn.send(("get_state", list(range(len(block)))))
        return [s for part in _replies(self._conns) for s in part]

    def set_env_states(self, states: Sequence[Any]) -> None:
        """Restore :meth:`get_env_states`."""
        if len(states) != self.num_envs:
            raise ValueError(f"{len(states)} env states for {self.num_envs} envs")
        for conn, block in zip(self._conns, self._blocks, strict=True):
            conn.send(("set_state", [(j, states[i]) for j, i in enumerate(block)]))
        _replies(self._conns)

    def simulation_time(self) -> float:
        """Wall seconds the workers spent in ``step``/``reset``, summed over workers."""
        for conn in self._conns:
            conn.send(("sim_time", None))
        return sum(_replies(self._conns))

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()
