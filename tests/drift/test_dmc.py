"""Continual DMC (crl.drift.dmc + task_sequence): Plasticine's sequences of DeepMind Control
tasks, flat float32 observations, DMC's 1000-step episodes, seeding, exact state, evaluation per
task, exact resume after kill -9 and a run from ``crl sweep``.

Most tests need the optional ``dm_control`` and ``shimmy`` (``pip install "crl[dmc]"``,
docs/envs.md); they are skipped with the reason where they are absent.
"""

from __future__ import annotations

import json
import random

import gymnasium as gym
import numpy as np
import pytest

from crl.checkpoint import get_env_state, set_env_state
from crl.diagnostics.evaluation import evaluate_regimes
from crl.drift import find_drifts
from crl.drift.dmc import EPISODE_STEPS, PASSES, SEQUENCES, DMCEnv, dmc_id, dmc_missing
from crl.errors import ConfigError
from tests._resume import check_resumes_exactly, rows
from tests.conftest import run_crl

MISSING = dmc_missing()
needs_dmc = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
WALKER = "crl/ContinualDMCWalker-v0"


def test_the_sequences_are_plasticines():
    """Plasticine's ContinualDMC.ENV_NAME_DICT: each list is a cycle of one domain's tasks."""
    assert SEQUENCES == {
        "walker": ("stand", "walk", "run"),
        "quadruped": ("walk", "run"),
        "dog": ("stand", "walk", "run", "trot"),
    }
    assert {d: len(SEQUENCES[d]) * PASSES[d] for d in SEQUENCES} == {"walker": 6, "quadruped": 6, "dog": 8}
    for domain, tasks in SEQUENCES.items():
        for task in tasks:
            assert gym.spec(dmc_id(domain, task)).max_episode_steps == EPISODE_STEPS == 1000


def _catalog_tasks(env_id: str) -> list[str]:
    spec = gym.spec(env_id)
    return [spec.kwargs["base"], *spec.kwargs["drifts"][0]["task_sequence"]["tasks"]]


@pytest.mark.parametrize("domain", ["walker", "quadruped", pytest.param("dog", marks=pytest.mark.expensive)])
def test_every_task_of_a_domain_has_the_same_flat_float32_spaces(domain):
    if MISSING is not None:
        pytest.skip(MISSING)
    env_id = f"crl/ContinualDMC{domain.title()}-v0"
    assert _catalog_tasks(env_id) == [dmc_id(domain, t) for t in SEQUENCES[domain]]
    env = gym.make(env_id)
    inner = env.unwrapped
    obs, _ = env.reset(seed=0)
    assert env.observation_space.dtype == np.float32 and obs.dtype == np.float32
    assert env.action_space.dtype == np.float32 and env.observation_space.contains(obs)
    # the flat observation is shimmy's dict, flattened in its space's order
    raw = inner._dmc._env.task.get_observation(inner.physics)
    np.testing.assert_array_equal(obs, np.concatenate([np.ravel(raw[k]) for k in sorted(raw)]).astype(np.float32))
    env.close()


@needs_dmc
def test_episodes_are_dmcs_1000_steps_and_end_truncated():
    env = DMCEnv("walker", "walk")
    env.reset(seed=1)
    ends = []
    for t in range(1, 1001):
        _, r, term, trunc, info = env.step(np.zeros(6, np.float32))
        assert 0.0 <= r <= 1.0 and not term and info["discount"] == 1.0
        if trunc:
            ends.append(t)
    assert ends == [1000]
    env.close()


@needs_dmc
def test_unknown_task_is_refused_with_examples():
    with pytest.raises(ConfigError, match=r"unknown DMC task walker-fly; e\.g\. walker-stand"):
        DMCEnv("walker", "fly")


def _rollout(env, actions):
    out = []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs.copy(), r, info["drift/task"]))
        if term or trunc:
            out.append((env.reset()[0].copy(), 0.0, -1.0))
    return out


@needs_dmc
def test_the_catalog_env_runs_each_task_from_the_episode_after_the_change():
    """Regime k runs task k (stand, walk, run) from the first episode end after each change;
    the other tasks have task 0's episode limit."""
    env = gym.make(WALKER, change_every=250, episode_steps=100)
    env.reset(seed=0)
    seen = []
    for _ in range(800):
        _, _, term, trunc, info = env.step(env.action_space.sample())
        if term or trunc:
            (seq,) = find_drifts(env)
            seen.append((int(info["drift/task"]), seq.env.unwrapped.task))
            env.reset()
    assert seen == [(0, "stand")] * 3 + [(1, "walk")] * 3 + [(2, "run")] * 2
    env.close()


@needs_dmc
def test_a_seeded_reset_seeds_every_task():
    """Two envs reset with the same seed run the same episodes after a switch; another seed
    starts the switched-in task elsewhere."""
    actions = np.random.default_rng(0).uniform(-1, 1, (150, 6)).astype(np.float32)
    runs = []
    for seed in (4, 4, 5):
        env = gym.make(WALKER, change_every=50, episode_steps=50)
        env.reset(seed=seed)
        runs.append(_rollout(env, actions))
        env.close()
    assert [t for _, _, t in runs[0] if t >= 0][-1] == 2.0
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    assert not np.array_equal(runs[0][-1][0], runs[2][-1][0])


@needs_dmc
def test_checkpointed_state_replays_bit_for_bit_in_a_fresh_env():
    """get_env_state mid-episode of task 1, set_env_state into a new env (which starts on task
    0): the same actions give the same observations, rewards and tasks, across the next switch."""
    rng = np.random.default_rng(1)
    env = gym.make(WALKER, change_every=150, episode_steps=100)
    env.reset(seed=2)
    _rollout(env, rng.uniform(-1, 1, (230, 6)).astype(np.float32))
    state = get_env_state(env)
    actions = rng.uniform(-1, 1, (300, 6)).astype(np.float32)
    first = _rollout(env, actions)
    assert {t for _, _, t in first} >= {1.0, 2.0}
    fresh = gym.make(WALKER, change_every=150, episode_steps=100)
    fresh.reset(seed=9)
    set_env_state(fresh, state)
    second = _rollout(fresh, actions)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    env.close()
    fresh.close()


class _Still:
    def predict(self, obs, deterministic=True):
        return np.zeros(6, np.float32), None


@needs_dmc
def test_evaluation_gives_each_tasks_return():
    """eval/regime_<k>/return for stand, walk and run: a walker that does nothing is rewarded
    for its height by stand only, and the numbers repeat."""
    env = gym.make(WALKER, episode_steps=100)
    first = evaluate_regimes(_Still(), env, [0, 1, 2], episodes=2, seed=0)
    again = evaluate_regimes(_Still(), env, [0, 1, 2], episodes=2, seed=0)
    assert first == again and set(first) == {f"eval/regime_{k}/return" for k in (0, 1, 2)}
    assert first["eval/regime_0/return"] > first["eval/regime_1/return"] > first["eval/regime_2/return"]
    env.close()


#: TD3 with small networks, so that the runs below take seconds (the preset's are 400x300).
SMALL_TD3 = {
    "learning_starts": 100,
    "buffer_size": 2000,
    "batch_size": 32,
    "network.pi": [64, 64],
    "network.qf": [64, 64],
}


def _train(run_dir, steps=1200):
    return [
        "train", "--env", "cdmc-walker", "--agent", "td3", "--steps", str(steps), "--seed", "1",
        "--env-kwargs", "change_every=300", "episode_steps=100",
        "--agent-kwargs", *(f"{k}={v}".replace(" ", "") for k, v in SMALL_TD3.items()),
        "--eval-every", "600", "--eval-episodes", "1",
        "--checkpoint-every", "150", "--run-dir", str(run_dir), "--wandb", "disabled", "--no-progress",
    ]  # fmt: skip


@pytest.mark.expensive  # ~1 min idle; test_td3_on_continual_dmc_runs_from_crl_sweep stays in the default run
@needs_dmc
def test_td3_on_continual_dmc_resumes_exactly_after_kill_9(tmp_path):
    """The uninterrupted run, then the same run killed at random and resumed: the same rows,
    task switches and per-task evaluations included."""
    run_crl(*_train(tmp_path / "ref"), check=True)
    (ref,) = (tmp_path / "ref" / "default").iterdir()
    metrics = rows(ref / "metrics.csv")
    assert {r["regime"] for r in rows(ref / "regimes.csv")} == {"0", "1", "2"}
    assert any(r.get("eval/regime_2/return") for r in metrics)
    run = tmp_path / "cut" / "default" / ref.name
    check_resumes_exactly(_train(tmp_path / "cut"), run, ref, random.Random(0), steps=(250, 1000))


@needs_dmc
def test_td3_on_continual_dmc_runs_from_crl_sweep(tmp_path):
    import yaml

    sweep = {
        "description": "tiny td3 sweep on Continual DMC",
        "envs": ["cdmc-quadruped"],
        "agents": ["td3"],
        "seeds": 1,
        "steps": 400,
        "env_kwargs": {"change_every": 200, "episode_steps": 100},
        "agent_kwargs": SMALL_TD3,
        "checkpoint_every": 200,
        "wandb": "disabled",
        "run": {"eval_every": 200, "eval_episodes": 1},
    }
    f = tmp_path / "cdmc.yaml"
    f.write_text(yaml.safe_dump(sweep))
    proc = run_crl("sweep", str(f), "--run-dir", str(tmp_path / "runs"), "--workers", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "cdmc" / "cdmc-quadruped__td3__s0"
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "finished" and status["global_step"] == 400
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "losses/actor_loss" in header and "eval/regime_1/return" in header
