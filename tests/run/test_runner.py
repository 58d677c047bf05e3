"""End-to-end runs through the real ``crl train`` command: files, resume, failures."""

from __future__ import annotations

import itertools
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from crl.errors import NonFiniteLossError
from crl.run import RunConfig, train
from crl.run.status import read_status, write_status
from tests._resume import check_resumes_exactly, rows, train_args, train_here
from tests.conftest import ROOT


def test_train_writes_every_file_and_crosses_regimes(tmp_path, crl_cli):
    proc = crl_cli(
        *train_args(tmp_path, 2560, "--wandb", "offline", "--experiment", "e2e"), check=True, env={"WANDB_MODE": None}
    )
    run = tmp_path / "e2e" / "slippery-ant__ppo__s3"
    assert str(run) in proc.stdout
    for name in ("config.yaml", "metrics.csv", "regimes.csv", "status.json", "model.zip", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "finished" and status["global_step"] == 2560 and status["error"] is None
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["agent"]["hyperparameters"]["n_steps"] == 256  # override applied and visible
    assert config["agent"]["optimizer"] == {"name": "adam", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
    assert config["env"]["make_kwargs"]["schedule"] == {"every_n_steps": {"change_every": 700, "align": "episode_end"}}
    assert config["env"]["make_kwargs"]["drift_seed"] == 3 and config["seed"] == 3
    regimes = rows(run / "regimes.csv")
    assert len(regimes) >= 3, regimes  # at least two changes
    for a, b in itertools.pairwise(regimes):
        assert a["end_step"] == b["start_step"]
        assert int(b["start_step"]) - int(a["start_step"]) >= 700
    env = gym.make("crl/SlipperyAnt-v0", drift_seed=3)
    for r in regimes:
        assert float(r["friction"]) == pytest.approx(env.regime_params(int(r["regime"]))["friction"])
    metrics = rows(run / "metrics.csv", drop=())
    episodes = [r for r in metrics if r["charts/episodic_return"]]
    assert episodes and all(r["regime/index"] and r["regime/friction"] for r in episodes)
    assert {r["regime/index"] for r in episodes} >= {"0", "1", "2"}
    losses = [r for r in metrics if r["losses/value_loss"]]
    assert len(losses) == 2560 // 256 and all(float(r["time/sps"]) > 0 for r in losses)
    steps = [int(r["global_step"]) for r in metrics]
    assert steps == sorted(steps)
    # the real wandb run, offline, in the run folder
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline and any(p.suffix == ".wandb" for p in offline[0].iterdir())


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, crl_cli):
    steps = 1536  # 6 rollouts, regime changes at 700 and 1400
    train_here(*train_args(tmp_path / "ref", steps, "--wandb", "disabled"))
    ref = tmp_path / "ref" / "default" / "slippery-ant__ppo__s3"
    cmd = train_args(tmp_path / "killed", steps, "--wandb", "disabled")
    check_resumes_exactly(
        cmd, tmp_path / "killed" / "default" / "slippery-ant__ppo__s3", ref, steps=(600, 1280), resume_here=True
    )


def test_a_run_killed_after_its_final_checkpoint_writes_its_last_rows_when_resumed(tmp_path):
    """A kill between the checkpoint of a run's end (taken first when training ends) and the
    rows the other callbacks write after it (the last update's losses): the resumed run has no
    step left to train and still writes those rows, once, as the uninterrupted run did."""
    steps = 512
    train_here(*train_args(tmp_path / "ref", steps, "--wandb", "disabled"))
    ref = tmp_path / "ref" / "default" / "slippery-ant__ppo__s3"
    cut = train_args(tmp_path / "cut", steps, "--wandb", "disabled")
    train_here(*cut)
    run = tmp_path / "cut" / "default" / "slippery-ant__ppo__s3"
    write_status(run, status="running")  # the kill came before the run was marked finished
    train_here(*cut)  # resumes from the checkpoint of the end: its rows, without the last losses
    assert read_status(run)["status"] == "finished"
    assert rows(run / "metrics.csv") == rows(ref / "metrics.csv")
    assert rows(run / "regimes.csv") == rows(ref / "regimes.csv")


def test_rerunning_a_finished_run_skips_it(tmp_path, crl_cli):
    args = train_args(tmp_path, 256, "--wandb", "disabled")
    train_here(*args)  # the run in this process; the rerun is the real command line
    again = crl_cli(*args, check=True)
    assert "already finished" in again.stdout


def test_same_seed_same_curves(tmp_path):
    cfg = dict(
        env="slippery-ant",
        agent="ppo",
        seed=1,
        steps=1024,
        env_kwargs={"change_every": 300},
        agent_kwargs={"n_steps": 256, "batch_size": 64, "n_epochs": 1},
        wandb="disabled",
        progress=False,
    )
    a = train(RunConfig(**cfg, run_dir=str(tmp_path / "a")))
    b = train(RunConfig(**cfg, run_dir=str(tmp_path / "b")))
    assert rows(a.run_dir / "metrics.csv") == rows(b.run_dir / "metrics.csv")
    assert rows(a.run_dir / "regimes.csv") == rows(b.run_dir / "regimes.csv")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "no-such-env", "--agent", "ppo"], "unknown env 'no-such-env'; valid: cdmc-dog, cdmc-quadruped, "),
        (["--env", "slippery-ant", "--agent", "no-such-agent"], "unknown agent 'no-such-agent'; valid:"),
        (["--env", "slippery-ant", "--agent", "ppo", "--steps", "-5"], "steps must be an integer in [1, "),
        (["--env", "slippery-ant", "--agent", "ppo", "--agent-kwargs", "n_stepz=3"], "unknown key 'n_stepz'"),
        (["--env", "slippery-ant", "--agent", "ppo", "--agent-kwargs", "gamma=-1"], "gamma must be a number in (0, 1]"),
        (["--env", "slippery-ant", "--agent", "ppo", "--agent-kwargs", "optimizer.betas=[1.5,0.9]"], "beta"),
        (["--env", "slippery-ant", "--agent", "ppo", "--env-kwargs", "change_every=abc"], "change_every"),
        (["--env", "slippery-ant", "--agent", "ppo", "--env-kwargs", "bogus=1"], "bogus"),
        (["--env", "missing.yaml", "--agent", "ppo"], "file not found: missing.yaml"),
        (["--env", "slippery-ant", "--agent", "missing.yaml"], "file not found: missing.yaml"),
    ],
)
def test_bad_input_is_one_clear_line_and_leaves_no_run(tmp_path, crl_cli, capsys, monkeypatch, args, message):
    argv = ["train", *args, "--run-dir", str(tmp_path), "--wandb", "disabled"]
    if args[1] == "no-such-env":  # the real command line, from the repository root
        proc = crl_cli(*argv)
        code, err = proc.returncode, proc.stderr
    else:  # the same entry point in this process (no interpreter start-up and imports per case)
        from crl.cli import main

        monkeypatch.chdir(ROOT)  # where the real command line runs: missing.yaml is looked up there
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crl: error: ") and message in lines[0], err
    assert not any(tmp_path.iterdir())


def test_bad_agent_yaml_names_file_key_and_valid_keys(tmp_path, capsys):
    """``crl train``'s entry point in this process (the real command line's one-line errors:
    :func:`test_bad_input_is_one_clear_line_and_leaves_no_run`)."""
    from crl.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("description: x\nalgo: ppo\nhyperparameterz: {}\n")
    capsys.readouterr()
    assert main(["train", "--env", "slippery-ant", "--agent", str(bad), "--run-dir", str(tmp_path / "r")]) == 2
    assert f"{bad}: unknown key 'hyperparameterz'; valid: description, algo" in capsys.readouterr().err
    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text("description: x\nboundary_aware: 3\n")
    assert main(["train", "--env", "slippery-ant", "--agent", str(wrong_type), "--run-dir", str(tmp_path / "r")]) == 2
    assert "boundary_aware: expected true or false, got 3" in capsys.readouterr().err


class _NaNRewardEnv(gym.Env):
    """A 1-d task whose reward turns NaN after ``bad_after`` steps."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, bad_after: int = 700):
        self.t = 0
        self.bad_after = bad_after

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        reward = float("nan") if self.t > self.bad_after else float(action[0])
        return np.zeros(2, np.float32), reward, False, self.t % 50 == 0, {}


def _small_ppo(tmp_path, env, steps):
    """A PPO run of 256-step rollouts with a checkpoint after each."""
    agent_kwargs = {"n_steps": 256, "batch_size": 64, "n_epochs": 1}
    return RunConfig(
        env=env, agent="ppo", steps=steps, run_dir=str(tmp_path), wandb="disabled",
        agent_kwargs=agent_kwargs, checkpoint_every=256, progress=False,
    )  # fmt: skip


def test_nan_loss_fails_run_at_its_step_and_keeps_last_good_checkpoint(tmp_path):
    gym.register("crltest/NaNReward-v0", entry_point=_NaNRewardEnv)
    cfg = _small_ppo(tmp_path, "crltest/NaNReward-v0", 4096)
    with pytest.raises(NonFiniteLossError, match="at global step 768"):
        train(cfg)
    run = tmp_path / "default" / "crltest-NaNReward-v0__ppo__s0"
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "768" in status["error"]
    from crl.checkpoint import load

    ckpt = load(run / "checkpoints" / "last.pt")
    assert ckpt["model"]["num_timesteps"] == 512
    assert all(np.isfinite(v.numpy()).all() for v in ckpt["model"]["params"]["policy"].values())


def test_a_parameter_made_nan_outside_an_optimizer_step_is_never_checkpointed(tmp_path):
    """A callback writes NaN into a weight at a rollout boundary, after NanGuard's look and
    before the checkpoint: the checkpoint's own parameter check fails the run there."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Poison(BaseCallback):
        def _on_step(self):
            return True

        def _on_rollout_start(self):
            if self.num_timesteps == 512:
                with torch.no_grad():
                    next(self.model.policy.parameters()).view(-1)[0] = float("nan")

    cfg = _small_ppo(tmp_path, "CartPole-v1", 2048)
    with pytest.raises(NonFiniteLossError, match="non-finite parameter at global step 512"):
        train(cfg, callbacks=[Poison()])
    run = tmp_path / "default" / "CartPole-v1__ppo__s0"
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    from crl.checkpoint import load

    assert load(run / "checkpoints" / "last.pt")["model"]["num_timesteps"] == 256


def test_sigkill_then_resume_with_worker_processes_matches_in_process_run(tmp_path, crl_cli):
    """Envs simulated in worker processes (``--vec-env proc``): killed and resumed, the run equals
    an uninterrupted run with in-process envs row for row."""
    steps, two = 2048, ["--n-envs", "2", "--wandb", "disabled"]  # 4 rollouts of 2 x 256 steps
    train_here(*train_args(tmp_path / "ref", steps, *two, "--vec-env", "dummy"))
    ref = tmp_path / "ref" / "default" / "slippery-ant__ppo__s3"
    cmd = train_args(tmp_path / "killed", steps, *two, "--vec-env", "proc")
    check_resumes_exactly(
        cmd, tmp_path / "killed" / "default" / "slippery-ant__ppo__s3", ref, steps=(600, 1400), resume_here=True
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None])
def test_fused_gradient_guard_flags_exactly_non_finite_gradients(bad):
    """The guard's fused check refuses one NaN/inf element anywhere and accepts huge finite ones."""
    from types import SimpleNamespace

    from crl.run import NanGuard

    holder = NanGuard()
    holder.model = SimpleNamespace(num_timesteps=7)  # the guard reads only the step
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 2))
    opt = torch.optim.Adam(net.parameters())
    holder._grad_guard(opt, (), {})  # no gradients yet
    net(torch.randn(3, 5)).sum().backward()
    net[2].weight.grad[1, 3] = 3e38 if bad is None else bad  # huge but finite, or not finite
    if bad is None:
        before = [p.grad.clone() for p in net.parameters()]
        holder._grad_guard(opt, (), {})
        assert all(torch.equal(b, p.grad) for b, p in zip(before, net.parameters()))  # the check leaves them alone
    else:
        with pytest.raises(NonFiniteLossError, match="gradient at global step 7"):
            holder._grad_guard(opt, (), {})


def test_a_run_from_before_a_new_agent_field_still_resumes(tmp_path):
    """config.yaml written by an older crl lacks agent.replay_buffer: at its default it is not a change."""
    import yaml

    from crl.errors import ConfigError
    from crl.run import RunConfig, Runner

    cfg = RunConfig(env="CartPole-v1", agent="ppo", steps=64, run_dir=str(tmp_path), wandb="disabled")
    r = Runner(cfg)
    r.folder.prepare(r.resolved, False)
    old = dict(r.resolved, agent={k: v for k, v in r.resolved["agent"].items() if k != "replay_buffer"})
    (r.dir / "config.yaml").write_text(yaml.safe_dump(old))
    r.folder.prepare(r.resolved, False)  # accepted
    old["agent"]["n_steps_typo"] = 1
    (r.dir / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match="different config"):
        r.folder.prepare(r.resolved, False)


def test_a_reset_at_a_regime_change_comes_after_the_rollouts_values_so_far(tmp_path, monkeypatch):
    """A boundary-aware reset changes the weights inside a rollout (the regime changes every
    300 steps, at the next episode's start; the rollouts are 256 steps long): crl's run
    callback first has FastPPO compute the values and log-probabilities of the steps taken so
    far (its rollouts defer them), with the weights that acted.
    """
    from crl.fast.ppo import FastPPO
    from crl.plasticity.base import InterventionSet

    events = []
    real_will, real_change = FastPPO.policy_will_change, InterventionSet.on_regime_change

    def will_change(self):
        real_will(self)
        d = self._deferred
        events.append(("will_change", d is not None and 0 < d.filled == d.taken))

    def on_regime_change(self, regime):
        events.append(("regime_change", regime))
        real_change(self, regime)

    monkeypatch.setattr(FastPPO, "policy_will_change", will_change)
    monkeypatch.setattr(InterventionSet, "on_regime_change", on_regime_change)
    cfg = RunConfig(
        env="slippery-ant",
        agent="ppo-reset",
        seed=1,
        steps=1024,
        env_kwargs={"change_every": 300, "episode_steps": 200},
        agent_kwargs={"n_steps": 256, "batch_size": 64, "n_epochs": 1},
        wandb="disabled",
        progress=False,
        run_dir=str(tmp_path),
    )
    train(cfg)
    assert len(events) >= 4
    assert [kind for kind, _ in events] == ["will_change", "regime_change"] * (len(events) // 2)
    assert all(flushed for kind, flushed in events if kind == "will_change")
