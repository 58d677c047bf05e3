"""The run-time monitor: Diagnostics on real SB3 models, and in real runs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from crl import diagnostics as D
from crl.run.callbacks.diagnostics import recent_states


def test_hidden_layers_walks_linear_activation_pairs_and_layernorm():
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    assert [layer.path for layer in D.hidden_layers(net)] == ["0", "3"]


def test_diagnostics_on_a_real_ppo_model_and_its_state_round_trip():
    import gymnasium as gym
    from stable_baselines3 import PPO

    model = PPO(
        "MlpPolicy",
        gym.make("Pendulum-v1"),
        n_steps=64,
        batch_size=32,
        n_epochs=1,
        seed=0,
        policy_kwargs={"activation_fn": nn.ReLU},
    )
    diag = D.Diagnostics(model, probe_size=256)
    diag.add_states(np.random.default_rng(0).normal(size=(300, 3)))
    diag.refresh_probe()
    assert diag.probe.shape == (256, 3)
    row = diag.compute()
    for net in ("policy", "value"):
        for layer in (0, 1):
            p = f"plasticity/{net}/{layer}/"
            assert row[p + "dist_from_init"] == 0.0
            assert 0.0 <= row[p + "dormant_tau"] <= 1.0
            assert 1 <= row[p + "srank"] <= 64
    model.learn(64)
    diag.after_update()
    row2 = diag.compute()
    assert row2["plasticity/policy/0/dist_from_init"] > 0.0
    assert row2["plasticity/policy/0/weight_change"] == pytest.approx(row2["plasticity/policy/0/dist_from_init"])
    s = diag.state()
    other = D.Diagnostics(model, probe_size=256)
    other.load(s)
    assert other.compute() == pytest.approx(diag.compute())


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_regime_summary_row_matches_metrics_file(tmp_path, capsys):
    """An end-to-end run with evaluation on, crossing a cyclic schedule A B A (``crl train`` and
    ``crl metrics`` through their entry point in this process, as tests._resume.train_here)."""
    from crl.cli import main
    from tests._resume import train_here

    train_here(
        "train",
        "--env",
        "slippery-ant",
        "--agent",
        "ppo",
        "--steps",
        "2048",
        "--seed",
        "2",
        "--env-kwargs",
        "change_every=600",
        "episode_steps=100",
        "schedule=cyclic",
        "--agent-kwargs",
        "n_steps=256",
        "batch_size=64",
        "n_epochs=1",
        "--diagnostics-every",
        "512",
        "--eval-every",
        "512",
        "--eval-episodes",
        "1",
        "--run-dir",
        str(tmp_path),
        "--no-progress",
        "--wandb",
        "disabled",
    )
    (run,) = (tmp_path / "default").iterdir()
    regimes = _read(run / "regimes.csv")
    rows = _read(run / "metrics.csv")
    assert [int(r["regime"]) for r in regimes][:3] == [0, 1, 0]
    header = rows[0].keys()
    assert "eval/regime_0/return" in header and "eval/regime_1/return" in header
    assert "plasticity/policy/0/srank" in header and "plasticity/value/1/dormant_dohare" in header
    for reg in regimes[:2]:
        seg, start, end = int(reg["segment"]), int(reg["start_step"]), int(reg["end_step"])
        eps = [
            (int(r["global_step"]), float(r["charts/episodic_return"]))
            for r in rows
            if r["charts/episodic_return"] and int(float(r["regime/segment"])) == seg
        ]
        late = [v for s, v in eps if s >= end - 0.1 * (end - start)] or [eps[-1][1]]
        assert float(reg["final_return"]) == pytest.approx(np.mean(late))
        assert float(reg["best_return"]) == pytest.approx(max(v for _, v in eps))
        assert int(reg["episodes"]) == len(eps)
    assert "steps_to_reach" in regimes[1] and regimes[0]["steps_to_reach"] == ""  # no previous regime
    capsys.readouterr()
    assert main(["metrics", str(run), "--json"]) == 0
    import json

    (res,) = json.loads(capsys.readouterr().out).values()
    assert res["source"] == "eval"
    assert "0" in res["forgetting_by_regime"]
    assert np.isfinite(res["average_performance"]) and np.isfinite(res["plasticity_score"])


def _train_rows(path, prefixes=("plasticity/", "eval/", "time/")):
    return [{k: v for k, v in r.items() if not k.startswith(prefixes)} for r in _read(path)]


def test_diagnostics_and_evaluation_do_not_change_training(tmp_path):
    from crl.run import RunConfig, train

    base = dict(
        env="slippery-ant",
        agent="ppo",
        seed=4,
        steps=1536,
        env_kwargs={"change_every": 500, "episode_steps": 100, "schedule": "cyclic"},
        agent_kwargs={"n_steps": 256, "batch_size": 64, "n_epochs": 1},
        wandb="disabled",
        progress=False,
    )
    off = train(RunConfig(**base, run_dir=str(tmp_path / "off"), diagnostics_every=0))
    on = train(RunConfig(**base, run_dir=str(tmp_path / "on"), diagnostics_every=256, eval_every=512, eval_episodes=1))

    def kept(path):  # training rows (rows holding only diagnostics are dropped)
        return [r for r in _train_rows(path) if any(v for k, v in r.items() if k != "global_step")]

    rows_on, rows_off = kept(on.run_dir / "metrics.csv"), kept(off.run_dir / "metrics.csv")
    assert len(rows_on) > 10 and rows_on == rows_off
    head = _read(on.run_dir / "metrics.csv")[0].keys()
    assert "eval/regime_0/return" in head and "plasticity/policy/0/srank" in head


@pytest.mark.expensive
def test_kill_and_resume_with_diagnostics_matches_uninterrupted_run(tmp_path, crl_cli):
    import random

    from tests._resume import check_resumes_exactly, train_args

    extra = ("--wandb", "disabled", "--diagnostics-every", "512", "--eval-every", "768", "--eval-episodes", "1")
    crl_cli(*train_args(tmp_path / "ref", 3072, *extra), check=True)
    ref = tmp_path / "ref" / "default" / "slippery-ant__ppo__s3"
    cmd = train_args(tmp_path / "killed", 3072, *extra)
    check_resumes_exactly(cmd, tmp_path / "killed" / "default" / "slippery-ant__ppo__s3", ref, random.Random(7))


def test_sac_actor_and_both_critics_are_found_and_rng_is_untouched():
    import gymnasium as gym
    from stable_baselines3 import SAC

    model = SAC(
        "MlpPolicy",
        gym.make("Pendulum-v1"),
        learning_starts=10,
        buffer_size=500,
        seed=0,
        policy_kwargs={"net_arch": [16, 16]},
    )
    model.learn(300)
    diag = D.Diagnostics(model, probe_size=256)
    diag.add_states(recent_states(model, 256))
    diag.refresh_probe()
    assert diag.probe.shape == (256, 3)
    before = torch.get_rng_state()
    row = diag.compute()
    assert torch.equal(before, torch.get_rng_state())
    assert {k.split("/")[1] for k in row} == {"actor", "critic_1", "critic_2"}
    assert {k.split("/")[2] for k in row} == {"0", "1"}


def test_a_crelu_run_logs_plasticity_rows(tmp_path):
    from crl.run import RunConfig, train

    run = train(
        RunConfig(
            env="slippery-ant",
            agent="ppo-crelu",
            seed=0,
            steps=256,
            env_kwargs={"change_every": 200, "episode_steps": 100},
            agent_kwargs={"n_steps": 128, "batch_size": 64, "n_epochs": 1},
            wandb="disabled",
            progress=False,
            run_dir=str(tmp_path),
            diagnostics_every=128,
        )
    )
    head = _read(run.run_dir / "metrics.csv")[0].keys()
    assert {"plasticity/policy/1/dormant_dohare", "plasticity/value/0/srank", "plasticity/value/1/grad_norm"} <= head
