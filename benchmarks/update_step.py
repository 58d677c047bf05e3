"""The PPO update alone: FastPPO.train on one Ant-sized rollout (README, "Performance").

One update (2048 samples, 10 epochs of minibatches of 128) of Dohare's 256x256 ReLU policy and
value nets, from the same random rollout, with torch's fused Adam, in one process or with the
critic worker (its minibatches handed over through shared memory, the default on x86-64 with 2+
cores, or through its pipe), with autograd or hand-written gradients (``hand_gradients``,
crl.fast.mlp); alternating, best of ``REPS``. Prints seconds per update, whether the parameters
after the update are bitwise equal to the one-process update's (same gradients), the pipe's
time over the handshake's, and how far the hand-written gradients' update is from autograd's.

    PYTHONPATH=. python benchmarks/update_step.py [REPS]
"""

import sys
import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv

from crl.fast.critic_worker import CriticWorker
from crl.fast.ppo import FastPPO

OBS, ACT, ENVS = 105, 8, 16  # Ant-v5


class _Shape(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (ACT,), np.float32)

    def reset(self, seed=None, options=None):
        return np.zeros(OBS, np.float32), {}

    def step(self, action):
        return np.zeros(OBS, np.float32), 0.0, False, False, {}


def model(parallel: bool, hand: bool) -> FastPPO:
    """A FastPPO with Dohare's nets and a filled random rollout buffer."""
    torch.manual_seed(0)
    m = FastPPO(
        "MlpPolicy",
        DummyVecEnv([_Shape] * ENVS),
        n_steps=2048 // ENVS,
        batch_size=128,
        n_epochs=10,
        learning_rate=1e-4,
        ent_coef=0.0,
        vf_coef=1.0,
        max_grad_norm=float("inf"),
        seed=0,
        parallel_update=parallel,
        hand_gradients=hand,
        policy_kwargs=dict(
            net_arch=dict(pi=[256, 256], vf=[256, 256]),
            activation_fn=torch.nn.ReLU,
            optimizer_kwargs={"fused": True},
        ),
    )
    m.set_logger(Logger(folder=None, output_formats=[]))
    buf, rng = m.rollout_buffer, np.random.default_rng(0)
    for name, shift in (("observations", 0), ("actions", 0), ("log_probs", -8), ("advantages", 0), ("returns", 0)):
        arr = getattr(buf, name)
        arr[:] = rng.normal(size=arr.shape) + shift
    buf.values[:] = rng.normal(size=buf.values.shape)
    buf.full = True
    return m


def one_update(m: FastPPO, data: dict[str, np.ndarray]) -> float:
    """Seconds of one ``m.train()`` on a fresh copy of ``data``."""
    buf = m.rollout_buffer
    for name, arr in data.items():
        setattr(buf, name, arr.copy())
    buf.generator_ready = False
    np.random.seed(1)  # the minibatch order
    t = time.perf_counter()
    m.train()
    return time.perf_counter() - t


def main(reps: int) -> None:
    """Alternate the five setups ``reps`` times; print the best time of each."""
    torch.set_num_threads(1)
    setups = {
        "autograd, one process": (False, False),
        "hand, one process": (False, True),
        "autograd, critic worker": (True, False),
        "hand, critic worker": (True, True),
        "hand, worker by pipe": (True, True),
    }
    models = {k: model(*v) for k, v in setups.items()}
    # the shared-memory handshake is the worker's default on x86-64 with 2+ cores: this one
    # hands its minibatches over through the pipe instead
    piped = models["hand, worker by pipe"]
    rows = piped.n_steps * piped.n_envs  # the worker's signature: FastPPO keeps a worker built for it
    piped._critic_worker = CriticWorker(piped.policy, n=rows, batch_size=piped.batch_size, spin=False)
    fields = ("observations", "actions", "log_probs", "advantages", "returns", "values")
    data = {f: getattr(models["autograd, one process"].rollout_buffer, f).copy() for f in fields}
    start = {k: [p.detach().clone() for p in m.policy.parameters()] for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in setups}
    params = {}
    for _ in range(reps):
        for k, m in models.items():
            with torch.no_grad():  # every repetition from the same weights
                for p, p0 in zip(m.policy.parameters(), start[k], strict=True):
                    p.copy_(p0)
            m.policy.optimizer.state.clear()
            times[k].append(one_update(m, data))
            params[k] = torch.cat([p.detach().flatten() for p in m.policy.parameters()])
    for k in setups:
        print(f"{k:26s} {min(times[k]):.3f} s per update (runs: {', '.join(f'{t:.3f}' for t in times[k])})")
    for grads in ("autograd", "hand"):
        same = torch.equal(params[f"{grads}, one process"], params[f"{grads}, critic worker"])
        print(f"{grads}: critic worker bitwise equal to one process: {same}")
    same = torch.equal(params["hand, worker by pipe"], params["hand, critic worker"])
    spin = models["hand, critic worker"]._critic_worker.spin
    assert not piped._critic_worker.spin, "the piped model's worker was rebuilt"
    ratio = min(times["hand, worker by pipe"]) / min(times["hand, critic worker"])
    print(f"worker by pipe / critic worker (shared-memory handshake: {spin}): {ratio:.3f}, bitwise equal: {same}")
    a, h = params["autograd, one process"], params["hand, one process"]
    moved = (a - torch.cat([p.flatten() for p in start["autograd, one process"]])).abs().max().item()
    print(f"hand vs autograd: parameters after the update differ by at most {(a - h).abs().max().item():.3g}")
    print(f"(the update itself moved them by up to {moved:.3g})")
    for m in models.values():
        m.close_workers()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
