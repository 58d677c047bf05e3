"""FastSAC makes the same gradient steps as SB3's SAC (same state, batch and draws), and the same
run from the same seed; interventions run on its fast path; what it does not cover goes to SB3's."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.logger import Logger

import crl
from crl.fast.sac import FastSAC

KW = dict(learning_starts=100, batch_size=64, seed=5, policy_kwargs=dict(net_arch=[64, 64]))


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


def _grad_spy(model):
    """Every optimizer step's gradients, recorded by a step pre-hook (as the optimizers see them)."""
    seen = {}
    opts = {"actor": model.actor.optimizer, "critic": model.critic.optimizer}
    if model.ent_coef_optimizer is not None:
        opts["ent_coef"] = model.ent_coef_optimizer
    for name, opt in opts.items():

        def pre(opt, args, kwargs, name=name):
            seen[name] = [p.grad.clone() for g in opt.param_groups for p in g["params"]]

        opt.register_step_pre_hook(pre)
    return seen


def _filled(cls, **kw):
    """A model on Pendulum with 300 random transitions in its buffer, as ``learn`` leaves them."""
    model = cls("MlpPolicy", gym.make("Pendulum-v1"), **{**KW, "learning_starts": 300, **kw})
    model.learn(300)
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


CASES = {
    "defaults": {},
    "tanh, 3 critics": dict(policy_kwargs=dict(net_arch=[32, 48], activation_fn=torch.nn.Tanh, n_critics=3)),
    "fixed entropy coefficient, gamma 0.9": dict(ent_coef=0.2, gamma=0.9),
    "256x256 nets": dict(policy_kwargs=dict(net_arch=[256, 256]), batch_size=256),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_gradient_step_equals_sb3(case):
    """From the same state, the same batch and the same draws: the same losses, the same
    gradients at every optimizer's step, the same parameters after (float tolerance)."""
    torch.set_num_threads(1)
    a, b = _filled(SAC, **CASES[case]), _filled(FastSAC, **CASES[case])
    b.policy.load_state_dict(a.policy.state_dict())
    if a.log_ent_coef is not None:
        b.log_ent_coef.data.copy_(a.log_ent_coef.data)
    spies = [_grad_spy(a), _grad_spy(b)]
    for model in (a, b):
        np.random.seed(11)
        torch.manual_seed(11)
        model.train(gradient_steps=1, batch_size=model.batch_size)
    assert b.fast_path is True
    sa, sb = spies
    assert sa.keys() == sb.keys()
    for name in sa:
        for ga, gb in zip(sa[name], sb[name], strict=True):
            torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    la, lb = a.logger.name_to_value, b.logger.name_to_value
    assert la.keys() == lb.keys()
    for key in la:
        assert lb[key] == pytest.approx(la[key], rel=1e-5, abs=1e-7), key
    # Adam divides by the gradient's own size: a gradient near 0 moves a parameter by up to lr
    torch.testing.assert_close(_params(b), _params(a), rtol=1e-5, atol=1e-5)


def test_a_short_run_from_the_same_seed_gives_the_same_parameters_as_sb3():
    """300 gradient steps after the warm-up, acting included (same draws from the same seed)."""
    torch.set_num_threads(1)
    a = SAC("MlpPolicy", gym.make("Pendulum-v1"), **KW)
    a.learn(400)
    b = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), **KW)
    b.learn(400)
    assert b.fast_path is True and a._n_updates == b._n_updates == 300
    np.testing.assert_allclose(b.replay_buffer.actions[:400], a.replay_buffer.actions[:400], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_params(b), _params(a), rtol=1e-3, atol=2e-4)
    torch.testing.assert_close(b.log_ent_coef, a.log_ent_coef, rtol=1e-4, atol=1e-5)


def test_a_saved_model_loads_with_sac_load(tmp_path):
    model = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), **KW)
    model.learn(120)
    model.save(tmp_path / "m.zip")
    loaded = SAC.load(tmp_path / "m.zip")
    torch.testing.assert_close(_params(loaded), _params(model), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [(dict(use_sde=True), "gSDE"), (dict(optimize_memory_usage=True, replay_buffer_kwargs={}), "replay buffer")],
)
def test_what_it_does_not_cover_takes_sb3s_step(kw, reason):
    kw = {**KW, **kw}
    if "optimize_memory_usage" in kw:
        kw["replay_buffer_kwargs"] = dict(handle_timeout_termination=False)
    model = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), **kw)
    model.learn(110)
    assert model.fast_path is False and reason in model.fast_path_reason()
    assert model._n_updates == 10


def test_a_critic_parameter_outside_its_q_networks_takes_sb3s_step():
    model = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), **KW)
    model.learn(105)
    assert model.fast_path is True
    model.critic.register_parameter("extra", torch.nn.Parameter(torch.ones(3)))
    model.critic_target.register_parameter("extra", torch.nn.Parameter(torch.zeros(3)))
    model.learn(5, reset_num_timesteps=False)
    assert model.fast_path is False and "outside its q_networks" in model.fast_path_reason()
    assert 0 < float(model.critic_target.extra[0]) < 1  # SB3's Polyak update reached it


def test_a_module_swapped_between_steps_is_seen():
    model = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), **KW)
    model.learn(105)
    assert model.fast_path is True
    model.critic.qf0[1] = torch.nn.ELU()  # an activation the hand passes do not cover
    model.learn(5, reset_num_timesteps=False)
    assert model.fast_path is False and "ELU" in model.fast_path_reason()


def test_a_parameter_replaced_between_steps_is_trained_as_sb3_trains_it():
    """A layer's weight replaced by a new Parameter (the same values), in its optimizer too: the
    next step builds a new plan on it (no tensor comparison of the old and new) and the run
    goes on as SB3's does with the same replacement."""
    runs = []
    for cls in (SAC, FastSAC):
        torch.set_num_threads(1)
        model = cls("MlpPolicy", gym.make("Pendulum-v1"), **KW)
        model.learn(150)
        lin, opt = model.critic.qf1[2], model.critic.optimizer
        old = lin.weight
        lin.weight = torch.nn.Parameter(old.detach().clone())
        group = opt.param_groups[0]
        group["params"] = [lin.weight if p is old else p for p in group["params"]]
        opt.state[lin.weight] = opt.state.pop(old)
        model.learn(50, reset_num_timesteps=False)
        assert not torch.equal(lin.weight, old)  # the new one trained
        runs.append(model)
    assert runs[1].fast_path is True
    torch.testing.assert_close(_params(runs[1]), _params(runs[0]), rtol=1e-3, atol=2e-4)


@pytest.mark.parametrize(
    ("agent", "fast"),
    [
        ("sac-cbp", True),
        ("sac-redo", True),
        ("sac-reset", True),
        ("sac-ewc", True),
        ("sac-trac", True),
        ("sac-nap", False),
    ],
)
def test_sac_interventions_train(agent, fast):
    """CBP, ReDo, resets, EWC and TRAC train on the fast path (their feature capture and
    optimizer hooks run there); NAP's LayerNorm networks take SB3's step."""
    torch.set_num_threads(1)
    model = crl.make_agent(agent, "slippery-hopper", seed=0, learning_starts=50, batch_size=32, buffer_size=1000)
    before = _params(model).clone()
    model.learn(150)
    assert model.fast_path is fast, model.fast_path_reason()
    after = _params(model)
    assert torch.isfinite(after).all() and not torch.equal(before, after)


def test_cbp_sees_the_features_of_the_fast_step():
    """CBP's feature capture runs on the fast path: its utilities are updated at every step."""
    from crl.plasticity import interventions_of

    torch.set_num_threads(1)
    model = crl.make_agent("sac-cbp", "slippery-hopper", seed=0, learning_starts=50, batch_size=32, buffer_size=1000)
    model.learn(80)
    (cbp,) = interventions_of(model).interventions
    assert model.fast_path is True
    layers = [layer for view in cbp.views for layer in view.layers]
    assert layers and all(layer.features is not None and layer.features.shape[0] == 32 for layer in layers)


@pytest.mark.parametrize("parallel", [False, True])
def test_optimizer_hooks_run_with_autograd_on_as_in_sb3(parallel):
    """The hand step runs under one ``no_grad``; the optimizers' hooks still see autograd on (as
    in SB3's ``train``), so a hook that differentiates something works."""
    model = _filled(FastSAC, parallel_update=parallel)
    modes = []

    def differentiates(opt, args, kwargs):
        x = torch.ones(2, requires_grad=True)
        (g,) = torch.autograd.grad((x * x).sum(), x)
        modes.append(torch.is_grad_enabled() and bool((g == 2).all()))

    for opt in (model.actor.optimizer, model.critic.optimizer, model.ent_coef_optimizer):
        opt.register_step_pre_hook(differentiates)
    model.train(3, model.batch_size)
    model.close_workers()
    assert model.fast_path is True and model.parallel_steps == (3 if parallel else 0)
    assert modes == [True] * 9
    assert torch.is_grad_enabled()


def _buffer(n_envs, obs_dtype, action_dtype, adds):
    from stable_baselines3.common.buffers import ReplayBuffer

    obs_space = gym.spaces.Box(-np.inf, np.inf, (5,), dtype=obs_dtype)
    buf = ReplayBuffer(40, obs_space, gym.spaces.Box(-1, 1, (2,), dtype=action_dtype), n_envs=n_envs)
    rng = np.random.default_rng(7)
    for _ in range(adds):
        done = rng.random(n_envs) < 0.3
        infos = [{"TimeLimit.truncated": bool(t)} for t in rng.random(n_envs) < 0.5]
        obs, nxt = rng.normal(size=(2, n_envs, 5))
        buf.add(obs, nxt, rng.uniform(-1, 1, (n_envs, 2)), rng.normal(size=n_envs), done, infos)
    return buf


@pytest.mark.parametrize(
    "n_envs, obs_dtype, adds", [(1, np.float64, 25), (3, np.float64, 60), (2, np.float32, 10)], ids=str
)
def test_the_batch_holds_replay_buffer_samples_rows_bitwise(n_envs, obs_dtype, adds):
    """``sample_batch`` (also written into given tensors, a worker's shared buffers) draws what
    SB3's ``ReplayBuffer.sample`` draws: the same rows, timeouts not counted as dones, the same
    generator state after, observations as float32 as SB3's ``preprocess_obs`` makes them."""
    from crl.fast.sac_update import Batch, sample_batch

    buf = _buffer(n_envs, obs_dtype, np.float32, adds)
    np.random.seed(11)
    ref = buf.sample(16)
    after = np.random.rand()
    into = Batch(torch.zeros(16, 5), torch.zeros(16, 2), torch.zeros(16, 5), torch.zeros(16, 1), torch.zeros(16, 1), 0)
    for out in (None, into):
        np.random.seed(11)
        b = sample_batch(buf, 16, 0.9, into=out)
        assert np.random.rand() == after and b.discounts == 0.9
        assert out is None or all(x is y for x, y in zip(b[:5], into[:5]))
        expected = (ref.observations.float(), ref.actions, ref.next_observations.float(), ref.dones, ref.rewards)
        for got, want in zip(b[:5], expected):
            assert got.dtype == want.dtype == torch.float32 and torch.equal(got, want)
    assert 0 < float(ref.dones.sum()) < 16 or n_envs == 2  # the case has dones to get right


def test_a_buffer_of_float16_actions_keeps_them_and_the_given_tensors_alone():
    """(SB3 stores float64 actions as float32; float16 ones stay float16.)"""
    from crl.fast.sac_update import Batch, sample_batch

    buf = _buffer(1, np.float32, np.float16, 12)
    into = Batch(*(torch.zeros(4, w) for w in (5, 2, 5, 1, 1)), 0.0)
    np.random.seed(0)
    ref = buf.sample(4)
    np.random.seed(0)
    b = sample_batch(buf, 4, 0.99, into=into)
    assert b.actions.dtype == torch.float16 and torch.equal(b.actions, ref.actions)
    assert all(not x.any() for x in into[:5])
