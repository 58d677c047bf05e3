"""Continual World (crl.drift.metaworld): CW10/CW20 from Meta-World, success rates, exact resume.

Most tests need the optional ``metaworld`` package (``pip install "crl[cw]"`` or
``pip install --no-deps metaworld==3.1.1 imageio``, docs/envs.md); they are skipped with the
reason where it is absent. The weld fix and the task lists are tested everywhere.
"""

from __future__ import annotations

import csv

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from crl.checkpoint import get_env_state, set_env_state
from crl.cli import main
from crl.diagnostics.evaluation import evaluate_regimes
from crl.drift import find_drifts
from crl.drift.metaworld import CW10, CW20, ContinualWorldEnv, metaworld_missing, task_names, weld_fix
from crl.errors import ConfigError

MISSING = metaworld_missing()
needs_metaworld = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

WELD_XML = """
<mujoco>
  <worldbody>
    <body name="mocap" mocap="true"/>
    <body name="hand"><freejoint/><geom size="0.1"/></body>
  </worldbody>
  <equality><weld body1="mocap" body2="hand"/></equality>
</mujoco>
"""


class _Env:
    def __init__(self):
        self.model = mujoco.MjModel.from_xml_string(WELD_XML)


def test_the_sequences_are_continual_worlds():
    assert CW10 == (
        "hammer-v3", "push-wall-v3", "faucet-close-v3", "push-back-v3", "stick-pull-v3",
        "handle-press-side-v3", "push-v3", "shelf-place-v3", "window-close-v3", "peg-unplug-side-v3",
    )  # fmt: skip
    assert CW20 == CW10 + CW10 and task_names("CW20") == CW20
    with pytest.raises(ConfigError, match="unknown sequence"):
        task_names("CW11")


def test_weld_fix_writes_metaworlds_weld_and_keeps_its_relative_pose():
    """metaworld's 11 numbers in the first slots; on mujoco >= 3.17 slot 11 is 0, so mj_setConst
    keeps the given relative pose instead of recomputing it from qpos0."""
    env = _Env()
    weld_fix(env)
    row = env.model.eq_data[0]
    np.testing.assert_array_equal(row[:11], [0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 5])
    assert row.shape == (mujoco.mjNEQDATA,) and not row[11:].any()
    data = mujoco.MjData(env.model)
    mujoco.mj_setConst(env.model, data)
    np.testing.assert_array_equal(env.model.eq_data[0, 3:10], [0, 0, 0, -1, 0, 0, 0])


@pytest.fixture(scope="module")
def cw():
    if MISSING is not None:
        pytest.skip(MISSING)
    env = ContinualWorldEnv(["hammer-v3", "push-wall-v3", "hammer-v3"])
    yield env
    env.close()


@needs_metaworld
def test_tasks_share_spaces_and_the_one_hot_id_follows_the_selection(cw):
    assert cw.observation_space.shape == (39 + 3,) and cw.action_space.shape == (4,)
    obs, info = cw.reset(seed=0)
    assert info["task"] == 0 and obs[-3:].tolist() == [1, 0, 0]
    cw.select(1)  # takes effect at the next reset, never inside an episode
    obs, _, _, _, info = cw.step(cw.action_space.sample())
    assert info["task"] == 0 and obs[-3:].tolist() == [1, 0, 0] and "success" in info
    obs, info = cw.reset()
    assert info["task"] == 1 and obs[-3:].tolist() == [0, 1, 0]
    assert cw.observation_space.contains(obs)
    cw.select(0)


@needs_metaworld
def test_random_init_all_and_seeding(cw):
    """New object/goal positions at every reset (Continual World's random_init_all), the same
    ones for the same seed."""
    cw.select(0)
    first = [cw.reset(seed=3)[0][:39], cw.reset()[0][:39]]
    again = [cw.reset(seed=3)[0][:39], cw.reset()[0][:39]]
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0][36:39], first[1][36:39]) or not np.array_equal(first[0][4:7], first[1][4:7])


@needs_metaworld
def test_the_cw10_catalog_env_switches_task_at_each_regime():
    env = gym.make("crl/CW10-v0", change_every=300)
    env.reset(seed=0)
    seen = []
    for _ in range(1200):
        _, _, term, trunc, info = env.step(env.action_space.sample())
        if term or trunc:
            assert env.unwrapped.active == info["drift/task"]
            seen.append(int(info["drift/task"]))
            env.reset()
    assert seen == [0, 0, 1, 1, 2, 2]  # 200-step episodes, a new task at the first end after 300 steps
    env.close()


@needs_metaworld
def test_the_task_id_option_gives_the_place_in_the_sequence_as_cws_one_hot():
    env = gym.make("crl/CW10-v0", change_every=300, task_id=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (39 + 10 + 10,) and obs[-10:].tolist() == obs[-20:-10].tolist()
    drift = find_drifts(env)[0]
    assert drift.n_tasks == 10 and [drift.task_index(r) for r in (0, 9, 10, 13)] == [0, 9, 0, 3]
    env.close()


def _rollout(env, actions):
    out = []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs.copy(), r, info["success"]))
        if term or trunc:
            out.append(env.reset()[0].copy())
    return out


@needs_metaworld
def test_checkpointed_state_replays_bit_for_bit():
    """get_env_state / set_env_state mid-episode, across a task switch: the same actions give the
    same observations, rewards and successes (physics, object placement, generators)."""
    env = gym.make("crl/CW10-v0", change_every=250)
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    _rollout(env, rng.uniform(-1, 1, (120, 4)))
    state = get_env_state(env)
    actions = rng.uniform(-1, 1, (400, 4))
    first = _rollout(env, actions)
    _rollout(env, rng.uniform(-1, 1, (300, 4)))  # move on: another task, other placements
    set_env_state(env, state)
    second = _rollout(env, actions)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True) if isinstance(a, tuple) else [(a, b)]:
            np.testing.assert_array_equal(x, y)
    env.close()


class _Scripted:
    """metaworld's scripted expert for one task (``None``: the arm stays still), as an SB3-like model."""

    def __init__(self, name):
        from metaworld.policies import ENV_POLICY_MAP

        self.policy = ENV_POLICY_MAP[name]() if name else None

    def predict(self, obs, deterministic=True):
        if self.policy is None:
            return np.zeros(4), None
        return np.clip(self.policy.get_action(obs[:39]), -1, 1), None


@needs_metaworld
def test_evaluation_reports_continual_worlds_success_rate():
    """An episode succeeds if any step has info["success"]: metaworld's expert solves
    window-close (task 8) in every episode, an arm that stays still never does."""
    env = gym.make("crl/CW10-v0")
    expert = evaluate_regimes(_Scripted("window-close-v3"), env, [8], episodes=3, seed=0)
    still = evaluate_regimes(_Scripted(None), env, [8], episodes=3, seed=0)
    assert expert["eval/regime_8/success"] == 1.0 and still["eval/regime_8/success"] == 0.0
    assert expert["eval/regime_8/return"] > still["eval/regime_8/return"]
    env.close()


def _args(root, steps=600):
    return [
        "train", "--env", "cw10", "--agent", "ppo", "--steps", str(steps),
        "--env-kwargs", "change_every=200",
        "--agent-kwargs", "n_steps=100", "batch_size=50", "n_epochs=1",
        "--eval-every", "300", "--eval-episodes", "1",
        "--checkpoint-every", "100", "--run-dir", str(root), "--wandb", "disabled", "--no-progress",
    ]  # fmt: skip


def _rows(path):
    with path.open() as f:
        return [{k: v for k, v in r.items() if k != "time/sps"} for r in csv.DictReader(f)]


@pytest.mark.expensive  # ~1.5 min idle; test_checkpointed_state_replays_bit_for_bit covers the env state
@needs_metaworld
def test_crl_train_on_cw10_resumes_exactly(tmp_path, monkeypatch):
    """Killed mid-task and resumed, the run logs what the uninterrupted run logs, success rates
    of the evaluations included."""
    import crl.run

    assert main(_args(tmp_path / "ref")) == 0
    original = crl.run.RegimeLogger._on_step

    def interrupting(self):
        if self.num_timesteps >= 350:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", interrupting)
    assert main(_args(tmp_path / "cut")) == 130
    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", original)
    assert main(_args(tmp_path / "cut")) == 0
    (ref,) = (tmp_path / "ref" / "default").iterdir()
    (cut,) = (tmp_path / "cut" / "default").iterdir()
    rows = _rows(ref / "metrics.csv")
    assert any(r.get("eval/regime_1/success") for r in rows)
    assert _rows(cut / "metrics.csv") == rows
    assert _rows(cut / "regimes.csv") == _rows(ref / "regimes.csv")
    tasks = {r["task"] for r in _rows(ref / "regimes.csv")}
    assert tasks >= {"0.0", "1.0", "2.0"}
