"""The multi-task reference: the ``uniform`` schedule (a regime drawn per episode from the whole
set, seeded, exact state) and the ``multitask-halfcheetah`` catalog env trained through ``crl train``."""

from __future__ import annotations

import csv
import json

import gymnasium as gym
import numpy as np
import pytest

import crl  # noqa: F401  (registers the catalog's ids)
from crl.cli import main
from crl.drift.schedules import Uniform, make_schedule
from crl.errors import ConfigError
from crl.seeding import generator


def _episodes(s: Uniform, n: int, length: int = 3) -> list[int]:
    """The regime of each of ``n`` episodes of ``length`` steps (the regime in force during it)."""
    out = []
    for _ in range(n):
        regime = s.regime()
        for t in range(length):
            assert s.regime() == regime  # no change inside an episode
            s.advance(1, episode_end=t == length - 1)
        out.append(regime)
    return out


def test_a_regime_is_drawn_uniformly_for_every_episode():
    s = Uniform(regimes=[2, 5, 7])
    s.seed(11)
    draws = _episodes(s, 3000)
    assert s.segment == 3000 and s.total_steps == 9000
    # the formula: segment k's regime is regimes[generator(drift_seed, "uniform", k).integers(3)]
    assert draws[:50] == [[2, 5, 7][int(generator(11, "uniform", k).integers(3))] for k in range(50)]
    counts = np.array([draws.count(r) for r in (2, 5, 7)])
    assert counts.sum() == 3000
    assert np.all(np.abs(counts - 1000) < 5 * np.sqrt(3000 * (1 / 3) * (2 / 3)))  # binomial, 5 sd
    assert np.mean(np.diff(draws) != 0) > 0.5  # independent draws: the regime changes often (2/3)
    other = Uniform(regimes=[2, 5, 7])
    other.seed(12)
    assert _episodes(other, 50) != draws[:50]
    again = Uniform(regimes=[2, 5, 7])
    again.seed(11)
    assert _episodes(again, 50) == draws[:50]


def test_state_round_trip_continues_exactly():
    s = Uniform(regimes=[0, 1, 2, 3])
    s.seed(3)
    _episodes(s, 40)
    for _ in range(2):
        s.advance(1)  # inside an episode
    state = json.loads(json.dumps(s.get_state()))
    expected = _episodes(s, 60)
    t = Uniform(regimes=[0, 1, 2, 3])
    t.seed(99)  # another seed: the state brings back the right one
    t.set_state(state)
    assert (t.segment, t.since_change, t.total_steps) == (40, 2, 122)
    assert _episodes(t, 60) == expected


def test_segment_of_moves_forward_to_a_draw_of_that_regime():
    s = Uniform(regimes=[0, 1])
    s.seed(0)
    _episodes(s, 7)
    for regime in (0, 1):
        seg = s.segment_of(regime)
        assert seg >= 7 and s.regime(seg) == regime
        assert all(s.regime(k) != regime for k in range(7, seg))
    with pytest.raises(ConfigError, match="regime 4 is not one of the regimes"):
        s.segment_of(4)


@pytest.mark.parametrize(
    "regimes,message",
    [([], "non-empty list"), ("01", "non-empty list"), ([0, -1], "regimes\\[1\\]"), ([0, 1.5], "regimes\\[1\\]")],
)
def test_invalid_regimes(regimes, message):
    with pytest.raises(ConfigError, match=message):
        make_schedule({"uniform": {"regimes": regimes}})


def test_config_round_trip():
    s = make_schedule({"uniform": {"regimes": [1, 3]}})
    assert s.config() == {"uniform": {"regimes": [1, 3]}}
    assert make_schedule(s.config()).regimes == [1, 3]
    assert make_schedule("uniform").regimes == [0, 1]


def test_multitask_halfcheetah_draws_forward_or_backward_per_episode():
    env = gym.make("crl/MultiTaskHalfCheetah-v0", episode_steps=10, drift_seed=5)
    env.reset(seed=0)
    episodes: list[set[int]] = [set()]
    sign = {}
    for _ in range(400):
        _, _, term, trunc, info = env.step(env.action_space.sample())
        episodes[-1].add(info["regime"])
        sign.setdefault(info["regime"], set()).add(np.sign(info["drift/direction"]))
        if term or trunc:
            env.reset()
            episodes.append(set())
    episodes = [e for e in episodes if e]
    assert len(episodes) == 40 and all(len(e) == 1 for e in episodes)
    regimes = [next(iter(e)) for e in episodes]
    assert set(regimes) == {0, 1} and 10 <= regimes.count(0) <= 30
    assert sign == {0: {1.0}, 1: {-1.0}}  # forward, backward: cyclic-halfcheetah's two tasks


def _rows(path):
    with path.open() as f:
        return [{k: v for k, v in r.items() if k != "time/sps"} for r in csv.DictReader(f)]


def _args(root) -> list[str]:
    return [
        "train",
        "--env",
        "multitask-halfcheetah",
        "--agent",
        "ppo",
        "--steps",
        "640",
        "--env-kwargs",
        "episode_steps=50",
        "--agent-kwargs",
        "n_steps=128",
        "batch_size=64",
        "n_epochs=2",
        "--checkpoint-every",
        "128",
        "--eval-every",
        "256",
        "--eval-episodes",
        "1",
        "--run-dir",
        str(root),
        "--wandb",
        "disabled",
        "--no-progress",
    ]


def test_crl_train_on_the_multitask_env_resumes_exactly(tmp_path, monkeypatch):
    """A per-episode regime through ``crl train``: regimes.csv has a segment per episode, both
    regimes evaluated; a run killed mid-way and resumed logs exactly what the uninterrupted one did."""
    import crl.run

    assert main(_args(tmp_path / "ref")) == 0
    original = crl.run.RegimeLogger._on_step

    def interrupting(self):
        if self.num_timesteps >= 330:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", interrupting)
    assert main(_args(tmp_path / "cut")) == 130
    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", original)
    assert main(_args(tmp_path / "cut")) == 0
    (ref,) = (tmp_path / "ref" / "default").iterdir()
    (cut,) = (tmp_path / "cut" / "default").iterdir()
    regimes = _rows(ref / "regimes.csv")
    assert len(regimes) >= 12 and {r["regime"] for r in regimes} == {"0", "1"}
    metrics = _rows(ref / "metrics.csv")
    assert any(r.get("eval/regime_0/return") for r in metrics) and any(r.get("eval/regime_1/return") for r in metrics)
    assert _rows(cut / "metrics.csv") == metrics
    assert _rows(cut / "regimes.csv") == regimes


def _tiny(env: str, agent: str, root, *env_kwargs: str) -> list[str]:
    return [
        "train", "--env", env, "--agent", agent, "--steps", "256", "--env-kwargs", "episode_steps=50", *env_kwargs,
        "--agent-kwargs", "n_steps=128", "batch_size=64", "n_epochs=1",
        "--run-dir", str(root), "--wandb", "disabled", "--no-progress",
    ]  # fmt: skip


def test_metrics_and_compare_mark_the_references(tmp_path, capsys):
    """``crl compare`` and ``crl metrics`` name the multi-task run (uniform schedule) and the plain
    agent on the sequence (fine-tuning) as references; a method gets no mark."""
    assert main(_tiny("multitask-halfcheetah", "ppo", tmp_path)) == 0
    assert main(_tiny("cyclic-halfcheetah", "ppo", tmp_path, "change_every=100")) == 0
    assert main(_tiny("cyclic-halfcheetah", "ppo-l2", tmp_path, "change_every=100")) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path), "--json", "--reps", "50"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    marks = {(g["env"], g["agent"]): g["reference"] for g in groups}
    assert marks == {
        ("multitask-halfcheetah", "ppo"): "multi-task",
        ("cyclic-halfcheetah", "ppo"): "fine-tuning",
        ("cyclic-halfcheetah", "ppo-l2"): "",
    }
    assert main(["metrics", str(tmp_path), "--json"]) == 0
    per_run = json.loads(capsys.readouterr().out)
    assert sorted(r["reference"] for r in per_run.values()) == ["", "fine-tuning", "multi-task"]
    assert main(["compare", str(tmp_path), "--reps", "50"]) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "fine-tuning = the plain agent" in out and "multi-task" in out
