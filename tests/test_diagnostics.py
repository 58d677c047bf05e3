"""Plasticity diagnostics against hand-computed values, and the run-time monitor in a real run."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from crl import diagnostics as D


def test_half_dead_layer_has_dormant_fraction_half():
    rng = np.random.default_rng(0)
    h = np.abs(rng.normal(size=(256, 8))) + 0.1
    h[:, ::2] = 0.0
    assert D.tau_dormant_fraction(h, tau=0.0) == 0.5
    assert D.active_fraction(h) == 0.5
    rec = D.DormantRecord(8, window=1000)
    rec.update(h)
    assert rec.dormant_fraction() == 0.5


def test_tau_dormant_score_is_normalised_by_layer_mean():
    # mean|h| per unit = [1, 1, 1, 5]; layer mean 2; scores [0.5, 0.5, 0.5, 2.5]
    h = np.array([[1.0, -1.0, 1.0, 5.0], [1.0, 1.0, -1.0, 5.0]])
    assert D.tau_dormant_fraction(h, tau=0.5) == 0.75
    assert D.tau_dormant_fraction(h, tau=0.49) == 0.0


def test_dohare_record_uses_last_window_steps_only():
    rec = D.DormantRecord(2, window=100, threshold=0.01)
    rec.update(np.tile([[1.0, 1.0]], (100, 1)))  # both active
    assert rec.dormant_fraction() == 0.0
    rec.update(np.tile([[1.0, 0.0]], (99, 1)))  # unit 1 active in 1 of the last 100 steps: dormant
    assert rec.dormant_fraction() == 0.5
    s = rec.state()
    rec2 = D.DormantRecord(2, window=100)
    rec2.load(s)
    assert rec2.dormant_fraction() == 0.5


def test_ranks_of_constructed_matrices():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(256, 2)) @ rng.normal(size=(2, 32))
    assert D.srank(h) == 2
    # singular values 3, 1: srank with delta 0.01 needs both (3/4 < 0.99)
    h2 = np.diag([3.0, 1.0])
    assert D.srank(h2) == 2
    assert D.srank(np.diag([100.0, 0.5])) == 1  # 100/100.5 >= 0.99
    p = np.array([0.75, 0.25])
    assert D.effective_rank(h2) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert D.stable_rank(h2) == pytest.approx(10.0 / 9.0)
    assert D.effective_rank(np.eye(5)) == pytest.approx(5.0)


def test_norms_and_distances():
    assert D.feature_norm(np.array([[3.0, 4.0], [6.0, 8.0]])) == 7.5
    assert D.mean_abs_weight([torch.tensor([[1.0, -2.0], [3.0, -4.0]])]) == 2.5
    assert D.param_distance([torch.zeros(2), torch.zeros(1)], [torch.tensor([1.0, 2.0]), torch.tensor([2.0])]) == 3.0
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([2.0, 3.0, 6.0])
    assert D.grad_norm([p]) == 7.0


def test_hidden_layers_walks_linear_activation_pairs_and_layernorm():
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    assert [n for n, _, _ in D.hidden_layers(net)] == ["0", "3"]


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


def test_regime_summary_row_matches_metrics_file(tmp_path, crl_cli):
    """An end-to-end run with evaluation on, crossing a cyclic schedule A B A."""
    crl_cli(
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
        check=True,
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
    proc = crl_cli("metrics", str(run), "--json", check=True)
    import json

    (res,) = json.loads(proc.stdout).values()
    assert res["source"] == "eval"
    assert "0" in res["forgetting"]
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

    from tests._resume import check_resumes_exactly
    from tests.test_run import _train_args

    extra = ("--wandb", "disabled", "--diagnostics-every", "512", "--eval-every", "768", "--eval-episodes", "1")
    crl_cli(*_train_args(tmp_path / "ref", 3072, *extra), check=True)
    ref = tmp_path / "ref" / "default" / "slippery-ant__ppo__s3"
    cmd = _train_args(tmp_path / "killed", 3072, *extra)
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
    mon = D.RunMonitor(model, lambda s, r: None, lambda d: None, diagnostics_every=1)
    mon.diag = diag
    mon.collect_states()
    diag.refresh_probe()
    assert diag.probe.shape == (256, 3)
    before = torch.get_rng_state()
    row = diag.compute()
    assert torch.equal(before, torch.get_rng_state())
    assert {k.split("/")[1] for k in row} == {"actor", "critic_1", "critic_2"}
    assert {k.split("/")[2] for k in row} == {"0", "1"}
