"""``crl bench throughput``: crl's training speed against plain stable-baselines3, side by side.

Each measurement runs in its own child process (so peak memory is per run), one after the other
and alternating (``sb3 ppo ppo-cbp sb3 ppo ppo-cbp ...``) so that load changes on a shared
machine hit every contender alike. Contenders:

- ``sb3``: a plain SB3 PPO script with Dohare's hyperparameters on Slippery Ant (one env,
  SB3 defaults otherwise);
- ``ppo`` / ``ppo-cbp`` (and any other ``--agent``): crl's real training path
  (:func:`crl.run.train`, callbacks, checkpoints, interventions) on the same env.

Time is split into simulation (``env.step``/``reset`` inside the envs), learning (the PPO
update, ``model.train``) and acting (the rest: policy inference, buffers, callbacks).

Example:
    >>> r = raw_mujoco_rate(200)
    >>> r > 0
    True
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from crl.system import usable_cores

__all__ = ["raw_mujoco_rate", "raw_mujoco_rate_all_cores", "measure", "throughput", "print_table", "CONTENDERS"]

ENV_ID = "crl/SlipperyAnt-v0"
ENV_NAME = "slippery-ant"


class _Timer(gym.Wrapper):
    """Accumulates the wall time spent in ``step``/``reset`` of the wrapped env."""

    total = 0.0

    def step(self, action: Any) -> Any:
        t = time.perf_counter()
        out = self.env.step(action)
        _Timer.total += time.perf_counter() - t
        return out

    def reset(self, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = self.env.reset(**kwargs)
        _Timer.total += time.perf_counter() - t
        return out


def _time_train(cls: type) -> list[float]:
    """Patch ``cls.train`` to accumulate its wall time; returns the accumulator."""
    acc = [0.0]
    orig = cls.train

    def train(self: Any, *args: Any, **kwargs: Any) -> None:
        t = time.perf_counter()
        orig(self, *args, **kwargs)
        acc[0] += time.perf_counter() - t

    cls.train = train
    return acc


def _time_learn() -> list[float]:
    """Patch SB3's on- and off-policy ``learn`` to accumulate its wall time (setup excluded for every contender)."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    acc = [0.0]
    for base in (OnPolicyAlgorithm, OffPolicyAlgorithm):

        def learn(self: Any, *args: Any, _orig: Any = base.learn, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return _orig(self, *args, **kwargs)
            finally:
                acc[0] += time.perf_counter() - t

        base.learn = learn  # type: ignore[method-assign]
    return acc


def raw_mujoco_rate(steps: int = 5000, seed: int = 0) -> float:
    """MuJoCo Ant (``Ant-v5``) steps per second with random actions, on one core: the ceiling."""
    env = gym.make("Ant-v5")
    env.reset(seed=seed)
    env.action_space.seed(seed)
    acts = [env.action_space.sample() for _ in range(256)]
    t = time.perf_counter()
    for i in range(steps):
        _, _, term, trunc, _ = env.step(acts[i % 256])
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t)


def _raw_rate_child(args: tuple[int, int]) -> float:
    return raw_mujoco_rate(*args)


def raw_mujoco_rate_all_cores(steps: int = 5000, processes: int | None = None) -> float:
    """Summed Ant steps per second of ``processes`` (default: every usable core) raw MuJoCo loops
    run at once: the simulation ceiling of the machine as loaded now. Its ratio to
    :func:`raw_mujoco_rate` is the parallel speed-up worker processes can get at that moment (about 1
    when other jobs hold the other cores).
    """
    import multiprocessing as mp

    n = processes or usable_cores()
    with mp.get_context("spawn").Pool(n) as pool:
        pool.map(_raw_rate_child, [(50, i) for i in range(n)])  # start-up (imports) outside the measurement
        return sum(pool.map(_raw_rate_child, [(steps, i) for i in range(n)]))


def _run_sb3(steps: int, seed: int) -> dict[str, float]:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    import crl  # noqa: F401  (registers crl/SlipperyAnt-v0)

    learn = _time_train(PPO)
    venv = DummyVecEnv([lambda: _Timer(gym.make(ENV_ID))])
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=2048,
        batch_size=128,
        n_epochs=10,
        learning_rate=1e-4,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.0,
        vf_coef=1.0,
        max_grad_norm=1e9,
        seed=seed,
        policy_kwargs=dict(net_arch=dict(pi=[256, 256], vf=[256, 256]), activation_fn=torch.nn.ReLU),
    )
    wall = _time_learn()
    model.learn(steps)
    return {"wall": wall[0], "learn": learn[0], "steps": model.num_timesteps}


def _time_vec_env(venv: Any) -> None:
    """Accumulate, in ``_Timer.total``, the learner's wall time inside ``venv``'s step/reset
    (the simulation, in-process or waiting for the worker processes).
    """
    for name in ("step_async", "step_wait", "reset"):
        orig = getattr(venv, name)

        def timed(*args: Any, _orig: Any = orig, **kwargs: Any) -> Any:
            t = time.perf_counter()
            out = _orig(*args, **kwargs)
            _Timer.total += time.perf_counter() - t
            return out

        setattr(venv, name, timed)


def _run_crl(
    agent: str, steps: int, seed: int, n_envs: int = 16, vec_env: str = "auto", train_threads: int = 0
) -> dict[str, float]:
    import crl.run as run
    from crl.agents import ALGOS
    from crl.catalog import resolve_agent
    from crl.run.callbacks import CrlCallback

    class TimeVecEnv(CrlCallback):
        """Wraps the run's vec env in :func:`_time_vec_env` when training starts."""

        def _init_callback(self) -> None:
            _time_vec_env(self.training_env)

        def _on_step(self) -> bool:
            return True

    learn = _time_train(ALGOS[resolve_agent(agent).algo])
    with tempfile.TemporaryDirectory() as d:
        cfg = run.RunConfig(
            env=ENV_NAME,
            agent=agent,
            seed=seed,
            steps=steps,
            run_dir=d,
            wandb="disabled",
            progress=False,
            checkpoint_every=10**9,
            n_envs=n_envs,
            vec_env=vec_env,
            train_threads=train_threads,
            agent_kwargs={"n_steps": 2048 // n_envs} if resolve_agent(agent).algo == "ppo" else {},
            # an agent that observes the task id gets 2 ids (Slippery Ant's friction changes at
            # 2M steps, so the bench's steps are all task 0's: one head or adapter per batch)
            env_kwargs={"task_id": 2} if resolve_agent(agent).task_id else {},
        )  # PPO: 2048 samples per update, as SB3's (SAC's and TD3's n_steps are n-step returns)
        wall = _time_learn()
        res = run.train(cfg, callbacks=[TimeVecEnv()])
    return {"wall": wall[0], "learn": learn[0], "steps": res.global_step}


def _child(
    contender: str, steps: int, seed: int, n_envs: int = 16, vec_env: str = "auto", train_threads: int = 0
) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    agent, _, kind = contender.partition(":")  # "ppo:dummy" pins the vec env of one contender
    if agent == "sb3":
        out = _run_sb3(steps, seed)
    else:
        out = _run_crl(agent, steps, seed, n_envs, kind or vec_env, train_threads)
    out["sim"] = _Timer.total
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["peak_rss_mb"] = ru / 1024
    return out


def measure(
    contender: str, steps: int, seed: int = 0, n_envs: int = 16, vec_env: str = "auto", train_threads: int = 0
) -> dict[str, float]:
    """Train ``contender`` (``"sb3"``, a crl agent name, or ``agent:vec_env`` to pin the vec env of
    that contender, e.g. ``ppo:dummy``) for ``steps`` in a child process.

    Returns wall seconds, env steps, steps/s, the time split (sim, act, learn seconds) and the
    child's peak RSS in MB (worker processes included). crl agents run ``n_envs`` envs (in worker
    processes with ``vec_env="proc"``/``"auto"``) with ``n_steps = 2048 // n_envs`` (2048 samples
    per update, like the single-env SB3 script).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_root(), os.environ.get("PYTHONPATH")]))}
    call = f"b._child({contender!r}, {steps}, {seed}, {n_envs}, {vec_env!r}, {train_threads})"
    code = f"import json, crl.bench as b; print('@@' + json.dumps({call}))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("@@")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"bench child {contender!r} failed: {p.stderr.strip().splitlines()[-1:]}")
    r = json.loads(lines[-1][2:])
    r["sps"] = r["steps"] / r["wall"]
    r["act"] = max(r["wall"] - r["sim"] - r["learn"], 0.0)
    return r


def _root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


#: Above this spread of the speed probes (see :func:`throughput`), the table warns.
SPREAD_WARN = 0.10

#: Default contenders: plain SB3, then crl agents.
CONTENDERS = ("sb3", "ppo", "ppo-cbp")


def throughput(
    steps: int,
    repeats: int = 1,
    contenders: tuple[str, ...] = CONTENDERS,
    seed: int = 0,
    raw_steps: int = 5000,
    n_envs: int = 16,
    log: Callable[[str], None] | None = None,
    vec_env: str = "auto",
    train_threads: int = 0,
    probe_steps: int = 1000,
) -> dict[str, Any]:
    """Alternate ``repeats`` rounds of every contender; summarise by median steps/s.

    With ``probe_steps`` > 0, a short raw MuJoCo run (:func:`raw_mujoco_rate`) before every
    round, and the ceiling row's ``raw_steps`` run after the last round, track the machine's own
    speed: on a shared machine it can change by tens of percent within minutes, and
    ``speed_spread`` (the probes' range over their maximum) says how far the side-by-side ratios
    can be trusted. ``round_ratios`` are each round's steps/s over the first contender's in the
    same round.
    """
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
    probes: list[float] = []
    for rep in range(repeats):
        if probe_steps > 0:
            probes.append(raw_mujoco_rate(probe_steps))
        for c in contenders:
            r = measure(c, steps, seed + rep, n_envs, vec_env, train_threads)
            runs[c].append(r)
            if log:
                log(f"round {rep + 1}/{repeats} {c}: {r['sps']:.0f} steps/s")
    raw = raw_mujoco_rate(raw_steps)  # the ceiling row, and the probe after the last round
    if probe_steps > 0:
        probes.append(raw)
    first = runs[contenders[0]]
    base = statistics.median(r["sps"] for r in first)
    rows = {}
    for c, rs in runs.items():
        sps = statistics.median(r["sps"] for r in rs)
        tot = sum(r["wall"] for r in rs)
        rows[c] = {
            "steps_per_s": sps,
            "all_steps_per_s": [r["sps"] for r in rs],
            "ratio": sps / base,
            "round_ratios": [r["sps"] / b["sps"] for r, b in zip(rs, first, strict=True)],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "sim_frac": sum(r["sim"] for r in rs) / tot,
            "act_frac": sum(r["act"] for r in rs) / tot,
            "learn_frac": sum(r["learn"] for r in rs) / tot,
        }
    return {
        "steps": steps,
        "repeats": repeats,
        "raw_mujoco_steps_per_s_per_core": raw,
        "raw_mujoco_steps_per_s_all_cores": raw_mujoco_rate_all_cores(raw_steps),
        "n_envs": n_envs,
        "vec_env": vec_env,
        "train_threads": train_threads,
        "cpus": usable_cores(),
        "loadavg": os.getloadavg(),
        "speed_probes": probes,
        "speed_spread": (max(probes) - min(probes)) / max(probes) if probes else None,
        "results": rows,
    }


def print_table(res: dict[str, Any]) -> None:
    """Print the result of :func:`throughput` as a table (ratios to plain SB3, split of the time)."""
    from rich.console import Console
    from rich.table import Table

    title = f"crl bench throughput: {res['steps']} steps x {res['repeats']} (median), Slippery Ant"
    crl_setup = f"crl n_envs={res['n_envs']} vec_env={res['vec_env']} train_threads={res['train_threads']}"
    t = Table(title=f"{title}, {crl_setup}")
    for col in ("contender", "steps/s", "ratio to sb3", "ratio per round", "peak RSS MB", "sim %", "act %", "learn %"):
        t.add_column(col, justify="right", no_wrap=col == "contender")
    for i, (c, r) in enumerate(res["results"].items()):
        rr = r["round_ratios"]
        t.add_row(
            c,
            f"{r['steps_per_s']:.0f}",
            f"{r['ratio']:.2f}x",
            "" if i == 0 else f"{min(rr):.2f}x" if len(rr) == 1 else f"{min(rr):.2f}-{max(rr):.2f}x",
            f"{r['peak_rss_mb']:.0f}",
            f"{100 * r['sim_frac']:.0f}",
            f"{100 * r['act_frac']:.0f}",
            f"{100 * r['learn_frac']:.0f}",
        )
    t.add_row("raw MuJoCo Ant (1 core)", f"{res['raw_mujoco_steps_per_s_per_core']:.0f}", *[""] * 6)
    all_cores = f"raw MuJoCo Ant ({res['cpus']} processes at once)"
    t.add_row(all_cores, f"{res['raw_mujoco_steps_per_s_all_cores']:.0f}", *[""] * 6)
    console = Console()
    if not console.is_terminal:  # a pipe or a file: no terminal width to fit, keep rows on one line
        console = Console(width=120)
    console.print(t)
    print(f"cpus {res['cpus']}, load average {' '.join(f'{x:.2f}' for x in res['loadavg'])}")
    probes = res["speed_probes"]
    if probes:
        spread = res["speed_spread"]
        print(
            f"machine speed during the bench (raw MuJoCo Ant, 1 core, before every round and after the last): "
            f"{min(probes):.0f}-{max(probes):.0f} steps/s, spread {100 * spread:.0f} %"
        )
        if spread > SPREAD_WARN:
            print(
                f"warning: the machine's speed changed by more than {100 * SPREAD_WARN:.0f} % during the bench; "
                "the ratios are less reliable (repeat with more --repeats or on a quieter machine)"
            )
