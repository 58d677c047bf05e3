"""PackNet (crl.plasticity.packnet): the masked forward, the pruning schedule, bit-equal isolation
on real SB3 models (frozen weights, a task's outputs), FastPPO's fused Adam step, checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO, SAC
from torch import nn
from torch.nn import functional as F

from crl.agents import build_model, with_tasks
from crl.checkpoint import load
from crl.errors import ConfigError
from crl.fast import adam
from crl.plasticity import interventions_of
from crl.plasticity.packnet import (
    PackNet,
    PackNetLinear,
    TaskView,
    packnet_layers,
    packnet_parameters,
    prune,
    prune_fraction,
    shares,
)
from crl.run.callbacks import InterventionHooks, RegimeLogger
from crl.spec import AgentSpec
from tests._models import cyclic_pendulum, tiny_model
from tests._resume import check_resumes_exactly, train_here


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread, as crl's runs act (small networks; two threads contend on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CHANGE = 200  # steps per task of the test env (cycle [0, 1]: tasks 0, 1, 0, ...)


HP = {
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 2},
    "sac": {"learning_starts": 32, "batch_size": 32, "buffer_size": 2000},
}


def _env():
    return cyclic_pendulum(tasks=2, change_every=CHANGE)


def _model(algo: str, optimizer: dict | None = None, sizes: list[int] | None = None):
    """A two-task PackNet model (16x16 networks unless ``sizes``) and its PackNet intervention."""
    model, ivs = tiny_model(
        algo,
        env=_env(),
        hyperparameters=HP[algo],
        sizes=sizes or [16, 16],
        network={"packnet": True},
        optimizer=optimizer,
        interventions=[{"packnet": {"retrain_steps": 20}}],
        boundary_aware=True,
        tasks=2,
    )
    return model, ivs.interventions[0]


class _Sink:
    def log(self, global_step, metrics):
        pass

    def summary(self, values):
        pass


def _learn(model, steps: int, first: bool = True) -> None:
    """``model.learn`` with crl's regime logger telling the interventions of regime changes."""
    hooks = InterventionHooks(interventions_of(model))
    model.learn(
        steps,
        callback=[RegimeLogger(_Sink(), on_regime_change=[hooks.on_regime_change]), hooks],
        reset_num_timesteps=first,
    )


def _outputs(model, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The actor's outputs (what acting reads): PPO's mean and log-std, SAC's mean and log-std."""
    with torch.no_grad():
        if isinstance(model, SAC):
            mean, log_std, _ = model.actor.get_action_dist_params(obs)
            return mean, log_std
        dist = model.policy.get_distribution(obs)
        return dist.distribution.mean, dist.distribution.stddev


def _task_obs(task: int, n: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(task)
    obs = torch.zeros(n, 5)
    obs[:, :3] = torch.randn(n, 3, generator=gen)
    obs[:, 3 + task] = 1.0
    return obs


def test_masked_forward_is_the_layer_of_the_weights_owned_by_earlier_tasks():
    torch.manual_seed(0)
    layer = PackNetLinear.of(nn.Linear(6, 4), TaskView(3), reads_task=True)
    with torch.no_grad():
        layer.owner.copy_(torch.randint(0, 3, (4, 6), dtype=torch.int16))
    layer.owners_changed()
    x = torch.randn(9, 6)
    x[:, 3:] = F.one_hot(torch.tensor([2, 0, 1, 1, 0, 2, 2, 0, 1]), 3).float()
    out = layer(x)
    for row, k in enumerate(x[:, 3:].argmax(1).tolist()):
        expected = F.linear(x[row : row + 1], layer.weight * (layer.owner <= k), layer.bias)
        torch.testing.assert_close(out[row : row + 1], expected, rtol=0, atol=1e-6)
    out.sum().backward()  # gradients reach only the weights each row's task sees
    assert layer.weight.grad is not None


def test_pruning_keeps_the_largest_weights_and_splits_capacity_evenly():
    assert [prune_fraction(t, 3) for t in range(3)] == [2 / 3, 0.5, 0.0]
    assert shares(300, 3) == [100, 100, 100] and shares(10, 4) == [3, 3, 2, 2]
    layer = PackNetLinear.of(nn.Linear(10, 10), TaskView(3))
    before = layer.weight.detach().clone()
    for task in range(3):
        prune(layer, task, prune_fraction(task, 3))
    counts = [int((layer.owner == t).sum()) for t in range(3)]
    assert counts == shares(100, 3) == [34, 33, 33]
    kept0 = before.abs()[layer.owner == 0]
    assert kept0.min() >= before.abs()[layer.owner != 0].max()  # task 0 kept the largest magnitudes
    assert torch.equal(layer.weight[layer.owner == 0], before[layer.owner == 0])
    assert bool((layer.weight[layer.owner > 0] == 0).all())  # pruned weights start at 0 for the next task


@pytest.mark.parametrize(
    ("algo", "optimizer"),
    [("ppo", {"name": "adam"}), ("ppo", {"name": "adamw", "weight_decay": 0.1}), ("sac", {"name": "adam"})],
)
def test_frozen_weights_and_a_tasks_outputs_are_bit_equal_after_later_tasks(algo, optimizer):
    model, iv = _model(algo, optimizer)
    _learn(model, CHANGE + 64)  # task 0, its pruning, retraining and freezing, then task 1
    assert (iv.task, iv.packed, iv.retrains) == (1, 1, 1)
    policy = model.policy
    frozen = {n: (m.weight.detach().clone(), m.owner.clone()) for n, m in packnet_layers(policy)}
    others = {n: p.detach().clone() for n, p in packnet_parameters(policy)}
    assert others and all(int((o == 0).sum()) > 0 and int((o == 1).sum()) > 0 for _, o in frozen.values())
    seen = _outputs(model, _task_obs(0))
    _learn(model, 3 * CHANGE, first=False)  # task 1 trains, then task 0 is revisited
    moved = False
    for n, m in packnet_layers(policy):
        weight, owner = frozen[n]
        assert torch.equal(m.owner, owner)
        assert torch.equal(m.weight[owner == 0], weight[owner == 0])  # bit-equal
        moved |= not torch.equal(m.weight[owner == 1], weight[owner == 1])
    assert moved, "task 1's weights never trained"
    for n, p in packnet_parameters(policy):
        assert torch.equal(p, others[n])
    for a, b in zip(_outputs(model, _task_obs(0)), seen, strict=True):
        assert torch.equal(a, b)  # task 0's policy on its own observations, bit for bit


def test_fastppo_takes_its_fused_adam_step_with_the_masks_and_leaves_the_actor_to_autograd():
    model, _ = _model("ppo", {"name": "adamw", "weight_decay": 0.5})
    assert adam.eligible(model.policy.optimizer)  # the lean fused step runs the masking hooks
    _learn(model, CHANGE + 64)
    layer = packnet_layers(model.policy)[0][1]
    weight, owner = layer.weight.detach().clone(), layer.owner.clone()
    _learn(model, 256, first=False)
    assert model.update_paths is not None and model.update_paths[0][1] == "autograd"
    assert torch.equal(layer.weight[owner == 0], weight[owner == 0])


def test_capacity_exhaustion_is_one_line():
    with pytest.raises(ConfigError, match=r"^packnet: no free weights left for task 1 in layer action_net "):
        _model("ppo", sizes=[1])  # the action head has 1 weight for 2 tasks


def test_packnet_needs_its_network_and_the_task_id():
    with pytest.raises(ConfigError, match="needs task_id: true"):
        AgentSpec.from_dict({"description": "x", "network": {"packnet": True}}, "a.yaml")
    spec = {"description": "x", "interventions": ["packnet"], "boundary_aware": True, "task_id": True}
    with pytest.raises(ConfigError, match=r"needs the PackNet network: set network\.packnet: true"):
        build_model(with_tasks(AgentSpec.from_dict(spec, "a.yaml", name="a"), 2), _env(), seed=0)
    with pytest.raises(ConfigError, match="boundary_aware"):
        build_model(AgentSpec.from_dict({**spec, "boundary_aware": False}, "a.yaml", name="a"), _env(), seed=0)


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_masks_are_in_the_saved_model_and_the_intervention_state_restores(tmp_path, algo):
    model, iv = _model(algo)
    _learn(model, CHANGE + 64)
    assert any(k.endswith("owner") for k in model.policy.state_dict())
    model.save(tmp_path / "m.zip")
    loaded = (SAC if algo == "sac" else PPO).load(tmp_path / "m.zip", device="cpu")
    for obs in (_task_obs(0), _task_obs(1)):
        for a, b in zip(_outputs(loaded, obs), _outputs(model, obs), strict=True):
            assert torch.equal(a, b)
    _, iv2 = _model(algo)
    iv2.load_state_dict(copy.deepcopy(iv.state_dict()))
    assert (iv2.task, iv2.packed, iv2.retrains) == (iv.task, iv.packed, iv.retrains)
    assert iv2.rng.bit_generator.state == iv.rng.bit_generator.state


def test_a_bad_retrain_steps_is_one_line():
    with pytest.raises(ValueError, match="retrain_steps"):
        PackNet(retrain_steps=-1)
    assert np.isclose(prune_fraction(0, 1), 0.0)


def _train(root, agent: str, env: str, steps: int, env_kwargs: list[str], agent_kwargs: list[str], ckpt: int):
    return [
        "train", "--env", env, "--agent", agent, "--steps", str(steps), "--seed", "1",
        "--env-kwargs", *env_kwargs, "--agent-kwargs", *agent_kwargs,
        "--checkpoint-every", str(ckpt), "--run-dir", str(root), "--wandb", "disabled", "--no-progress",
    ]  # fmt: skip


def _packed(run) -> dict:
    (state,) = load(run / "checkpoints" / "last.pt")["interventions"]["interventions"]
    return state


def test_ppo_packnet_on_the_cyclic_halfcheetah_resumes_exactly_after_kill_9(tmp_path, crl_cli):
    """Tasks forward (0-250), backward (250-500), forward again: task 0 is packed at 250 and its
    actor stays fixed on the revisit; a run killed at random resumes with the same rows."""
    hp = ["n_steps=256", "batch_size=64", "n_epochs=2", "interventions=[{packnet: {retrain_steps: 20}}]"]
    hp += ["network.pi=[32, 32]", "network.vf=[32, 32]"]

    def args(root):
        return _train(root, "ppo-packnet", "cyclic-halfcheetah", 768, ["change_every=250", "align=exact"], hp, 256)

    train_here(*args(tmp_path / "ref"))
    ref = tmp_path / "ref" / "default" / "cyclic-halfcheetah__ppo-packnet__s1"
    assert {k: _packed(ref)[k] for k in ("task", "packed", "retrains")} == {"task": 1, "packed": 1, "retrains": 1}
    run = tmp_path / "killed" / "default" / ref.name
    # checkpoints at 256 and 512
    check_resumes_exactly(args(tmp_path / "killed"), run, ref, steps=(300, 512), resume_here=True)


def test_sac_packnet_on_a_task_sequence_resumes_exactly_after_kill_9(tmp_path, crl_cli):
    """Two MuJoCo tasks with identical spaces (InvertedPendulum v5 then v4), alternating."""
    env = tmp_path / "seq.yaml"
    env.write_text(
        yaml.safe_dump(
            {
                "description": "a two-task sequence for PackNet's test",
                "id": "crl-test/PackNetSequence-v0",
                "base": "InvertedPendulum-v5",
                "drifts": [{"task_sequence": {"tasks": ["InvertedPendulum-v4"]}}],
                "schedule": {"cyclic": {"change_every": 150, "cycle": [0, 1], "align": "episode_end"}},
            }
        )
    )
    hp = ["learning_starts=50", "buffer_size=1000", "batch_size=32", "interventions=[{packnet: {retrain_steps: 20}}]"]
    hp += ["network.pi=[32, 32]", "network.qf=[32, 32]"]
    args = lambda root: _train(root, "sac-packnet", str(env), 500, ["change_every=150"], hp, 100)  # noqa: E731
    train_here(*args(tmp_path / "ref"))
    (ref,) = (tmp_path / "ref" / "default").iterdir()
    assert _packed(ref)["packed"] == 1 and _packed(ref)["retrains"] == 1
    check_resumes_exactly(
        args(tmp_path / "killed"), tmp_path / "killed" / "default" / ref.name, ref, steps=(200, 380), resume_here=True
    )
