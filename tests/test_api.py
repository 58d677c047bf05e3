"""The Python API of the README: make_agent, train with user callbacks, crl.callbacks in a
plain SB3 script, and ``crl train --env module:EnvId``."""

from __future__ import annotations

import csv
import os
import textwrap

import gymnasium as gym
import pandas as pd
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

import crl
from crl.plasticity import interventions_of


def _regime_rows(path):
    with open(path) as f:
        return [{k: r[k] for k in ("segment", "regime", "friction")} for r in csv.DictReader(f)]


def test_make_agent_builds_the_catalog_agent_with_its_interventions_and_one_thread():
    torch.set_num_threads(2)
    model = crl.make_agent("ppo-reset", gym.make("Pendulum-v1"), seed=3, learning_rate=3e-4, n_steps=64)
    assert type(model).__name__ == "FastPPO" and model.n_steps == 64 and model.learning_rate == 3e-4
    assert interventions_of(model).names == ["reset"] and interventions_of(model).boundary_aware
    assert torch.get_num_threads() == 1
    other = crl.make_agent("ppo", "CartPole-v1", overrides={"network.pi": [8]}, torch_threads=None)
    assert [m.out_features for m in other.policy.mlp_extractor.policy_net if hasattr(m, "out_features")] == [8]


class _Counter(BaseCallback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def _on_step(self):
        self.steps += 1
        return True


def test_train_runs_user_callbacks(tmp_path):
    counter = _Counter()
    cfg = crl.RunConfig(
        env="level-shift-cartpole",
        agent="ppo",
        steps=512,
        run_dir=str(tmp_path),
        wandb="disabled",
        progress=False,
        agent_kwargs={"n_steps": 128, "batch_size": 64, "n_epochs": 1},
    )
    res = crl.train(cfg, callbacks=[counter])
    assert res.status == "finished" and counter.steps == 512


def test_callbacks_in_a_plain_sb3_script_write_the_rows_crl_train_writes(tmp_path):
    """``PPO(...).learn(callback=crl.callbacks(dir))`` writes the regime sequence and the
    same kinds of rows as ``crl train`` on the same env and seed."""
    steps, change = 1536, 300
    env = gym.make("crl/SlipperyHopper-v0", change_every=change, drift_seed=0)
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=1, seed=0)
    model.learn(steps, callback=crl.callbacks(tmp_path / "plain", diagnostics_every=512))

    cfg = crl.RunConfig(
        env="slippery-hopper",
        agent="ppo",
        steps=steps,
        run_dir=str(tmp_path / "crl"),
        wandb="disabled",
        progress=False,
        diagnostics_every=512,
        env_kwargs={"change_every": change},
        agent_kwargs={"n_steps": 256, "batch_size": 64, "n_epochs": 1},
    )
    res = crl.train(cfg)
    plain, ours = tmp_path / "plain", res.run_dir
    n = min(len(_regime_rows(plain / "regimes.csv")), len(_regime_rows(ours / "regimes.csv")))
    assert n >= 3
    assert _regime_rows(plain / "regimes.csv")[:n] == _regime_rows(ours / "regimes.csv")[:n]
    cols_plain = set(pd.read_csv(plain / "metrics.csv").columns)
    cols_ours = set(pd.read_csv(ours / "metrics.csv").columns)
    kinds = ("charts/", "regime/", "plasticity/")
    assert {c for c in cols_plain if c.startswith(kinds)} == {c for c in cols_ours if c.startswith(kinds)}
    assert any(c.startswith("plasticity/policy/") for c in cols_plain)


def test_make_agent_and_callbacks_drive_the_interventions_at_regime_changes(tmp_path):
    env = gym.make("crl/LevelShiftCartPole-v0", change_every=200)
    model = crl.make_agent("ppo-reset", env, seed=0, n_steps=128, batch_size=64, n_epochs=1)
    head = model.policy.action_net.weight
    seen = []
    reset = interventions_of(model).interventions[0]
    original = reset.on_regime_change
    reset.on_regime_change = lambda regime: (seen.append(regime), original(regime))
    before = head.detach().clone()
    model.learn(768, callback=crl.callbacks(tmp_path, diagnostics_every=0))
    assert len(seen) >= 2
    assert not torch.equal(before, model.policy.action_net.weight)


def test_train_env_from_the_users_module(tmp_path, crl_cli):
    """``--env mypkg.envs:MyEnv-v0`` imports ``mypkg.envs`` first, which registers the env."""
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "envs.py").write_text(
        textwrap.dedent(
            """
            import crl

            crl.register_drifting(
                "mypkg/ShiftedCartPole-v0", base="CartPole-v1", drifts=[{"level_shift": {}}],
                schedule={"every_n_steps": {"change_every": 200}},
            )
            """
        )
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    args = ["train", "--env", "mypkg.envs:mypkg/ShiftedCartPole-v0", "--agent", "ppo", "--steps", "256"]
    args += ["--agent-kwargs", "n_steps=128", "batch_size=64", "n_epochs=1", "--wandb", "disabled"]
    args += ["--run-dir", str(tmp_path / "runs"), "--no-progress"]
    out = crl_cli(*args, env=env, check=True)
    assert "finished" in out.stdout
    bad = crl_cli("train", "--env", "nopkg.nomod:X-v0", "--agent", "ppo", "--run-dir", str(tmp_path / "r"))
    assert bad.returncode == 2 and "cannot import module 'nopkg.nomod'" in bad.stderr
    assert not (tmp_path / "r").exists()
