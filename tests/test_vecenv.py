"""ProcVecEnv steps exactly like DummyVecEnv (real drifting MuJoCo envs) and snapshots exactly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import crl  # noqa: F401  (registers crl/SlipperyAnt-v0)
from crl.vecenv import ProcVecEnv, env_states, set_env_states, split

N = 5
KW = {"change_every": 150, "episode_steps": 40, "drift_seed": 3, "num_envs": N}


def _factory() -> gym.Env:
    return Monitor(gym.make("crl/SlipperyAnt-v0", **KW))


def _clean(infos: list[dict]) -> list[dict]:
    out = []
    for info in infos:
        info = dict(info)
        if "episode" in info:
            info["episode"] = {k: v for k, v in info["episode"].items() if k != "t"}  # wall-clock time
        out.append(info)
    return out


def _assert_same(a, b) -> None:
    (oa, ra, da, ia), (ob, rb, db, ib) = a, b
    assert oa.dtype == ob.dtype and ra.dtype == rb.dtype and da.dtype == db.dtype
    np.testing.assert_array_equal(oa, ob)
    np.testing.assert_array_equal(ra, rb)
    np.testing.assert_array_equal(da, db)
    ia, ib = _clean(ia), _clean(ib)
    assert [sorted(x) for x in ia] == [sorted(x) for x in ib]
    for x, y in zip(ia, ib):
        for k in x:
            np.testing.assert_equal(x[k], y[k], err_msg=k)


@pytest.fixture(params=[True, False], ids=["main-simulates-too", "workers-only"])
def pair(request):
    dummy, proc = DummyVecEnv([_factory] * N), ProcVecEnv([_factory] * N, n_workers=2, in_main=request.param)
    yield dummy, proc
    proc.close()
    dummy.close()


def test_split_covers_every_env_once():
    assert split(5, 2) == [range(0, 3), range(3, 5)]
    assert [i for r in split(7, 3) for i in r] == list(range(7))


def test_same_seeds_and_actions_give_identical_transitions(pair):
    dummy, proc = pair
    assert dummy.seed(11) == proc.seed(11)
    np.testing.assert_array_equal(dummy.reset(), proc.reset())
    assert dummy.reset_infos == proc.reset_infos
    rng = np.random.default_rng(0)
    ends = changes = 0
    for _ in range(300):
        act = rng.uniform(-1, 1, size=(N, *dummy.action_space.shape)).astype(np.float32)
        a, b = dummy.step(act), proc.step(act)
        _assert_same(a, b)
        np.testing.assert_equal(dummy.reset_infos, proc.reset_infos)
        ends += int(a[2].sum())
        changes += sum(bool(i.get("regime_change")) for i in a[3])
    assert ends >= N * 5 and changes >= N  # episode ends (auto-reset) and regime changes were crossed
    assert proc.get_attr("regime") == dummy.get_attr("regime")
    assert proc.env_method("get_state", indices=[4, 1]) == dummy.env_method("get_state", indices=[4, 1])
    assert proc.env_is_wrapped(Monitor) == [True] * N
    assert proc.sim_busy > 0 and proc.sim_wall > 0


def test_snapshot_from_workers_restores_into_either_kind(pair):
    dummy, proc = pair
    proc.seed(5)
    proc.reset()
    rng = np.random.default_rng(1)
    for _ in range(120):
        proc.step(rng.uniform(-1, 1, size=(N, 8)).astype(np.float32))
    states = env_states(proc)
    twin = ProcVecEnv([_factory] * N, n_workers=3)
    try:
        set_env_states(dummy, states)
        set_env_states(twin, states)
        for _ in range(100):
            act = rng.uniform(-1, 1, size=(N, 8)).astype(np.float32)
            a, b, c = proc.step(act), dummy.step(act), twin.step(act)
            _assert_same(a, b)
            _assert_same(a, c)
    finally:
        twin.close()


def test_worker_errors_are_reported(pair):
    _, proc = pair
    with pytest.raises(RuntimeError, match="AttributeError"):
        proc.env_method("no_such_method")
    with pytest.raises(ValueError, match="n_workers"):
        ProcVecEnv([_factory] * 2, n_workers=2)  # 2 workers and the main process: 3 shares of 2 envs
    with pytest.raises(ValueError, match="n_workers"):
        ProcVecEnv([_factory] * 2, n_workers=0, in_main=False)
