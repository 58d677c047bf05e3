"""FastPPO's parallel update: the critic's half of every minibatch in a worker process gives
bitwise the parameters, losses and intervention state of the single-process update.
"""

import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import crl  # noqa: F401  (registers the crl/ env ids)
from crl.agents import build_model
from crl.catalog import resolve_agent
from crl.fast.critic_worker import CriticWorker, hand_critic_step
from crl.fast.mlp import MlpPlan
from crl.fast.ppo import PARALLEL_MIN_WORK, FastPPO
from tests._models import fast_cbp_run
from tests._procs import process_alive

KW = dict(
    n_steps=256,
    batch_size=64,
    n_epochs=3,
    learning_rate=1e-3,
    ent_coef=0.01,
    vf_coef=0.5,
    max_grad_norm=float("inf"),
    seed=3,
    policy_kwargs=dict(net_arch=dict(pi=[32, 32], vf=[32, 32])),
)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


def _train(parallel, env="Pendulum-v1", steps=768, **kw):
    torch.set_num_threads(1)
    model = FastPPO("MlpPolicy", gym.make(env), parallel_update=parallel, **{**KW, **kw})
    model.learn(steps)
    used = model._critic_worker is not None
    model.close_workers()
    return model, used


@pytest.mark.parametrize("max_grad_norm", [float("inf"), 0.5])
def test_parallel_update_equals_single_process_bitwise(max_grad_norm):
    single, used_single = _train(False, max_grad_norm=max_grad_norm)
    par, used_par = _train(True, max_grad_norm=max_grad_norm)
    assert (used_single, used_par) == (False, True)
    assert torch.equal(_params(single), _params(par))
    for key in ("train/loss", "train/value_loss", "train/policy_gradient_loss", "train/entropy_loss"):
        assert single.logger.name_to_value[key] == par.logger.name_to_value[key], key
    assert single._n_updates == par._n_updates == 9


def test_parallel_update_matches_sb3_to_float_tolerance():
    torch.set_num_threads(1)
    kw = {**KW, "ent_coef": 0.0, "vf_coef": 1.0}
    a = PPO("MlpPolicy", gym.make("Pendulum-v1"), **kw)
    a.learn(512)
    b = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), parallel_update=True, **kw)
    b.learn(512)
    assert b._critic_worker is not None
    b.close_workers()
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-5, atol=1e-6)


def test_critic_parameters_given_new_storage_reach_the_worker():
    """The trainer's critic parameters live in the worker's shared buffers; an intervention
    that assigns ``p.data`` (new storage) between updates is picked up, not silently ignored.
    """
    torch.set_num_threads(1)
    runs = {}
    for parallel in (False, True):
        model = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), parallel_update=parallel, **KW)
        model.learn(256)
        worker = model._critic_worker
        for p in model.policy.value_net.parameters():
            p.data = p.data * 1.5 + 0.25  # new storage, new values
        model.learn(512, reset_num_timesteps=False)
        assert model._critic_worker is worker  # the same worker saw the new values
        runs[parallel] = _params(model)
        model.close_workers()
    assert worker is not None
    assert torch.equal(runs[False], runs[True])


def test_discrete_actions_and_separate_extractors():
    pk = dict(net_arch=dict(pi=[16], vf=[16, 16]), share_features_extractor=False)
    single, _ = _train(False, env="CartPole-v1", steps=512, policy_kwargs=pk)
    par, used = _train(True, env="CartPole-v1", steps=512, policy_kwargs=pk)
    assert used and torch.equal(_params(single), _params(par))


def test_continual_backprop_sees_the_workers_critic_features():
    """CBP's utilities of the value net come from features computed in the worker."""

    hp = {"n_steps": 256, "batch_size": 64, "n_epochs": 2}
    (a, cbp_a, used_a), (b, cbp_b, used_b) = (fast_cbp_run("ppo-cbp", hp, 768, parallel) for parallel in (False, True))
    assert (used_a, used_b) == (False, True)
    assert torch.equal(_params(a), _params(b))
    assert sorted(cbp_b.util) == ["pi/0", "pi/1", "vf/0", "vf/1"]
    for key in cbp_a.util:
        assert torch.equal(cbp_a.util[key], cbp_b.util[key]) and torch.equal(cbp_a.age[key], cbp_b.age[key]), key
    assert all(cbp_b.util[k].abs().sum() > 0 for k in ("vf/0", "vf/1"))  # the value net's layers were fed
    assert cbp_a.replaced == cbp_b.replaced > 0


def test_an_injection_inside_an_update_switches_to_one_process_at_that_minibatch():
    """Plasticity injection swaps the value head in an optimizer post-hook, between two minibatches
    of one update: from there on the update runs in one process and stays exactly the same."""

    def run(parallel):
        spec = resolve_agent("ppo-injection")
        spec.hyperparameters.update(n_steps=256, batch_size=64, n_epochs=2)
        spec.network.pi, spec.network.vf = [24, 24], [24, 24]
        spec.interventions = [{"injection": {"at_step": 3, "at_regime_change": False}}]
        torch.set_num_threads(1)
        model, iv = build_model(spec, gym.make("crl/SlipperyHopper-v0"), seed=2)
        model.parallel_update = parallel
        paths = []
        model.learn(256)
        paths.append(model.update_paths)
        model.learn(256, reset_num_timesteps=False)
        paths.append(model.update_paths)
        model.close_workers()
        (inj,) = iv.interventions
        return model, inj, paths

    (a, inj_a, paths_a), (b, inj_b, paths_b) = run(False), run(True)
    # the first update steps aside for autograd at its fourth minibatch; the next one starts there
    assert paths_a == [[(0, "hand", "hand"), (3, "autograd", "autograd")], [(0, "autograd", "autograd")]]
    assert paths_b == [[(0, "hand", "worker"), (3, "autograd", "autograd")], [(0, "autograd", "autograd")]]
    assert inj_a.injections == inj_b.injections == 1
    assert type(b.policy.value_net).__name__ == "InjectedLinear"
    assert torch.equal(_params(a), _params(b))


def test_unsupported_critics_fall_back_to_one_process():
    model = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), parallel_update=True, **KW)
    assert CriticWorker.unsupported(model.policy) is None
    handle = model.policy.mlp_extractor.value_net[0].register_forward_hook(lambda m, a, o: None)
    assert "forward hook" in CriticWorker.unsupported(model.policy)
    model.learn(256)
    assert model._critic_worker is None  # trained in one process
    handle.remove()
    hook = model.policy.value_net.weight.register_hook(lambda g: g)
    assert "gradient hooks" in CriticWorker.unsupported(model.policy)
    hook.remove()
    dict_env = FastPPO("MultiInputPolicy", _DictEnv(), n_steps=64, batch_size=32)
    assert "features extractor" in CriticWorker.unsupported(dict_env.policy)


class _DictEnv(gym.Env):
    observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,)), "b": gym.spaces.Box(-1, 1, (3,))})
    action_space = gym.spaces.Box(-1, 1, (1,))

    def reset(self, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def test_automatic_mode_uses_the_worker_only_for_large_enough_critics(monkeypatch):
    import crl.fast.ppo as fastppo

    monkeypatch.setattr(fastppo, "usable_cores", lambda: 2)
    small, used = _train(None, steps=256)
    assert not used  # 32x32 nets x 64 rows is far below the threshold
    monkeypatch.setattr(fastppo, "PARALLEL_MIN_WORK", 1000)
    _, used = _train(None, steps=256)
    assert used
    monkeypatch.setattr(fastppo, "usable_cores", lambda: 1)
    _, used = _train(None, steps=256)
    assert not used
    critic = [*small.policy.mlp_extractor.value_net.parameters(), *small.policy.value_net.parameters()]
    assert 64 * sum(p.numel() for p in critic) < PARALLEL_MIN_WORK


def test_a_changed_critic_gets_a_new_worker_and_a_dead_worker_is_reported():
    model = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), parallel_update=True, **KW)
    model.learn(256)
    first = model._critic_worker
    model.learn(256, reset_num_timesteps=False)
    assert model._critic_worker is first  # reused across updates
    with torch.no_grad():  # a structural change: the worker must be rebuilt
        model.policy.mlp_extractor.value_net[0] = torch.nn.Linear(3, 32)
    model.policy.optimizer = torch.optim.Adam(model.policy.parameters(), lr=1e-3)
    model.learn(256, reset_num_timesteps=False)
    assert model._critic_worker is not first and first.closed
    os.kill(model._critic_worker.handle.proc.pid, signal.SIGKILL)
    model._critic_worker.handle.proc.join(5)
    with pytest.raises(RuntimeError, match="critic worker process died"):
        model.learn(256, reset_num_timesteps=False)
    model.close_workers()


def test_saved_model_has_no_worker_and_loads_with_sb3(tmp_path):
    model, _ = _train(True, steps=256)
    model.learn(256, reset_num_timesteps=False)
    model.save(tmp_path / "m.zip")
    model.close_workers()
    loaded = PPO.load(tmp_path / "m.zip")
    assert torch.equal(_params(model), _params(loaded))
    again = FastPPO.load(tmp_path / "m.zip", env=gym.make("Pendulum-v1"))
    assert again.parallel_update is True and again._critic_worker is None
    again.learn(256)
    again.close_workers()


def test_the_worker_exits_when_the_trainer_is_killed(tmp_path):
    code = (
        "import sys, time, gymnasium as gym, torch\n"
        "from crl.fast.ppo import FastPPO\n"
        "m = FastPPO('MlpPolicy', gym.make('Pendulum-v1'), parallel_update=True,\n"
        "            n_steps=64, batch_size=32, n_epochs=1)\n"
        "m.learn(64)\n"
        "print(m._critic_worker.handle.proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    pid = int(p.stdout.readline())
    assert process_alive(pid)
    p.kill()
    p.wait()
    deadline = time.monotonic() + 10
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(pid)


@pytest.mark.parametrize("spin", [True, False])
@pytest.mark.parametrize("hand", [True, False])
def test_worker_protocol_matches_a_direct_computation(hand, spin):
    torch.manual_seed(0)
    model = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, batch_size=32, seed=0)
    policy = model.policy
    worker = CriticWorker(policy, n=64, batch_size=32, spin=spin)
    try:
        feats, returns = torch.randn(64, 3), torch.randn(64)
        worker.begin(feats, returns, vf_coef=0.5, training=True, hand=hand)
        order = torch.from_numpy(np.random.default_rng(0).permutation(64))
        worker.epoch(order)
        worker.submit(32, 64)
        loss = worker.collect()
        rows = order[32:64]
        body, head = policy.mlp_extractor.value_net, policy.value_net
        params = [*body.parameters(), *head.parameters()]
        grads = [p.grad.clone() for p in params]
        for p in params:
            p.grad = None
        values = head(body(feats[rows])).flatten()
        expected = torch.nn.functional.mse_loss(returns[rows], values)
        (0.5 * expected).backward()
        if hand:  # bitwise the trainer's own hand-written step, autograd's up to float rounding
            own_loss, own_grads = hand_critic_step(MlpPlan.of(body, head), feats[rows], returns[rows], 0.5)
            assert torch.equal(loss, own_loss)
            assert all(torch.equal(g, h) for g, h in zip(grads, own_grads, strict=True))
            torch.testing.assert_close(loss, expected.detach(), rtol=1e-5, atol=1e-7)
            for g, p in zip(grads, params, strict=True):
                torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(loss, expected.detach())
            assert all(torch.equal(g, p.grad) for g, p in zip(grads, params, strict=True))
    finally:
        worker.close()


def _worker_and_data(**kw):
    torch.manual_seed(0)
    policy = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, batch_size=32, seed=0).policy
    worker = CriticWorker(policy, n=64, batch_size=32, **kw)
    feats, returns = torch.randn(64, 3), torch.randn(64)
    return policy, worker, feats, returns


def _value_loss(policy, feats, returns, rows):
    values = policy.value_net(policy.mlp_extractor.value_net(feats[rows])).flatten()
    return torch.nn.functional.mse_loss(returns[rows], values).detach()


def test_a_spinning_worker_back_on_its_pipe_is_woken(monkeypatch):
    """A worker that stopped polling (no minibatch for ``SPIN_IDLE`` seconds) misses a
    submission through shared memory; the trainer wakes it through the pipe.
    """
    monkeypatch.setattr(CriticWorker, "SPIN_IDLE", 0.01)
    policy, worker, feats, returns = _worker_and_data(spin=True)
    try:
        worker.begin(feats, returns, vf_coef=1.0, training=True, hand=False)
        worker.epoch(torch.arange(64))
        for rows in (slice(0, 32), slice(32, 64)):
            time.sleep(0.2)  # the worker goes back to its pipe
            worker.submit(rows.start, rows.stop)
            assert torch.equal(worker.collect(), _value_loss(policy, feats, returns, rows))
    finally:
        worker.close()


def test_a_spinning_workers_error_is_raised_with_its_traceback():
    _, worker, feats, returns = _worker_and_data(spin=True)
    try:
        worker.begin(feats, returns, vf_coef=1.0, training=True, hand=True)
        worker.epoch(torch.full((64,), 10**6))  # rows the worker does not have
        worker.submit(0, 32)
        with pytest.raises(RuntimeError, match="critic worker failed: IndexError"):
            worker.collect()
        assert worker.closed
    finally:
        worker.close()


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_spinning_worker_polls_only_inside_an_update():
    """Between ``begin`` and ``end`` the worker polls shared memory (it has a core of its own
    then); after ``end`` it blocks on its pipe and takes no CPU time while rollouts run.
    """
    policy, worker, feats, returns = _worker_and_data(spin=True)
    pid = worker.handle.proc.pid
    try:
        worker.begin(feats, returns, vf_coef=1.0, training=True, hand=True)
        worker.epoch(torch.arange(64))
        worker.submit(0, 32)
        worker.collect()
        before = _cpu_seconds(pid)
        time.sleep(0.3)
        polling = _cpu_seconds(pid) - before
        worker.end()
        time.sleep(0.05)
        before = _cpu_seconds(pid)
        time.sleep(0.3)
        idle = _cpu_seconds(pid) - before
        assert polling > 0.1 and idle <= 0.02
        worker.begin(feats, returns, vf_coef=1.0, training=True, hand=True)  # and it comes back
        worker.submit(32, 64)
        torch.testing.assert_close(worker.collect(), _value_loss(policy, feats, returns, slice(32, 64)))
    finally:
        worker.close()


def test_a_spawned_spinning_worker_shares_the_control_block():
    """With the ``spawn`` start method (macOS's and Windows' default) the shared buffers, the
    control block included, reach the worker by handle.
    """
    policy, worker, feats, returns = _worker_and_data(spin=True, start_method="spawn")
    try:
        worker.begin(feats, returns, vf_coef=1.0, training=True, hand=False)
        worker.epoch(torch.arange(64))
        for rows in (slice(0, 32), slice(32, 64)):
            worker.submit(rows.start, rows.stop)
            assert torch.equal(worker.collect(), _value_loss(policy, feats, returns, rows))
        worker.end()
    finally:
        worker.close()


@pytest.mark.parametrize("hand", [True, False])
def test_the_pipe_fallback_gives_the_shared_memory_results(monkeypatch, hand):
    """``CRL_CRITIC_HANDSHAKE=pipe`` makes FastPPO's critic worker hand every minibatch over
    through its pipe (the default on CPUs other than x86, or with one core): the updates are
    bitwise those of the shared-memory handshake (on x86) and of the single-process update.
    """
    from crl.fast.critic_worker import HANDSHAKE_ENV, shared_memory_safe

    modes = ["pipe", "shared"] if shared_memory_safe() else ["pipe"]
    runs = {}
    for mode in modes:
        monkeypatch.setenv(HANDSHAKE_ENV, mode)
        torch.set_num_threads(1)
        model = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), parallel_update=True, hand_gradients=hand, **KW)
        model.learn(768)
        assert model._critic_worker.spin is (mode == "shared")
        assert model.update_paths == [(0, "hand" if hand else "autograd", "worker")]
        model.close_workers()
        runs[mode] = model
    monkeypatch.delenv(HANDSHAKE_ENV)
    runs["one process"], _ = _train(False, hand_gradients=hand)
    for mode in modes:
        assert torch.equal(_params(runs[mode]), _params(runs["one process"])), mode
        for key in ("train/loss", "train/value_loss"):
            assert runs[mode].logger.name_to_value[key] == runs["one process"].logger.name_to_value[key], (mode, key)


def test_the_handshake_variable(monkeypatch):
    from crl.fast.critic_worker import HANDSHAKE_ENV, default_spin, shared_memory_safe

    monkeypatch.setenv(HANDSHAKE_ENV, "pipe")
    policy, worker, feats, returns = _worker_and_data()
    try:
        assert worker.spin is False and default_spin() is False
        worker.begin(feats, returns, vf_coef=1.0, training=True, hand=True)
        worker.epoch(torch.arange(64))
        worker.submit(0, 32)
        torch.testing.assert_close(worker.collect(), _value_loss(policy, feats, returns, slice(0, 32)))
    finally:
        worker.close()
    monkeypatch.setenv(HANDSHAKE_ENV, "shared")
    if shared_memory_safe():
        assert default_spin() is True
    else:
        with pytest.raises(ValueError, match="needs an x86 CPU"):
            default_spin()
    monkeypatch.setenv(HANDSHAKE_ENV, "carrier-pigeon")
    with pytest.raises(ValueError, match="expected pipe, shared or auto"):
        default_spin()
