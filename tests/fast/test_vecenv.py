"""ProcVecEnv: the same transitions as DummyVecEnv, env states for checkpoints, clean exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import crl  # noqa: F401  (registers crl/* ids)
from crl.checkpoint import get_env_state
from crl.fast.vecenv import ProcVecEnv, _Pickler, _spin
from tests._procs import process_alive

KW = {"change_every": 150, "align": "exact", "episode_steps": 60}


def _factory():
    return Monitor(gym.make("crl/SlipperyAnt-v0", **KW))


def _rollout(venv, steps: int, seed: int = 0, on_step=None):
    venv.seed(seed)
    rng = np.random.default_rng(seed)
    out = [venv.reset()]
    for t in range(steps):
        if on_step is not None:
            on_step(t)
        actions = rng.uniform(-1, 1, size=(venv.num_envs, *venv.action_space.shape)).astype(np.float32)
        obs, rewards, dones, infos = venv.step(actions)
        out.append((obs, rewards, dones, [_timeless(i) for i in infos]))
    return out, [dict(r) for r in venv.reset_infos]


def _timeless(x):
    """``x`` without Monitor's wall-clock fields (episode ``t``, episode times, start time)."""
    if isinstance(x, dict):
        return sorted(((k, _timeless(v)) for k, v in x.items() if k not in ("t", "episode_times", "t_start")), key=str)
    if isinstance(x, (list, tuple)):
        return [_timeless(v) for v in x]
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, np.generic):  # the scalar type too: the worker's pickler must keep it
        return (type(x).__name__, x.item())
    return x


@pytest.mark.parametrize(
    ("workers", "in_main", "spin"),
    [(0, True, None), (1, True, None), (1, True, 0.0), (2, True, None), (1, False, 0.05), (3, False, None)],
)
def test_same_transitions_as_dummy_vec_env(workers, in_main, spin):
    dummy = DummyVecEnv([_factory] * 3)
    proc = ProcVecEnv([_factory] * 3, n_workers=workers, in_main=in_main, spin=spin)
    try:
        a, ra = _rollout(dummy, 400)
        b, rb = _rollout(proc, 400)
    finally:
        proc.close()
    assert np.array_equal(a[0], b[0])
    n_done = 0
    for (oa, ra_, da, ia), (ob, rb_, db, ib) in zip(a[1:], b[1:], strict=True):
        assert np.array_equal(oa, ob) and np.array_equal(ra_, rb_) and np.array_equal(da, db)
        assert ia == ib  # infos, terminal observations and regime changes included
        n_done += int(da.sum())
    assert n_done >= 15  # episodes ended (60 steps) and regimes changed (150 steps) on the way
    assert str(ra) == str(rb)


def test_envs_moved_between_processes_keep_dummy_transitions():
    dummy = DummyVecEnv([_factory] * 6)
    proc = ProcVecEnv([_factory] * 6, n_workers=1, rebalance=False)
    to_main, to_worker = {40, 200}, {90, 130, 170, 250}  # mid-episode and across regime changes

    def move(t):
        if t in to_main:
            proc.move_to_main()
        elif t in to_worker:
            proc.move_to_worker()
        assert [i for block in proc._blocks for i in block] == list(range(6))  # contiguous, in order

    try:
        a, ra = _rollout(dummy, 300)
        b, rb = _rollout(proc, 300, on_step=move)
        assert proc.main_envs == 1  # 3, +1 at 40, -3 by 170, +1 at 200, -1 at 250
        with pytest.raises(ValueError, match="at least two envs in the main process"):
            proc.move_to_worker()  # the main process keeps one env
        for _ in range(4):
            proc.move_to_main()
        with pytest.raises(ValueError, match="a worker with at least two envs"):
            proc.move_to_main()  # the worker keeps one env
    finally:
        proc.close()
    assert all(np.array_equal(x[0], y[0]) and x[3] == y[3] for x, y in zip(a[1:], b[1:], strict=True))
    assert str(ra) == str(rb)


class _SlowIn(gym.Wrapper):
    """Steps 2 ms slower in the process that built the vec env (``main=True``) or outside it."""

    def __init__(self, env, main_pid, main):
        super().__init__(env)
        self.main_pid, self.main = main_pid, main

    def step(self, action):
        if (os.getpid() == self.main_pid) == self.main:
            time.sleep(0.002)
        return self.env.step(action)


def test_rebalance_moves_envs_away_from_a_slow_worker():
    pid = os.getpid()
    proc = ProcVecEnv([lambda: _SlowIn(gym.make("CartPole-v1"), pid, main=False)] * 6, n_workers=1)
    proc.BALANCE_EVERY = 4
    try:
        proc.reset()
        assert proc.main_envs == 3
        for _ in range(40):
            proc.step(np.zeros(6, dtype=np.int64))
        assert proc.main_envs == 5  # all but the one the worker keeps
    finally:
        proc.close()
    fast = ProcVecEnv([lambda: gym.make("CartPole-v1")] * 6, n_workers=1, rebalance=False)
    try:
        fast.reset()
        for _ in range(40):
            fast.step(np.zeros(6, dtype=np.int64))
        assert fast.main_envs == 3  # rebalance=False: the split stays
    finally:
        fast.close()


def test_rebalance_moves_envs_back_to_a_worker_when_the_main_process_is_slow():
    """The balance works both ways: envs the main process steps slower go to the worker (a move
    made on a noisy measurement is undone)."""
    pid = os.getpid()
    proc = ProcVecEnv([lambda: _SlowIn(gym.make("CartPole-v1"), pid, main=True)] * 6, n_workers=1)
    proc.BALANCE_EVERY = 4
    try:
        proc.reset()
        for _ in range(40):
            proc.step(np.zeros(6, dtype=np.int64))
        assert proc.main_envs == 1  # all but the one the main process keeps
    finally:
        proc.close()


@pytest.mark.parametrize(
    ("gap_ms", "main_envs"),
    # one move changes the gap by 1 + 2 = 3 ms; the main process's time per step is 3 ms of
    # its own envs plus the wait, and a move must save more than half an env's step (0.5 ms):
    # 0 -> 3 ms (5 or 4 after a move), 1 -> 4 (4 with a 4th env), 2.5 -> 5.5 (4: moves),
    # 3.5 -> 6.5 (4.5: moves), -2.5 -> 3 (2.5 with an env less: too little), -4.5 -> 3 (2: moves)
    [(0.0, 3), (1.0, 3), (2.5, 4), (3.5, 4), (-2.5, 3), (-4.5, 2)],
)
def test_balance_moves_when_the_main_process_gains(gap_ms, main_envs):
    """Main process 1 ms per env, worker 2 ms per env, 3 envs each: a move is made when it
    shortens the main process's part of a step (its envs plus waiting for the worker, from the
    median gap) by more than half an env's step, and two checks in a row agree."""
    from crl.fast.vecenv import _Balance

    proc = ProcVecEnv([lambda: gym.make("CartPole-v1")] * 6, n_workers=1)
    try:
        proc.reset()
        n = 10  # steps since the last check, 3 envs on each side

        def check(main, gap):
            gaps = [gap * 1e-3] * (n - 2) + [0.05, -0.05]  # two outliers: the median ignores them
            proc._bal = _Balance(own=main * 1e-3 * n, busy=(6 - main) * 2e-3 * n, gaps=gaps, steps=n)
            proc._balance()

        check(3, gap_ms)
        assert proc.main_envs == 3 and proc.moves == 0  # one check alone does not move
        check(3, gap_ms)
        assert proc.main_envs == main_envs and proc.moves == int(main_envs != 3)
        if proc.moves:  # the move back is predicted worse: no swing between two neighbours
            for _ in range(2):
                check(main_envs, gap_ms + (-3.0 if main_envs > 3 else 3.0))
            assert proc.main_envs == main_envs and proc.moves == 1
            # a measurement that wants the move back (noise) needs four checks in a row now
            back = -6.0 if main_envs > 3 else 6.0
            for k in range(4):
                assert proc.main_envs == main_envs, k
                check(main_envs, back)
            assert proc.main_envs == 3 and proc.moves == 2 and proc._needed == 4
    finally:
        proc.close()


def test_env_states_round_trip_and_match_dummy():
    dummy = DummyVecEnv([_factory] * 2)
    proc = ProcVecEnv([_factory] * 2, n_workers=1)  # one env in a worker, one in the main process
    try:
        for venv in (dummy, proc):
            _rollout(venv, 100)
        states = proc.get_env_states()
        assert len(states) == 2 and [s["type"] for s in states[0]] == [s["type"] for s in get_env_state(dummy.envs[0])]
        after, _ = _rollout_from(proc, 50)
        proc.set_env_states(states)
        again, _ = _rollout_from(proc, 50)
        assert all(np.array_equal(x[0], y[0]) for x, y in zip(after, again, strict=True))
        assert proc.get_attr("spec")[0].id == "crl/SlipperyAnt-v0"
        assert proc.env_is_wrapped(Monitor) == [True, True]
        assert proc.simulation_time() > 0
    finally:
        proc.close()


def _rollout_from(venv, steps):
    rng = np.random.default_rng(1)
    out = []
    for _ in range(steps):
        out.append(venv.step(rng.uniform(-1, 1, size=(venv.num_envs, 8)).astype(np.float32)))
    return out, None


def test_bad_worker_counts():
    with pytest.raises(ValueError, match="n_workers must be in"):
        ProcVecEnv([_factory] * 2, n_workers=2)  # 2 workers + the main process > 2 envs
    with pytest.raises(ValueError, match="spin must be a non-negative"):
        ProcVecEnv([_factory] * 2, n_workers=1, spin=-1.0)


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    code = (
        "import crl, gymnasium as gym, time\n"
        "from crl.fast.vecenv import ProcVecEnv\n"
        "v = ProcVecEnv([lambda: gym.make('CartPole-v1')] * 2, n_workers=2, in_main=False)\n"
        "print(' '.join(str(p.pid) for p in v._procs), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    alive = pids
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [p for p in pids if process_alive(p)]
    assert not alive


def test_training_with_worker_processes_equals_in_process_training(tmp_path):
    """Same seed, 4 envs: crl train with --vec-env proc logs exactly what --vec-env dummy logs."""
    import csv

    from crl.cli import main

    def run(kind):
        args = ["train", "--env", "slippery-hopper", "--agent", "ppo", "--steps", "1024", "--n-envs", "4"]
        args += ["--vec-env", kind, "--env-kwargs", "change_every=300", "--agent-kwargs", "n_steps=64"]
        args += ["batch_size=64", "n_epochs=2", "--run-dir", str(tmp_path / kind), "--wandb", "disabled"]
        assert main([*args, "--no-progress", "--checkpoint-every", "256"]) == 0
        (run_dir,) = (tmp_path / kind / "default").iterdir()
        with (run_dir / "metrics.csv").open() as f:
            return [{k: v for k, v in r.items() if k != "time/sps"} for r in csv.DictReader(f)]

    dummy, proc = run("dummy"), run("proc")
    assert len(dummy) > 10 and proc == dummy


class _Broken(gym.Wrapper):
    def step(self, action):
        raise ValueError("physics exploded")


def test_a_worker_error_reaches_the_trainer_with_its_message():
    venv = ProcVecEnv([lambda: _Broken(gym.make("CartPole-v1"))] * 2, n_workers=1)
    try:
        venv.reset()
        with pytest.raises(RuntimeError, match="ValueError: physics exploded"):
            venv.step(np.zeros(2, dtype=np.int64))
    finally:
        venv.close()


def test_numpy_scalars_cross_the_pipe_with_their_type_and_bits():
    import pickle

    values = [np.float64(0.1), np.float64("nan"), np.float64(-0.0), np.float32(-0.8030549), np.float16(0.333)]
    values += [np.int8(-3), np.int64(-(2**62)), np.uint64(2**64 - 1), np.uint8(255), np.bool_(True)]
    msg = ("ok", {"info": values, "obs": np.arange(3.0), "nested": [{"x": np.float32(2.5)}], "plain": 1.5})
    back = pickle.loads(_Pickler.dumps(msg))
    for a, b in zip(values, back[1]["info"], strict=True):
        assert type(a) is type(b) and a.tobytes() == b.tobytes()
    assert type(back[1]["nested"][0]["x"]) is np.float32 and back[1]["plain"] == 1.5
    assert np.array_equal(back[1]["obs"], msg[1]["obs"])


def test_spin_returns_once_a_message_is_there_or_the_time_is_up():
    import multiprocessing as mp

    a, b = mp.Pipe()
    t = time.perf_counter()
    _spin(a, 0.05)
    assert time.perf_counter() - t >= 0.05 and not a.poll(0)
    b.send("x")
    t = time.perf_counter()
    _spin(a, 60.0)
    assert time.perf_counter() - t < 30.0 and a.recv() == "x"


def test_actions_as_a_list_or_an_array_give_the_same_steps():
    def run(as_list):
        venv = ProcVecEnv([lambda: gym.make("Pendulum-v1")] * 4, n_workers=1)
        try:
            venv.seed(3)
            venv.reset()
            acts = np.linspace(-2, 2, 4 * 5, dtype=np.float32).reshape(5, 4, 1)
            return [venv.step(list(a) if as_list else a)[0] for a in acts]
        finally:
            venv.close()

    assert all(np.array_equal(x, y) for x, y in zip(run(True), run(False), strict=True))
