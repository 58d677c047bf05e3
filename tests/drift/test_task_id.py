"""Task identity as an observation: the ``task_id`` option of every drifting env, the schedules'
distinct regimes, and an agent that observes it (``task_id: true``) trained by ``crl train``."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import yaml

import crl
from crl.cli import main
from crl.drift import TaskIdObservation, TaskSequence, find_drifts, make_drifting, make_schedule
from crl.errors import ConfigError

CYCLIC = {"cyclic": {"change_every": 10, "cycle": [3, 5], "align": "exact"}}


def _cartpole(schedule, **kwargs) -> gym.Env:
    return make_drifting("CartPole-v1", drifts=[{"level_shift": {}}], schedule=schedule, **kwargs)


def _task(obs: np.ndarray, n: int) -> int:
    one_hot = obs[-n:]
    assert sorted(one_hot.tolist()) == [0.0] * (n - 1) + [1.0]
    return int(one_hot.argmax())


@pytest.mark.parametrize(
    ("spec", "ids"),
    [
        (None, [0]),
        ({"every_n_steps": {"change_every": 5}}, None),
        ({"gradual": {"change_every": 5, "window": 2}}, None),
        ({"random_walk": {"every": 5}}, None),
        ({"cyclic": {"cycle": [3, 5, 3, 1]}}, [3, 5, 1]),
        ({"explicit": {"changes": [[5, 2], [9, 0], [12, 2]], "initial": 0}}, [0, 2]),
        ({"uniform": {"regimes": [4, 2]}}, [4, 2]),
    ],
)
def test_each_schedule_names_its_distinct_regimes_in_order_of_first_appearance(spec, ids):
    assert make_schedule(spec).regime_ids() == ids


def test_a_revisited_regime_keeps_the_id_of_its_first_visit_and_pinning_a_regime_pins_its_id():
    env = _cartpole(CYCLIC, task_id=True)
    assert env.observation_space.shape == (6,)
    obs, _ = env.reset(seed=0)
    seen = []
    for _ in range(45):  # segments of 10 steps: regimes 3, 5, 3, 5, 3
        seen.append((find_drifts(env)[0].regime, _task(obs, 2)))
        obs, _, term, trunc, _ = env.step(0)
        if term or trunc:
            obs, _ = env.reset()
    assert {(3, 0), (5, 1)} == set(seen)
    assert [t for _, t in seen[::10]] == [0, 1, 0, 1, 0]
    find_drifts(env)[0].set_regime(5)
    obs, _ = env.reset()
    assert _task(obs, 2) == 1 and _task(env.step(0)[0], 2) == 1


def test_the_observation_is_the_drifted_one_with_the_one_hot_appended():
    plain, tagged = _cartpole(CYCLIC), _cartpole(CYCLIC, task_id=True)
    a, _ = plain.reset(seed=3)
    b, _ = tagged.reset(seed=3)
    for _ in range(25):
        np.testing.assert_array_equal(a, b[:4])
        assert b.dtype == a.dtype and b in tagged.observation_space
        a, b = plain.step(1)[0], tagged.step(1)[0]


def test_a_task_sequence_gives_the_task_place_in_the_sequence():
    env = TaskSequence(
        gym.make("CartPole-v1"), tasks=["CartPole-v0", "CartPole-v1"], schedule={"every_n_steps": {"change_every": 3}}
    )
    assert env.n_tasks == 3 and [env.task_index(r) for r in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    tagged = TaskIdObservation(env)
    assert tagged.observation_space.shape == (7,)


def test_an_unbounded_schedule_needs_a_number_of_ids_and_stops_in_one_line_beyond_it():
    with pytest.raises(ConfigError, match="no fixed set of regimes; give the number of task ids"):
        _cartpole({"every_n_steps": {"change_every": 5, "align": "exact"}}, task_id=True)
    env = _cartpole({"every_n_steps": {"change_every": 5, "align": "exact"}}, task_id=2)
    env.reset(seed=0)
    with pytest.raises(ConfigError, match=r"regime 2 is task 2, but only 2 task ids were asked for"):
        for _ in range(15):
            env.step(0)


@pytest.mark.parametrize(("value", "match"), [("yes", "task_id must be true, false or a number"), (0, "task_id")])
def test_bad_task_id_values_are_one_line_errors(value, match):
    with pytest.raises(ConfigError, match=match):
        _cartpole(CYCLIC, task_id=value)


def test_an_env_without_drift_or_with_a_non_flat_observation_is_refused():
    with pytest.raises(ConfigError, match="no drift"):
        TaskIdObservation(gym.make("CartPole-v1"))


def test_an_agent_that_observes_the_task_id_is_told_how_many_and_its_evaluations_see_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    agent = tmp_path / "ppo-task.yaml"
    spec = {"description": "ppo with the task id", "task_id": True, "network": {"pi": [8], "vf": [8]}}
    agent.write_text(yaml.safe_dump({**spec, "hyperparameters": {"n_steps": 64, "batch_size": 32}}))
    code = main(
        ["train", "--env", "level-shift-cartpole", "--agent", str(agent), "--steps", "256", "--wandb", "disabled",
         "--env-kwargs", "schedule={cyclic: {change_every: 64, cycle: [0, 1], align: exact}}",
         "--eval-every", "128", "--eval-episodes", "1", "--run-dir", str(tmp_path / "runs"), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    (run,) = (tmp_path / "runs").glob("*/*")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["env"]["make_kwargs"]["task_id"] is True
    assert config["agent"]["network"]["tasks"] == 2 and config["agent"]["task_id"] is True
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "finished"
    model = crl.make_agent(str(agent), _cartpole(CYCLIC, task_id=True), seed=0)
    assert model.observation_space.shape == (6,)


def test_an_agent_that_observes_the_task_id_on_an_env_without_regimes_is_refused(tmp_path):
    agent = tmp_path / "a.yaml"
    agent.write_text(yaml.safe_dump({"description": "x", "task_id": True}))
    with pytest.raises(ConfigError, match="observes the task id, its env gives none"):
        crl.make_agent(str(agent), gym.make("CartPole-v1"))
