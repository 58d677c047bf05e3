"""Multi-head networks and per-task adapters (crl.plasticity.multihead, crl.plasticity.adapters):
a task's outputs depend on its own head and adapter only, bit for bit; gradients of a task's
batch reach its head, its adapter and the shared trunk only; adapters of other tasks (and, frozen,
the trunk) stay bit-equal while a task trains; FastPPO makes SB3's updates; saved models load
with SB3; real ``crl train`` runs resume exactly after kill -9."""

from __future__ import annotations

import dataclasses
import json
import random

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO, SAC

from crl.agents import build_model
from crl.catalog import agent_specs
from crl.drift import find_drifts, make_drifting
from crl.errors import ConfigError
from crl.fast.ppo import FastPPO
from crl.plasticity.adapters import TaskLinear
from crl.plasticity.multihead import TaskActorCriticPolicy, TaskHeads, TaskTrunk
from crl.plasticity.nets import find_mlps
from crl.spec import AgentSpec
from tests._models import cyclic_pendulum, tiny_model
from tests._resume import check_resumes_exactly, train_here

SMALL_HP = {
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 2},
    "sac": {"learning_starts": 32, "buffer_size": 1000, "batch_size": 32},
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _env() -> gym.Env:
    """Pendulum with a level shift cycling between two regimes every 40 steps: two task ids."""
    return cyclic_pendulum(tasks=2, change_every=40)


def _model(algo: str, env: gym.Env | None = None, **network):
    """A two-task model of 16x16 networks with ``network``'s options, on ``env`` (:func:`_env`'s)."""
    env = _env() if env is None else env
    return tiny_model(algo, env=env, hyperparameters=SMALL_HP[algo], sizes=[16, 16], network=network, tasks=2)[0]


def _obs(task: int, n: int = 8, seed: int = 0) -> torch.Tensor:
    x = torch.as_tensor(np.random.default_rng(seed).uniform(-1, 1, (n, 3)), dtype=torch.float32)
    return torch.cat([x, torch.nn.functional.one_hot(torch.full((n,), task), 2).float()], dim=1)


def _outputs(model, obs: torch.Tensor) -> list[torch.Tensor]:
    """Every task-selected output: PPO's action mean and value, SAC's mean, log-std and Q values."""
    with torch.no_grad():
        if isinstance(model, PPO):
            pol = model.policy
            return [pol.get_distribution(obs).distribution.mean, pol.predict_values(obs)]
        mean, log_std, _ = model.actor.get_action_dist_params(obs)
        action = torch.tanh(mean)
        qs = [*model.critic(obs, action), *model.critic_target(obs, action)]
        return [mean, log_std, *qs]


def _heads(model) -> list[TaskHeads]:
    return [m for m in model.policy.modules() if isinstance(m, TaskHeads)]


@pytest.mark.parametrize("algo", ["ppo", "sac"])
@pytest.mark.parametrize("network", [{"heads": True}, {"adapters": 2}])
def test_a_tasks_outputs_depend_on_its_own_head_and_adapter_only(algo, network):
    model = _model(algo, **network)
    heads = _heads(model)
    assert len(heads) == (2 if algo == "ppo" else 2 + 4)  # SAC: mean, log-std, 2 critics, 2 targets
    for k in (0, 1):
        obs = _obs(k)
        mixed = torch.cat([obs, _obs(1 - k, seed=1)])  # rows of both tasks in one batch
        before, before_mixed = _outputs(model, obs), _outputs(model, mixed)
        with torch.no_grad():  # perturb everything that belongs to the other task
            for h in heads:
                for p in h.heads[1 - k].parameters():
                    p.add_(torch.randn_like(p))
            for m in model.policy.modules():
                if isinstance(m, TaskLinear) and m.rank:
                    m.lora_a[1 - k].add_(1.0)
                    m.lora_b[1 - k].add_(1.0)
        for a, b in zip(before, _outputs(model, obs), strict=True):
            assert torch.equal(a, b)
        for a, b in zip(before_mixed, _outputs(model, mixed), strict=True):
            assert torch.equal(a[:8], b[:8]) and not torch.equal(a[8:], b[8:])
    with torch.no_grad():  # and its own head does change them
        heads[0].heads[0].bias.add_(1.0)
    assert not torch.equal(before[0], _outputs(model, _obs(0))[0]) or algo == "sac"


@pytest.mark.parametrize("network", [{"heads": True}, {"adapters": 2}])
def test_the_gradients_of_a_tasks_batch_reach_its_head_its_adapter_and_the_trunk_only(network):
    model = _model("ppo", **network)
    pol = model.policy
    obs = _obs(1)
    actions = torch.zeros(8, 1)
    values, log_prob, _ = pol.evaluate_actions(obs, actions)
    (values.sum() + log_prob.sum()).backward()
    for name, p in pol.named_parameters():
        other = ".heads.0." in name or "lora_a.0" in name or "lora_b.0" in name
        assert (p.grad is None) == other, name
        if "lora_a.1" in name:  # B starts at zero: A's first gradient is zero
            assert not p.grad.any()
        elif not other and name != "log_std":
            assert p.grad.any(), name


def _train(model, steps: int) -> None:
    model.learn(steps, reset_num_timesteps=False)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


@pytest.mark.parametrize("algo", ["ppo", "sac"])
@pytest.mark.parametrize("freeze", [False, True])
def test_training_a_task_leaves_the_other_tasks_adapters_and_heads_and_a_frozen_trunk_bit_equal(algo, freeze):
    """Train on both tasks (Adam builds moments for every adapter), then on task 1 alone (the
    env pinned to its regime; SAC's replay emptied so that its batches are task 1's): task 0's
    adapters and heads stay bit-equal, and with ``freeze_trunk`` the trunks and task 0's outputs too
    (SAC's target critics follow their critics: they are left out).
    """
    steps = 128 if algo == "ppo" else 96
    model = _model(algo, adapters=2, freeze_trunk=freeze)
    _train(model, steps)
    trunks = [m for m in model.policy.modules() if isinstance(m, TaskTrunk)]
    assert all(bool(t.frozen) == freeze for t in trunks if t.training)
    find_drifts(model.get_env().envs[0])[0].set_regime(1)
    if algo == "sac":
        model.replay_buffer.reset()
    before, outputs = _snapshot(model), _outputs(model, _obs(0))[:-2]
    model.learn(steps)  # resets the env: its first observation is task 1's too
    after = _snapshot(model)
    online = [k for k in before if "target" not in k]
    task0 = [k for k in online if "lora_a.0" in k or "lora_b.0" in k or ".heads.0." in k]
    trunk = [k for k in online if ".net." in k and "lora" not in k]
    task1 = [k for k in online if "lora_b.1" in k or ".heads.1." in k]
    assert task0 and trunk and task1
    for k in task0:
        assert torch.equal(before[k], after[k]), k
    assert all(not torch.equal(before[k], after[k]) for k in task1)
    changed = [k for k in trunk if not torch.equal(before[k], after[k])]
    if freeze:
        assert changed == []
        for a, b in zip(outputs, _outputs(model, _obs(0))[:-2], strict=True):  # targets left out
            assert torch.equal(a, b)
    else:
        assert changed


@pytest.mark.parametrize("network", [{"heads": True}, {"adapters": 2, "freeze_trunk": True}])
def test_fastppo_makes_sb3s_updates_through_autograd(network):
    """FastPPO's hand-written passes and critic worker step aside for task-conditioned networks
    (autograd for both halves) and its updates equal SB3's PPO on the same policy."""
    torch.set_num_threads(1)
    kw = dict(
        n_steps=128,
        batch_size=64,
        n_epochs=2,
        seed=3,
        policy_kwargs=dict(
            net_arch=dict(pi=[16], vf=[16]),
            tasks=2,
            adapter_rank=network.get("adapters", 0),
            freeze_trunk=network.get("freeze_trunk", False),
        ),
    )
    models = {}
    for cls in (PPO, FastPPO):  # SB3 seeds the global RNGs at construction: one after the other
        models[cls] = cls(TaskActorCriticPolicy, _env(), **kw)
        models[cls].learn(384)
    fast = models[FastPPO]
    fast.close_workers()
    assert fast.update_paths == [(0, "autograd", "autograd")]
    for (name, a), b in zip(models[PPO].policy.state_dict().items(), fast.policy.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_a_saved_model_loads_with_sb3_and_acts_the_same(tmp_path, algo):
    model = _model(algo, adapters=2, freeze_trunk=True)
    _train(model, 128)
    model.save(tmp_path / "m.zip")
    loaded = (PPO if algo == "ppo" else SAC).load(tmp_path / "m.zip", device="cpu")
    assert type(loaded.policy) is type(model.policy)
    obs = torch.cat([_obs(0), _obs(1, seed=2)])
    for a, b in zip(_outputs(model, obs), _outputs(loaded, obs), strict=True):
        assert torch.equal(a, b)
    frozen = [bool(m.frozen) for m in loaded.policy.modules() if isinstance(m, TaskTrunk)]
    assert frozen and any(frozen)


def test_the_walker_sees_every_head():
    views = {v.name: v for v in find_mlps(_model("sac", heads=True))}
    actor, q = views["actor"], views["qf0"]
    assert len(actor.layers) == 2 and len(actor.layers[-1].outs) == 4 and len(actor.output) == 4  # mean, log-std
    assert len(q.layers[-1].outs) == 2 == len(q.output) and q.targets
    views = {v.name: v for v in find_mlps(_model("ppo", adapters=2))}
    assert [len(v.layers[-1].outs) for v in views.values()] == [2, 2]


def test_bad_networks_are_one_line_errors():
    base = {"description": "x", "network": {"heads": True}}
    with pytest.raises(ConfigError, match="need task_id: true"):
        AgentSpec.from_dict(base, "a.yaml")
    with pytest.raises(ConfigError, match="freeze_trunk needs"):
        AgentSpec.from_dict({"description": "x", "task_id": True, "network": {"freeze_trunk": True}}, "a.yaml")
    with pytest.raises(ConfigError, match="ppo and sac only"):
        AgentSpec.from_dict({**base, "algo": "td3", "task_id": True}, "a.yaml")
    with pytest.raises(ConfigError, match=r"network\.adapters must be"):
        AgentSpec.from_dict({**base, "task_id": True, "network": {"adapters": -1}}, "a.yaml")
    spec = AgentSpec.from_dict({**base, "task_id": True}, "a.yaml", name="a")
    with pytest.raises(ConfigError, match="need the number of task ids"):
        build_model(spec, _env(), seed=0)  # network.tasks never set


def test_more_tasks_than_heads_stops_the_run_in_one_line():
    """The heads are ``network.tasks``: the env's number of task ids. An env asked for N ids
    (``task_id=N``, a schedule whose regimes never repeat) stops at a task beyond N
    (crl.drift.TaskIdObservation), so a head is never missing."""
    every = {"every_n_steps": {"change_every": 40, "align": "exact"}}
    env = make_drifting("Pendulum-v1", drifts=[{"level_shift": {}}], schedule=every, task_id=2)
    model = _model("ppo", env, heads=True)
    with pytest.raises(ConfigError, match="regime 2 is task 2, but only 2 task ids were asked for"):
        model.learn(200)


# -- real runs -------------------------------------------------------------------------------

#: A task sequence: HalfCheetah, then Walker2d (identical spaces), in 100-step episodes.
SEQUENCE = {
    "description": "HalfCheetah then Walker2d, a new task at the first episode end after 200 steps",
    "id": "crl/TestCheetahWalker-v0",
    "base": "HalfCheetah-v5",
    "drifts": [{"task_sequence": {"tasks": ["Walker2d-v5"]}}],
    "schedule": {"every_n_steps": {"change_every": 200, "align": "episode_end"}},
    "max_episode_steps": 100,
}


def _train_args(root, agent: str, env: str) -> list[str]:
    hp = (
        ["n_steps=256", "batch_size=64", "n_epochs=2"]
        if agent.startswith("ppo")
        else ["learning_starts=100", "buffer_size=2000", "batch_size=32"]
    )
    env_kwargs = ["change_every=200", "align=exact"] if env == "cyclic-halfcheetah" else []
    steps = "768" if agent.startswith("ppo") else "600"
    return [
        "train", "--env", env, "--agent", agent, "--steps", steps, "--seed", "1",
        *(["--env-kwargs", *env_kwargs] if env_kwargs else []), "--agent-kwargs", *hp,
        "--checkpoint-every", "256" if agent.startswith("ppo") else "200",
        "--run-dir", str(root), "--wandb", "disabled", "--no-progress",
    ]  # fmt: skip


RUNS = [
    pytest.param(agent, env, marks=[] if (agent, env) == ("ppo-adapters", "sequence") else pytest.mark.expensive)
    for agent in ("ppo-multihead", "ppo-adapters", "sac-multihead", "sac-adapters")
    for env in ("cyclic-halfcheetah", "sequence")
]


@pytest.mark.parametrize(("agent", "env"), RUNS)
def test_a_preset_trains_on_two_tasks_and_resumes_exactly_after_kill_9(tmp_path, crl_cli, agent, env):
    if env == "sequence":
        path = tmp_path / "cheetah-walker.yaml"
        path.write_text(yaml.safe_dump(SEQUENCE))
        env = str(path)
    train_here(*_train_args(tmp_path / "ref", agent, env))
    (ref,) = (tmp_path / "ref" / "default").iterdir()
    config = yaml.safe_load((ref / "config.yaml").read_text())
    assert config["agent"]["network"]["tasks"] == 2 and config["env"]["make_kwargs"]["task_id"] is True
    regimes = [r.split(",")[1] for r in (ref / "regimes.csv").read_text().splitlines()[1:]]
    assert {"0", "1"} <= set(regimes)  # both tasks trained
    assert json.loads((ref / "status.json").read_text())["status"] == "finished"
    window = (300, 512) if agent.startswith("ppo") else (250, 350)  # before the last checkpoint
    check_resumes_exactly(_train_args(tmp_path / "cut", agent, env), tmp_path / "cut" / "default" / ref.name, ref,
                          random.Random(0), steps=window, resume_here=True)  # fmt: skip


def test_the_presets_are_in_the_catalog_and_observe_the_task_id():
    specs = agent_specs()
    for name in ("ppo-multihead", "sac-multihead", "ppo-adapters", "sac-adapters"):
        spec = specs[name]
        assert spec.task_id and spec.network.task_conditioned and "Parameters" in spec.description
        assert (
            dataclasses.replace(spec.network, heads=False, adapters=0, freeze_trunk=False) == specs[spec.algo].network
        )
