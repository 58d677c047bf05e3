"""FastPPO makes the same updates as SB3's PPO (same seed, same data, same number of updates)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger

from crl.fast.ppo import FastPPO

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


def _count_hand_steps(monkeypatch):
    """Count FastPPO's hand-written actor steps (crl.fast.update.HandActor) from now on."""
    from crl.fast import update

    calls = []
    real = update.hand_actor_step

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(update, "hand_actor_step", spy)
    return lambda: len(calls)


@pytest.mark.parametrize("hand", [True, False])
def test_same_updates_as_sb3(hand, monkeypatch):
    torch.set_num_threads(1)
    hand_steps = _count_hand_steps(monkeypatch)
    # SB3 seeds the global RNGs at construction: build and train one model after the other
    a = PPO("MlpPolicy", gym.make("Pendulum-v1"), **KW)
    a0 = _params(a)
    a.learn(512)
    b = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), hand_gradients=hand, **KW)
    torch.testing.assert_close(a0, _params(b), rtol=0, atol=0)
    b.learn(512)
    assert a._n_updates == b._n_updates == 6
    assert a.num_timesteps == b.num_timesteps == 512
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-5, atol=1e-6)
    assert not torch.equal(_params(b), _params(FastPPO("MlpPolicy", gym.make("Pendulum-v1"), **KW)))
    assert hand_steps() == (6 * 4 if hand else 0)  # 6 updates of 4 minibatches


def test_finite_grad_clip_matches_sb3():
    kw = {**KW, "max_grad_norm": 0.5}
    a = PPO("MlpPolicy", gym.make("Pendulum-v1"), **kw)
    a.learn(256)
    b = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), **kw)
    b.learn(256)
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "share,hand,arch",
    [(True, True, "tanh32"), (False, True, "tanh32"), (True, False, "tanh32"), (False, True, "relu256")],
)
def test_one_minibatch_loss_and_grads_equal_sb3(tmp_path, share, hand, arch, monkeypatch):
    """Run one SB3 minibatch step and one FastPPO minibatch step from the same state and rollout
    (SB3's default Tanh nets, and Dohare's 256x256 ReLU ones).
    """
    hand_steps = _count_hand_steps(monkeypatch)
    pk = {**KW["policy_kwargs"], "share_features_extractor": share}
    if arch == "relu256":
        pk.update(net_arch=dict(pi=[256, 256], vf=[256, 256]), activation_fn=torch.nn.ReLU)
    kw = {**KW, "n_epochs": 1, "batch_size": 256, "policy_kwargs": pk}  # one minibatch per update
    b = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), hand_gradients=hand, parallel_update=False, **kw)
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
    assert hand_steps() == int(hand)
    assert grads["sb3"].abs().sum() > 0


def test_saved_model_loads_with_sb3(tmp_path):
    b = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), **KW)
    b.save(tmp_path / "m.zip")
    c = PPO.load(tmp_path / "m.zip")
    torch.testing.assert_close(_params(b), _params(c))


class _Record(BaseCallback):
    """Keeps the ``locals`` every step's callback sees; stops the rollout at ``stop_at``."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.seen, self.stop_at = [], stop_at

    def _on_step(self):
        self.seen.append({k: self.locals[k] for k in ("infos", "dones", "rewards", "new_obs", "clipped_actions")})
        return self.stop_at is None or len(self.seen) < self.stop_at


class _SafeRecord(_Record):
    rollout_safe = True  # FastPPO defers the values and log-probabilities to the rollout's end


class _Halving(_SafeRecord):
    """Halves the policy's weights (through ``.data``, which no version counter sees) at one
    step of the rollout, after ``policy_will_change`` as a rollout-safe callback must.
    """

    def __init__(self, at):
        super().__init__()
        self.at = at

    def _on_step(self):
        if len(self.seen) == self.at:
            if hasattr(self.model, "policy_will_change"):
                self.model.policy_will_change()
            for p in self.model.policy.parameters():
                p.data.mul_(0.5)
        return super()._on_step()


_FIELDS = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "advantages", "returns")


def _rollout(cls, rec, n_envs=1, share=True, width=32, n_steps=256, policy="MlpPolicy", **policy_kwargs):
    """``cls``'s first rollout (Pendulum, seeded) recorded by the callback ``rec``: the model and
    whether ``collect_rollouts`` finished.
    """
    torch.manual_seed(0)
    pk = {"net_arch": dict(pi=[width, width], vf=[width, width]), "share_features_extractor": share, **policy_kwargs}
    venv = make_vec_env("Pendulum-v1", n_envs=n_envs, seed=5)
    model = cls(policy, venv, **{**KW, "n_steps": n_steps, "policy_kwargs": pk})
    model.set_logger(Logger(folder=None, output_formats=[]))
    with torch.no_grad():  # a std whose log(exp(.)) is not exact, unlike the initial 1.0
        model.policy.log_std.copy_(torch.tensor([0.3]))
    model._setup_learn(n_steps * n_envs, rec)
    rec.init_callback(model)
    done = model.collect_rollouts(model.env, rec, model.rollout_buffer, n_steps)
    return model, done


@pytest.mark.parametrize("record", [_Record, _SafeRecord])
@pytest.mark.parametrize(("n_envs", "share", "width"), [(1, True, 32), (3, True, 32), (2, False, 32), (4, True, 256)])
def test_rollouts_are_bitwise_those_of_sb3(n_envs, share, width, record):
    """FastPPO's leaner rollout loop gives SB3's buffer exactly, time-out bootstrapping included
    (Pendulum's episodes are cut by the 200-step time limit inside the 256-step rollout), with
    the values and log-probabilities computed at every step or after the rollout (in one batch
    where that gives the same numbers here, as with the 256-unit nets on the 2-core AMD machine).
    """
    buffers, seen = {}, {}
    for name, cls in (("sb3", PPO), ("fast", FastPPO)):
        rec = record()
        model, done = _rollout(cls, rec, n_envs, share, width)
        assert done
        if cls is FastPPO:  # which loop ran: the deferred one records its batches' checks
            assert bool(model._deferred_exact) is (record is _SafeRecord) and model._deferred is None
        buffers[name] = {f: getattr(model.rollout_buffer, f).copy() for f in _FIELDS}
        seen[name] = rec.seen
    assert any(info.get("TimeLimit.truncated") for step in seen["sb3"] for info in step["infos"])
    for f in _FIELDS:
        np.testing.assert_array_equal(buffers["sb3"][f], buffers["fast"][f], err_msg=f)
    assert len(seen["sb3"]) == len(seen["fast"]) == 256
    for a, b in zip(seen["sb3"], seen["fast"], strict=True):
        np.testing.assert_array_equal(a["clipped_actions"], b["clipped_actions"])
        np.testing.assert_array_equal(a["rewards"], b["rewards"])


@pytest.mark.parametrize("width", [32, 256])
def test_layernorm_policy_rollouts_are_bitwise_those_of_sb3(width):
    """crl's ``ArchActorCriticPolicy`` (here with LayerNorm) takes the deferred loop too."""
    from crl.plasticity.policies import ArchActorCriticPolicy

    got = {}
    for cls in (PPO, FastPPO):
        model, done = _rollout(cls, _SafeRecord(), 4, width=width, policy=ArchActorCriticPolicy, layer_norm=True)
        assert done
        got[cls] = model
    assert got[FastPPO]._deferred_exact  # the deferred loop ran
    for f in _FIELDS:
        np.testing.assert_array_equal(getattr(got[PPO].rollout_buffer, f), getattr(got[FastPPO].rollout_buffer, f))


@pytest.mark.parametrize("width", [32, 256])
def test_weights_changed_inside_a_rollout_after_policy_will_change(width):
    """A rollout-safe callback that changes the weights mid-rollout (after
    ``policy_will_change``) gets SB3's buffer: the steps before the change keep the values and
    log-probabilities of the weights that acted.
    """
    got = {}
    for cls in (PPO, FastPPO):
        model, done = _rollout(cls, _Halving(at=100), n_envs=2, width=width)
        assert done
        got[cls] = model.rollout_buffer
    for f in _FIELDS:
        np.testing.assert_array_equal(getattr(got[PPO], f), getattr(got[FastPPO], f), err_msg=f)


@pytest.mark.parametrize("record", [_Record, _SafeRecord])
def test_a_callback_can_stop_the_rollout(record):
    """The steps taken before the stop have SB3's values and log-probabilities."""
    got = {}
    for cls in (PPO, FastPPO):
        rec = record(stop_at=5)
        model, done = _rollout(cls, rec, n_envs=2)
        assert not done and len(rec.seen) == 5 and model.num_timesteps == 10
        got[cls] = model.rollout_buffer
    assert got[FastPPO].pos == got[PPO].pos == 4
    for f in ("values", "log_probs"):
        np.testing.assert_array_equal(getattr(got[PPO], f)[:4], getattr(got[FastPPO], f)[:4], err_msg=f)


@pytest.mark.parametrize("n_steps", [256, 250])  # 250: a short last minibatch
def test_logged_statistics_equal_sb3(n_steps):
    """Losses, clip fraction and approximate KL (kept as tensors, reduced after the update) log
    the values SB3 logs.
    """
    kw = {**KW, "n_steps": n_steps, "clip_range": 0.05, "learning_rate": 3e-3}  # some ratios get clipped
    logged = {}
    for name, cls in (("sb3", PPO), ("fast", FastPPO)):
        model = cls("MlpPolicy", gym.make("Pendulum-v1"), **kw)
        model.learn(2 * n_steps)
        logged[name] = {k: v for k, v in model.logger.name_to_value.items() if k.startswith("train/")}
    assert logged["sb3"].keys() == logged["fast"].keys()
    assert logged["sb3"]["train/clip_fraction"] > 0
    for k, v in logged["sb3"].items():
        assert logged["fast"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


def test_an_optimizer_with_its_own_zero_grad_is_called():
    """FastPPO sets gradients to ``None`` itself only for torch's own ``zero_grad``."""
    calls = []

    class Counting(torch.optim.Adam):
        def zero_grad(self, set_to_none=True):
            calls.append(1)
            super().zero_grad(set_to_none)

    kw = {**KW, "policy_kwargs": {**KW["policy_kwargs"], "optimizer_class": Counting}}
    model = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), **kw)
    model.learn(256)
    assert len(calls) == 3 * 256 // 64  # every minibatch of the 3 epochs


@pytest.mark.parametrize(("n", "batch_size"), [(256, 64), (250, 64), (257, 64), (5, 1), (7, 8)])
def test_minibatch_advantages_are_normalised_as_sb3_does(n, batch_size):
    """The epoch's advantages normalised in one batched op equal SB3's one minibatch at a time
    (a short last minibatch by itself, a single row left as it is).
    """
    from crl.fast.update import normalized_minibatches

    adv = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 3 + 1
    expected = []
    for start in range(0, n, batch_size):
        a = adv[start : start + batch_size]
        expected.append((a - a.mean()) / (a.std() + 1e-8) if len(a) > 1 else a)
    got = normalized_minibatches(adv, batch_size)
    torch.testing.assert_close(got, torch.cat(expected), rtol=1e-6, atol=1e-7)
    assert not torch.equal(got, adv) or batch_size == 1


def test_which_callbacks_are_rollout_safe():
    """Only callbacks known not to change the weights inside a rollout let FastPPO defer work."""
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, ConvertCallback, EvalCallback

    from crl.fast import FastLoop, is_rollout_safe
    from crl.run import CrlCallbacks, RegimeLogger

    assert RegimeLogger.rollout_safe is True
    assert is_rollout_safe(CrlCallbacks({"regimes": RegimeLogger(None)}, None))
    assert not is_rollout_safe(CrlCallbacks({"regimes": RegimeLogger(None), "x": _Record()}, None))
    assert isinstance(FastPPO("MlpPolicy", gym.make("Pendulum-v1"), **KW), FastLoop)
    assert not isinstance(PPO("MlpPolicy", gym.make("Pendulum-v1"), **KW), FastLoop)
    assert is_rollout_safe(ConvertCallback(None))
    assert not is_rollout_safe(ConvertCallback(lambda _locals, _globals: True))  # a function may do anything
    assert is_rollout_safe(CallbackList([_SafeRecord(), CheckpointCallback(10, "unused")]))
    assert not is_rollout_safe(_Record())
    assert not is_rollout_safe(CallbackList([_SafeRecord(), CallbackList([_Record()])]))
    assert not is_rollout_safe(EvalCallback(gym.make("Pendulum-v1")))  # it may hold callbacks of its own


@pytest.mark.parametrize(
    ("env", "parallel", "hand", "hooked", "paths"),
    [
        ("Pendulum-v1", False, True, False, [(0, "hand", "hand")]),
        ("Pendulum-v1", False, False, False, [(0, "autograd", "autograd")]),
        ("Pendulum-v1", True, True, False, [(0, "hand", "worker")]),
        ("Pendulum-v1", True, False, False, [(0, "autograd", "worker")]),
        ("Pendulum-v1", False, True, True, [(0, "hand", "autograd")]),  # a hook on the value head
        ("CartPole-v1", False, True, False, [(0, "autograd", "hand")]),  # discrete actions
    ],
)
def test_every_update_strategy_matches_sb3(env, parallel, hand, hooked, paths):
    """Each pair of strategies of crl.fast.update (actor half, critic half) makes SB3's updates
    (to float tolerance), with the entropy term in the loss.
    """
    torch.set_num_threads(1)
    kw = {**KW, "ent_coef": 0.01}
    models = {}
    for cls, extra in ((PPO, {}), (FastPPO, {"parallel_update": parallel, "hand_gradients": hand})):
        model = cls("MlpPolicy", gym.make(env), **kw, **extra)
        if hooked:  # not crl's feature capture: the critic's plan does not apply
            model.policy.value_net.register_forward_hook(lambda m, a, o: None)
        model.learn(512)
        models[cls] = model
    fast = models[FastPPO]
    fast.close_workers()
    assert fast.update_paths == paths
    assert models[PPO]._n_updates == fast._n_updates == 6
    torch.testing.assert_close(_params(models[PPO]), _params(fast), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("parallel", "paths"),
    [
        (False, [(0, "hand", "hand"), (3, "autograd", "autograd")]),
        (True, [(0, "hand", "worker"), (3, "autograd", "worker")]),  # the worker's critic is unchanged
    ],
)
def test_a_strategy_that_stops_applying_mid_update_steps_aside_for_autograd(parallel, paths):
    """An optimizer post-hook adds forward hooks to the heads after the third step, inside the
    first update (as an intervention may): from the fourth minibatch on, the hand-written passes
    no longer apply and autograd takes over; the updates stay SB3's.
    """
    torch.set_num_threads(1)

    def hook_heads_after(model, k):
        steps = []

        def post(opt, args, kwargs):
            steps.append(1)
            if len(steps) == k:
                for head in (model.policy.action_net, model.policy.value_net):
                    head.register_forward_hook(lambda m, a, o: None)

        model.policy.optimizer.register_step_post_hook(post)

    models = {}
    for cls, extra in ((PPO, {}), (FastPPO, {"parallel_update": parallel})):
        model = cls("MlpPolicy", gym.make("Pendulum-v1"), **KW, **extra)
        hook_heads_after(model, 3)
        model.learn(256)
        models[cls] = model
    fast = models[FastPPO]
    fast.close_workers()
    assert fast.update_paths == paths
    torch.testing.assert_close(_params(models[PPO]), _params(fast), rtol=1e-5, atol=1e-6)
