"""TD3 beside PPO and SAC: the walker finds its nets (not the target nets, not the output's
tanh), every intervention and optimizer that applies to SAC acts on TD3, EWC/MAS and A-GEM
follow TD3's equations, target nets stay consistent, and TD3 runs from ``crl sweep``."""

from __future__ import annotations

import inspect
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC, TD3

from crl.agents import build_model
from crl.plasticity import INTERVENTIONS
from crl.plasticity.agem import AGEM, td3_actor_loss, td3_critic_loss
from crl.plasticity.forgetting import EWC, MAS
from crl.plasticity.nets import find_mlps, hidden_layers
from crl.plasticity.units import ReDo, Reset
from crl.spec import AgentSpec

#: Fast arguments of every intervention, strong enough to change a 100-step TD3 run.
FAST = {
    "l2_init": {"strength": 1.0},
    "parseval": {},
    "weight_clip": {"kappa": 0.5},
    "reset_optimizer": {},
    "agem": {"samples": 64, "batch_size": 16},
    "l2_prev": {"strength": 100.0},
    "ewc": {"strength": 100.0, "samples": 64},
    "mas": {"strength": 100.0, "samples": 64},
    "si": {"c": 100.0},
    "cbp": {"replacement_rate": 0.05, "maturity": 5},
    "redo": {"tau": 0.5, "every": 5},
    "shrink_perturb": {"shrink": 0.99, "sigma": 0.01},
    "reset": {"layers": 1},
    "injection": {},
    "distill": {"samples": 64, "batch_size": 16, "strength": 10.0},
    "genreplay": {"vae_steps": 20, "strength": 10.0},
    "snr": {"percentile": 0.5},
    "regrama": {"tau": 0.5, "every": 5},
    "hare_tortoise": {"every": 10},
    "cchain": {},
}
#: crl's own optimizers (sac-trac's TRAC, ppo-upgd's UPGD).
OPTIMIZERS = {"trac": {"name": "trac"}, "upgd": {"name": "upgd"}}


def _spec(interventions=(), boundary_aware=False, optimizer=None, **hp) -> AgentSpec:
    data = {
        "description": "tiny td3",
        "algo": "td3",
        "hyperparameters": {"learning_starts": 30, "buffer_size": 500, "batch_size": 16, **hp},
        "network": {"pi": [16, 16], "qf": [16, 16], "init": "torch_default"},
        "interventions": list(interventions),
        "boundary_aware": boundary_aware,
        "optimizer": optimizer or {"name": "adam"},
    }
    return AgentSpec.from_dict(data, "td3-test")


def _train(spec: AgentSpec, seed: int = 0):
    """100 steps on Pendulum with a regime boundary at step 60 (as ``crl train`` signals one)."""
    model, ivs = build_model(spec, gym.make("Pendulum-v1"), seed=seed)
    model.learn(60)
    ivs.on_regime_change(1)
    model.learn(40, reset_num_timesteps=False)
    return model, ivs


@pytest.fixture(scope="module")
def plain_actor() -> dict[str, torch.Tensor]:
    return _actor_state(_train(_spec())[0])


def _actor_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.actor.state_dict().items()}


def test_the_walker_finds_td3s_actor_and_critics_and_not_its_output_tanh():
    model, _ = build_model(_spec(), gym.make("Pendulum-v1"), seed=0)
    views = find_mlps(model)
    assert [v.name for v in views] == ["actor", "qf0", "qf1"]
    actor, mu = views[0], model.actor.mu
    assert [layer.path for layer in actor.layers] == ["0", "2"]
    assert actor.layers[1].outs == [mu[4]] and actor.output == [mu[4]]  # the tanh squashes the output
    assert actor.optimizer is model.actor.optimizer and actor.targets == [model.actor_target.mu]
    for i, view in enumerate(views[1:]):
        assert view.targets == [model.critic_target.q_networks[i]] and view.optimizer is model.critic.optimizer
    target_ids = {id(p) for p in (*model.actor_target.parameters(), *model.critic_target.parameters())}
    assert not any(id(p) in target_ids for v in views for p in v.parameters())  # target nets are no views
    assert [layer.path for layer in hidden_layers(model.actor)] == ["mu.0", "mu.2"]  # the diagnostics' walk
    assert [layer.path for layer in hidden_layers(model.critic)] == ["qf0.0", "qf0.2", "qf1.0", "qf1.2"]
    # the target actor starts equal to the actor (crl re-initialises the actor after SB3 copied it)
    for a, t in zip(model.actor.parameters(), model.actor_target.parameters(), strict=True):
        assert torch.equal(a, t)


def test_the_fast_arguments_cover_every_intervention():
    """Every intervention applies to TD3 but NaP, which needs LayerNorm (not a TD3 option), and
    PackNet, which needs PackNet's masked actor (``network.packnet``: PPO and SAC)."""
    assert set(FAST) == set(INTERVENTIONS) - {"none", "nap", "packnet"}
    with pytest.raises(Exception, match="LayerNorm"):
        build_model(_spec([{"nap": {}}]), gym.make("Pendulum-v1"), seed=0)


@pytest.mark.parametrize("name", [*sorted(FAST), *sorted(OPTIMIZERS)])
def test_every_intervention_and_optimizer_that_applies_to_sac_acts_on_td3(name, plain_actor):
    """The same seed with and without the method: the method changes the actor's training,
    nothing becomes non-finite, and the target actor keeps the actor's structure."""
    if name in OPTIMIZERS:
        spec = _spec(optimizer=OPTIMIZERS[name])
    else:
        boundary = INTERVENTIONS[name].needs_boundaries or name in ("reset", "injection", "reset_optimizer")
        spec = _spec([{name: FAST[name]}], boundary_aware=boundary)
    model, ivs = _train(spec)
    ref, got = plain_actor, _actor_state(model)
    assert all(torch.isfinite(v).all() for v in got.values())
    assert set(got) != set(ref) or any(not torch.equal(ref[k], got[k]) for k in ref), f"{name} changed nothing"
    shapes = [tuple(p.shape) for p in model.actor_target.parameters()]
    assert [tuple(p.shape) for p in model.actor.parameters()] == shapes
    if name in FAST:
        (iv,) = ivs.interventions
        restored = INTERVENTIONS[name](**FAST[name])
        restored.attach(build_model(spec, gym.make("Pendulum-v1"), seed=0)[0])
        restored.load_state_dict(iv.state_dict())  # its state comes back on a fresh TD3


def test_redo_on_td3_keeps_the_target_actors_copy_of_the_units_consistent():
    model, ivs = build_model(_spec([{"redo": {"tau": 0.0}}]), gym.make("Pendulum-v1"), seed=0)
    (redo,) = ivs.interventions
    assert isinstance(redo, ReDo)
    actor = redo.views[0]
    idx = torch.tensor([1, 4])
    mu, target = model.actor.mu, model.actor_target.mu
    with torch.no_grad():
        target[2].weight.add_(1.0)  # targets lag the online nets: only the reset units must follow
        redo.reset_units(actor, actor.layers[1], idx, reset_optimizer=True)
    assert torch.equal(target[2].weight[idx], mu[2].weight[idx])
    assert torch.equal(target[2].bias[idx], torch.zeros(2)) and torch.equal(mu[2].bias[idx], torch.zeros(2))
    assert torch.equal(target[4].weight[:, idx], torch.zeros(1, 2))
    assert torch.equal(mu[4].weight[:, idx], torch.zeros(1, 2))
    others = torch.tensor([0, 2, 3])
    assert not torch.equal(target[2].weight[others], mu[2].weight[others])  # the other units keep the target's lag


def test_a_reset_at_a_regime_change_restarts_the_target_actor_too():
    model, ivs = build_model(_spec([{"reset": {"layers": 1}}], boundary_aware=True), gym.make("Pendulum-v1"), seed=0)
    model.learn(60)
    before = _actor_state(model)
    ivs.on_regime_change(1)
    (reset,) = ivs.interventions
    assert isinstance(reset, Reset) and reset.resets == 1
    after = _actor_state(model)
    assert not torch.equal(before["mu.4.weight"], after["mu.4.weight"])  # the output layer is fresh
    assert torch.equal(before["mu.0.weight"], after["mu.0.weight"])  # the hidden layers are kept
    for k, v in model.actor_target.state_dict().items():
        assert torch.equal(v, after[k]), k


def _states(model, n=12) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.as_tensor(rng.uniform(-1, 1, (n, 3)), dtype=torch.float32)


def test_ewc_and_mas_importances_of_td3s_deterministic_actor():
    """EWC: mean over states of sum_j (d a_j / d theta)^2 (the Fisher of N(a(s), 1)); MAS: mean
    over states of |d ||a(s)||^2 / d theta|; both against per-state autograd."""
    model, _ = build_model(_spec(), gym.make("Pendulum-v1"), seed=0)
    obs = _states(model)
    act = torch.zeros(len(obs), 1)
    for cls in (EWC, MAS):
        iv = cls(strength=1.0)
        iv.attach(model)
        omega = iv.importance(obs, act)
        for name, p in model.actor.named_parameters():
            expected = torch.zeros_like(p)
            for s in obs:
                a = model.actor(s.unsqueeze(0)).reshape(-1)
                if cls is EWC:
                    for j in range(len(a)):
                        (g,) = torch.autograd.grad(a[j], p, retain_graph=True)
                        expected += g**2
                else:
                    (g,) = torch.autograd.grad((a**2).sum(), p)
                    expected += g.abs()
            torch.testing.assert_close(omega[f"actor.{name}"], expected / len(obs), rtol=1e-5, atol=1e-8)


def _fixed_batch(model, n=16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "obs": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, 1)).astype(np.float32),
        "rewards": rng.normal(size=(n, 1)).astype(np.float32),
        "next_obs": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "dones": (rng.uniform(size=(n, 1)) < 0.2).astype(np.float32),
    }


def test_agem_uses_sb3_td3s_own_losses(monkeypatch):
    """A-GEM's TD3 losses equal the losses SB3's TD3.train computes on the same batch with the
    same smoothing-noise draws (learning rate 0, so the actor's loss sees the same critic)."""
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    model, _ = build_model(_spec(policy_delay=1), gym.make("Pendulum-v1"), seed=0)
    model.lr_schedule = lambda _: 0.0
    batch = _fixed_batch(model)
    t = {k: torch.as_tensor(v) for k, v in batch.items()}
    samples = ReplayBufferSamples(t["obs"], t["actions"], t["next_obs"], t["dones"], t["rewards"])
    monkeypatch.setattr(model.replay_buffer, "sample", lambda *a, **k: samples)
    torch.manual_seed(5)
    critic = td3_critic_loss(model, batch).item()
    actor = td3_actor_loss(model, batch).item()
    torch.manual_seed(5)
    model.train(gradient_steps=1, batch_size=16)
    logged = model.logger.name_to_value
    assert critic == pytest.approx(logged["train/critic_loss"], rel=1e-6)
    assert actor == pytest.approx(logged["train/actor_loss"], rel=1e-6)
    agem = AGEM(samples=16, batch_size=16)
    agem.attach(model)
    torch.manual_seed(5)
    assert agem.reference_loss(model.critic.optimizer, batch).item() == pytest.approx(critic, rel=1e-6)
    assert agem.reference_loss(model.actor.optimizer, batch).item() == pytest.approx(actor, rel=1e-6)


def test_td3_hyperparameters_are_checked_and_sb3s_defaults_are_the_presets():
    from crl.catalog import agent_specs
    from crl.errors import ConfigError

    for bad, message in [
        ({"policy_delay": 0}, "policy_delay must be an integer"),
        ({"target_noise_clip": -1}, "target_noise_clip must be a number"),
        ({"action_noise": {"normal": {"sigma": -0.1}}}, "action_noise.normal.sigma must be a number"),
        ({"action_noise": {"ou": {"sigma": 0.1}}}, "action_noise must be null or {normal: {sigma: <number>}}"),
        ({"action_noise": {"normal": {}}}, "action_noise.normal takes exactly sigma"),
        ({"ent_coef": 0.1}, "unknown key 'ent_coef' for td3"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
            spec = _spec(**bad)
            build_model(spec, gym.make("Pendulum-v1"), seed=0)
    spec = agent_specs()["td3"]
    defaults = {k: p.default for k, p in inspect.signature(TD3.__init__).parameters.items()}
    for k, v in spec.hyperparameters.items():
        if k not in ("learning_starts", "action_noise"):  # the two stated changes
            assert defaults[k] == v, k
    model, _ = build_model(spec, gym.make("Pendulum-v1"), seed=0)
    assert [m.out_features for m in model.actor.mu if isinstance(m, torch.nn.Linear)] == [400, 300, 1]
    assert repr(model.action_noise) == "NormalActionNoise(mu=[0.], sigma=[0.1])"
    assert not isinstance(model, SAC)


def test_td3_runs_from_crl_sweep(tmp_path, crl_cli):
    import yaml

    sweep = {
        "description": "tiny td3 sweep",
        "envs": ["slippery-hopper"],
        "agents": ["td3", "td3-redo"],
        "seeds": 1,
        "steps": 150,  # 100 updates, a regime change at 100
        "env_kwargs": {"change_every": 100},
        "agent_kwargs": {"learning_starts": 50, "buffer_size": 500, "batch_size": 32},
        "checkpoint_every": 100,
        "wandb": "disabled",
    }
    f = tmp_path / "td3.yaml"
    f.write_text(yaml.safe_dump(sweep))
    proc = crl_cli("sweep", str(f), "--run-dir", str(tmp_path / "runs"), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    for agent in ("td3", "td3-redo"):
        run = tmp_path / "runs" / "td3" / f"slippery-hopper__{agent}__s0"
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "finished" and status["global_step"] == 150
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["agent"]["algo"] == "td3"
        assert "losses/actor_loss" in (run / "metrics.csv").read_text().splitlines()[0]


def test_redo_checks_each_network_every_every_of_its_own_updates(monkeypatch):
    """With policy delay 2 the critics step twice per actor step: ReDo checks each network at
    its own every-th update (critics at gradient steps 5, 10, ...; the actor at its 5th, 10th,
    ... update), never at two consecutive gradient steps."""
    checked: list[tuple[str, int]] = []
    model, ivs = build_model(_spec([{"redo": {"tau": 0.0, "every": 5}}]), gym.make("Pendulum-v1"), seed=0)
    (iv,) = ivs.interventions
    after = iv._after_step

    def spy(view):
        n = iv.optimizer_steps(view)
        if n % iv.every == 0:
            checked.append(("actor" if view.optimizer is model.actor.optimizer else "critic", n))
        after(view)

    monkeypatch.setattr(iv, "_after_step", spy)
    model.learn(130)  # learning_starts 30: 100 gradient steps, 50 actor updates
    critic = [n for who, n in checked if who == "critic"]
    actor = [n for who, n in checked if who == "actor"]
    # two critics share one optimizer: each critic-count is seen once per critic view
    assert sorted(set(critic)) == [5 * k for k in range(1, len(set(critic)) + 1)]
    assert actor == [5 * k for k in range(1, len(actor) + 1)]
    assert max(critic) >= 2 * max(actor) - 5 > 0  # the critics count twice as many updates
    restored = type(iv)(tau=0.0, every=5)
    restored._optimizers, restored._optimizer_steps = iv._optimizers, [0] * len(iv._optimizers)
    restored.load_state_dict(iv.state_dict())
    assert restored._optimizer_steps == iv._optimizer_steps
