"""Progressive networks (Rusu et al. 2016): one column per task, laterals from earlier columns
only, old columns bit-equal after later tasks train (Adam's moments do not move them), SB3's
save/load, the walker and diagnostics, FastPPO stepping aside, and real ``crl train`` runs
resumed exactly after SIGKILL on the cyclic HalfCheetah and on a task sequence."""

from __future__ import annotations

import dataclasses
import random

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO, SAC
from torch import nn

from crl import diagnostics as D
from crl.agents import build_model, with_tasks
from crl.catalog import agent_specs
from crl.errors import ConfigError
from crl.plasticity import InterventionSet
from crl.plasticity.nets import find_mlps, hidden_layers
from crl.plasticity.progressive import ProgressiveColumns, ProgressiveNet, parameter_count
from crl.run.callbacks import InterventionHooks
from crl.spec import AgentSpec
from tests._models import cyclic_pendulum, tiny_model
from tests._resume import check_resumes_exactly, train_here

SMALL = {"pi": [16, 16], "vf": [16, 16], "qf": [16, 16], "progressive": True}
HP = {
    "ppo": {"n_steps": 100, "batch_size": 50, "n_epochs": 4, "learning_rate": 3e-3},
    "sac": {"learning_starts": 30, "buffer_size": 2000, "batch_size": 32, "learning_rate": 3e-3},
}


def _env(tasks: int = 3):
    return cyclic_pendulum(tasks, change_every=100)


def _model(algo: str, tasks: int = 3, network=None):
    """A progressive model of ``tasks`` columns (``network``: :data:`SMALL` unless given) and the
    callback that drives its interventions."""
    model, ivs = tiny_model(algo, env=_env(tasks), hyperparameters=HP[algo], network=network or SMALL, tasks=tasks)
    return model, InterventionHooks(ivs)


def _nets(model) -> list[ProgressiveNet]:
    return [m for n, m in model.policy.named_modules() if isinstance(m, ProgressiveNet) and "target" not in n]


def _column(model, k: int) -> list[torch.Tensor]:
    return [p.detach().clone() for net in _nets(model) for p in net.columns[k].parameters()]


def _probe(task: int, n: int = 64) -> torch.Tensor:
    obs = torch.as_tensor(np.random.default_rng(task).uniform(-1, 1, (n, 3)), dtype=torch.float32)
    return torch.cat([obs, nn.functional.one_hot(torch.full((n,), task), 3).float()], dim=1)


def _outputs(model, obs: torch.Tensor) -> list[torch.Tensor]:
    """Everything the agent computes on ``obs``: PPO's mean, std and value; SAC's mean,
    log-std and both Q-values (of the actor's mean action)."""
    with torch.no_grad():
        if isinstance(model, PPO):
            dist = model.policy.get_distribution(obs).distribution
            return [dist.mean, dist.stddev, model.policy.predict_values(obs)]
        mean, log_std, _ = model.actor.get_action_dist_params(obs)
        return [mean, log_std, *model.critic(obs, torch.tanh(mean))]


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("tasks", [1, 2, 3])
def test_the_parameter_count_is_the_formula(tasks):
    ppo, _ = _model("ppo", tasks)
    want = parameter_count(3, [16, 16], 1, tasks, log_std=True) + parameter_count(3, [16, 16], 1, tasks)
    assert sum(p.numel() for p in ppo.policy.parameters()) == want
    sac, _ = _model("sac", tasks)
    want = parameter_count(3, [16, 16], 2, tasks) + 2 * parameter_count(4, [16, 16], 1, tasks)
    assert sum(p.numel() for p in [*sac.actor.parameters(), *sac.critic.parameters()]) == want


@pytest.mark.parametrize(
    ("name", "plain", "count"), [("ppo-progressive", "ppo", 681_767), ("sac-progressive", "sac", 1_031_475)]
)
def test_the_presets_state_their_parameter_counts_on_the_cyclic_halfcheetah(name, plain, count):
    env = gym.make("crl/CyclicHalfCheetah-v0", task_id=True)
    specs = agent_specs()
    small = {"buffer_size": 10} if plain == "sac" else {}

    def n_params(spec):
        spec = dataclasses.replace(spec, hyperparameters={**spec.hyperparameters, **small})
        model, _ = build_model(
            with_tasks(spec, 2) if spec.task_id else spec, env if spec.task_id else gym.make("HalfCheetah-v5"), 0
        )
        return sum(
            p.numel()
            for p in (
                model.policy.parameters() if plain == "ppo" else [*model.actor.parameters(), *model.critic.parameters()]
            )
        )

    assert n_params(specs[name]) == count and f"{count:,}" in specs[name].description
    assert f"{n_params(specs[plain]):,}" in specs[name].description


def test_laterals_only_go_from_earlier_to_later_columns():
    torch.manual_seed(0)
    net = ProgressiveNet(3 + 3, [8, 8], 2, n_tasks=3, activation_fn=nn.ReLU)
    assert [len(c.adapters) for c in net.columns] == [0, 2, 2]  # into layer 2 and the output
    assert [[a.v.in_features for a in c.adapters] for c in net.columns] == [[], [8, 8], [16, 16]]
    x = torch.cat([_probe(t, 8) for t in range(3)])  # the three tasks in one batch
    base = net(x).detach()
    for k in range(3):  # perturbing column k changes the outputs of tasks k.. only
        with torch.no_grad():
            for p in net.columns[k].parameters():
                p.add_(0.5)
        out = net(x).detach()
        assert torch.equal(out[: 8 * k], base[: 8 * k]) and not torch.equal(out[8 * k :], base[8 * k :])
        base = out
    net.zero_grad()
    net(_probe(2, 8)).sum().backward()  # task 2's output: no gradient reaches columns 0 and 1
    assert all(p.grad is None for k in (0, 1) for p in net.columns[k].parameters())
    assert all(p.grad is not None for p in net.columns[2].parameters())


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_old_columns_stay_bit_equal_and_old_tasks_act_the_same_after_later_tasks_train(algo):
    model, hooks = _model(algo)
    init2 = _column(model, 2)
    steps = 100  # one task per 100 steps: tasks 0, 1, 2, then 0 again
    model.learn(steps, callback=hooks)
    col0, out0 = _column(model, 0), _outputs(model, _probe(0))
    model.learn(steps, callback=hooks, reset_num_timesteps=False)
    col1, out1 = _column(model, 1), _outputs(model, _probe(1))
    assert _equal(_column(model, 0), col0) and _equal(_outputs(model, _probe(0)), out0)
    model.learn(steps, callback=hooks, reset_num_timesteps=False)  # task 2: many more Adam steps
    assert not _equal(_column(model, 2), init2)
    for k, col, out in ((0, col0, out0), (1, col1, out1)):
        assert _equal(_column(model, k), col), f"column {k} moved"
        assert _equal(_outputs(model, _probe(k)), out), f"task {k} acts differently"
    opt = model.policy.optimizer if algo == "ppo" else model.actor.optimizer
    assert any(
        opt.state[p]["exp_avg"].abs().sum() > 0 for p in _nets(model)[0].columns[0].parameters()
    )  # Adam had moments
    col2, out2 = _column(model, 2), _outputs(model, _probe(2))
    model.learn(steps, callback=hooks, reset_num_timesteps=False)  # task 0 again: every column frozen
    assert all(bool(net.frozen.all()) and int(net.active) == 0 for net in _nets(model))
    assert _equal(_column(model, 2), col2) and _equal(_outputs(model, _probe(2)), out2)
    assert _equal(_column(model, 0), col0)


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_a_column_trains_only_while_its_task_is_in_force(algo):
    model, hooks = _model(algo)
    before = [_column(model, k) for k in range(3)]
    model.learn(100, callback=hooks)
    assert not _equal(_column(model, 0), before[0])
    assert _equal(_column(model, 1), before[1]) and _equal(_column(model, 2), before[2])


@pytest.mark.parametrize(("algo", "cls"), [("ppo", PPO), ("sac", SAC)])
def test_a_saved_model_loads_with_sb3_and_acts_the_same(algo, cls, tmp_path):
    model, hooks = _model(algo)
    model.learn(200, callback=hooks)  # column 0 frozen, task 1 in force
    model.save(tmp_path / "m.zip")
    loaded = cls.load(tmp_path / "m.zip", env=_env())
    for t in range(3):
        assert _equal(_outputs(loaded, _probe(t)), _outputs(model, _probe(t)))
    for a, b in zip(_nets(model), _nets(loaded), strict=True):
        assert torch.equal(a.frozen, b.frozen) and int(a.active) == int(b.active) == 1
        assert not any(p.requires_grad for p in b.columns[0].parameters())
        assert all(p.requires_grad for p in b.columns[1].parameters())


def test_fast_ppo_steps_aside_and_trains_exactly_as_sb3s_ppo():
    model, ivs = tiny_model("ppo", env=_env(), hyperparameters=HP["ppo"], network=SMALL, tasks=3)
    assert type(model).__name__ == "FastPPO"
    plain = PPO(type(model.policy), _env(), policy_kwargs=model.policy_kwargs, seed=0, **HP["ppo"])
    plain.policy.load_state_dict(model.policy.state_dict())
    plain.policy.optimizer.load_state_dict(model.policy.optimizer.state_dict())
    plain_hooks = InterventionHooks(InterventionSet([ProgressiveColumns()]).attach(plain))
    torch.manual_seed(1)
    model.set_random_seed(1)
    model.learn(200, callback=InterventionHooks(ivs))
    plain.set_random_seed(1)
    torch.manual_seed(1)
    plain.learn(200, callback=plain_hooks)
    assert set(model.update_paths[0][1:]) == {"autograd"}  # no hand-written pass, no critic worker
    assert _equal(list(model.policy.state_dict().values()), list(plain.policy.state_dict().values()))


def test_the_walker_and_the_diagnostics_see_every_column():
    model, _ = _model("ppo", network={**SMALL, "pi": [16, 8]})
    views = find_mlps(model)
    assert [v.name for v in views] == [f"{n}.col{k}" for n in ("pi", "vf") for k in range(3)]
    net = model.policy.mlp_extractor.policy_net
    for k, view in enumerate(views[:3]):
        assert [layer.inp for layer in view.layers] == [net.columns[k].body[0], net.columns[k].body[2]]
        assert view.layers[-1].outs == [net.columns[k].out] and view.output == [net.columns[k].out]
    assert len(hidden_layers(net)) == 6  # the adapters' own units are not hidden layers of the walker
    diag = D.Diagnostics(model, probe_size=64)
    diag.add_states(torch.cat([_probe(t, 40) for t in range(3)]).numpy())
    diag.after_update()
    row = diag.compute()
    assert {f"plasticity/policy/{i}/srank" for i in range(6)} <= set(row)
    assert all(np.isfinite(v) for v in row.values())
    sac, _ = _model("sac")
    assert [v.name for v in find_mlps(sac)][:4] == ["actor.col0", "actor.col1", "actor.col2", "qf0.col0"]
    assert find_mlps(sac)[3].targets == [sac.critic_target.qf0.columns[0]]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"task_id": False}, "needs task_id: true"),
        ({"interventions": ["l2"]}, "no interventions"),
        ({"network": {**SMALL, "activation": "crelu"}}, "without layer_norm, dropout, crelu or dff"),
        ({"algo": "td3", "hyperparameters": {}}, "is for ppo and sac"),
    ],
)
def test_bad_specs_are_one_line_errors(change, match):
    data = {"description": "x", "algo": "ppo", "task_id": True, "network": SMALL, **change}
    with pytest.raises(ConfigError, match=match):
        AgentSpec.from_dict(data, "x.yaml")


def _train(env: str, agent: str, steps: int, run_dir, *extra: str) -> list[str]:
    return ["train", "--env", env, "--agent", agent, "--steps", str(steps), "--seed", "1", *extra,
            "--run-dir", str(run_dir), "--checkpoint-every", "256", "--wandb", "disabled", "--no-progress"]  # fmt: skip


def test_ppo_progressive_on_the_cyclic_halfcheetah_resumes_exactly_after_sigkill(tmp_path, crl_cli):
    extra = ("--env-kwargs", "change_every=256", "align=exact", "--agent-kwargs", "n_steps=256", "batch_size=128",
             "n_epochs=2", "network.pi=[32,32]", "network.vf=[32,32]")  # fmt: skip
    train_here(*_train("cyclic-halfcheetah", "ppo-progressive", 768, tmp_path / "ref", *extra))
    (ref,) = (tmp_path / "ref" / "default").iterdir()
    assert (ref / "regimes.csv").read_text().count("\n") >= 3  # forward, backward, forward again
    cmd = _train("cyclic-halfcheetah", "ppo-progressive", 768, tmp_path / "cut", *extra)
    check_resumes_exactly(
        cmd, tmp_path / "cut" / "default" / ref.name, ref, random.Random(0), steps=(300, 512), resume_here=True
    )


#: A task sequence: Pendulum, then a lighter-gravity Pendulum, every 200 steps (two task ids).
PENDULUM_PAIR = {
    "description": "Pendulum (g = 10), then Pendulum with g = 4, switching every 200 steps",
    "id": "test/PendulumPair-v0",
    "base": "Pendulum-v1",
    "drifts": [{"task_sequence": {"tasks": ["tests._task_envs:test/LightPendulum-v0"]}}],
    "schedule": {"every_n_steps": {"change_every": 200, "align": "episode_end"}},
}


#: A cyclic level shift of Pendulum's observations: tasks 0, 1, 0, ... every 400 steps.
CYCLIC_PENDULUM = {
    "description": "Pendulum whose observations shift, cycling two regimes every 400 steps",
    "id": "test/CyclicShiftPendulum-v0",
    "base": "Pendulum-v1",
    "drifts": [{"level_shift": {}}],
    "schedule": {"cyclic": {"change_every": 400, "cycle": [0, 1], "align": "exact"}},
}

SAC_SMALL = ("--agent-kwargs", "learning_starts=100", "buffer_size=2000", "batch_size=32", "network.pi=[32,32]",
             "network.qf=[32,32]")  # fmt: skip


def test_sac_progressive_trains_on_a_task_sequence_and_freezes_the_first_column(tmp_path, crl_cli):
    """End to end on a task sequence (not resumed: main's task sequences do not seed or checkpoint
    the tasks not in use, so two uninterrupted runs already differ after the first switch)."""
    env = tmp_path / "pendulum-pair.yaml"
    env.write_text(yaml.safe_dump(PENDULUM_PAIR))
    train_here(*_train(str(env), "sac-progressive", 500, tmp_path, *SAC_SMALL))
    (run,) = (tmp_path / "default").iterdir()
    assert (run / "regimes.csv").read_text().count("\n") >= 4  # task 0, task 1, task 0 again
    model = SAC.load(run / "model.zip")
    for net in _nets(model):
        assert net.frozen.tolist() == [True, True] and int(net.active) == 0


@pytest.mark.expensive
def test_sac_progressive_resumes_exactly_after_sigkill(tmp_path, crl_cli):
    env = tmp_path / "cyclic-pendulum.yaml"
    env.write_text(yaml.safe_dump(CYCLIC_PENDULUM))
    crl_cli(*_train(str(env), "sac-progressive", 1200, tmp_path / "ref", *SAC_SMALL), check=True)
    (ref,) = (tmp_path / "ref" / "default").iterdir()
    assert (ref / "regimes.csv").read_text().count("\n") >= 4
    cmd = _train(str(env), "sac-progressive", 1200, tmp_path / "cut", *SAC_SMALL)
    check_resumes_exactly(
        cmd, tmp_path / "cut" / "default" / ref.name, ref, random.Random(1), steps=(300, 1000), resume_here=True
    )
