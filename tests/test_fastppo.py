"""FastPPO makes the same updates as SB3's PPO (same seed, same data, same number of updates)."""

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO

from crl.fastppo import FastPPO

KW = dict(
    n_steps=256,
    batch_size=64,
    n_epochs=3,
    learning_rate=1e-3,
    ent_coef=0.0,
    vf_coef=1.0,
    max_grad_norm=float("inf"),
    seed=3,
    policy_kwargs=dict(net_arch=dict(pi=[32, 32], vf=[32, 32])),
)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


def test_same_updates_as_sb3():
    torch.set_num_threads(1)
    # SB3 seeds the global RNGs at construction: build and train one model after the other
    a = PPO("MlpPolicy", gym.make("Pendulum-v1"), **KW)
    a0 = _params(a)
    a.learn(512)
    b = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), **KW)
    torch.testing.assert_close(a0, _params(b), rtol=0, atol=0)
    b.learn(512)
    assert a._n_updates == b._n_updates == 6
    assert a.num_timesteps == b.num_timesteps == 512
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-5, atol=1e-6)
    assert not torch.equal(_params(b), _params(FastPPO("MlpPolicy", gym.make("Pendulum-v1"), **KW)))


def test_finite_grad_clip_matches_sb3():
    kw = {**KW, "max_grad_norm": 0.5}
    a = PPO("MlpPolicy", gym.make("Pendulum-v1"), **kw)
    a.learn(256)
    b = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), **kw)
    b.learn(256)
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-5, atol=1e-6)


def test_one_minibatch_loss_and_grads_equal_sb3(tmp_path):
    """Run one SB3 minibatch step and one FastPPO minibatch step from the same state and rollout."""
    kw = {**KW, "n_epochs": 1, "batch_size": 256}  # one minibatch per update
    b = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), **kw)
    a = PPO("MlpPolicy", gym.make("Pendulum-v1"), **kw)
    a.learn(256)  # fills the rollout buffer, one update
    b.policy.load_state_dict(a.policy.state_dict())
    b.policy.optimizer.load_state_dict(a.policy.optimizer.state_dict())
    b.rollout_buffer = a.rollout_buffer
    b._current_progress_remaining = a._current_progress_remaining
    b.set_logger(a.logger)
    grads = {}
    for name, m in (("sb3", a), ("fast", b)):
        hook = m.policy.optimizer.register_step_pre_hook(
            lambda opt, args, kwargs, name=name, m=m: grads.__setitem__(
                name, torch.cat([p.grad.flatten() for p in m.policy.parameters()]).clone()
            )
        )
        np.random.seed(11)
        m.train()
        hook.remove()
        grads[name + "_loss"] = m.logger.name_to_value["train/loss"]
    torch.testing.assert_close(grads["sb3"], grads["fast"], rtol=1e-5, atol=1e-7)
    assert abs(grads["sb3_loss"] - grads["fast_loss"]) < 1e-5
    assert grads["sb3"].abs().sum() > 0


def test_saved_model_loads_with_sb3(tmp_path):
    b = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), **KW)
    b.save(tmp_path / "m.zip")
    c = PPO.load(tmp_path / "m.zip")
    torch.testing.assert_close(_params(b), _params(c))
