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

import argparse
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

__all__ = ["raw_mujoco_rate", "raw_mujoco_rate_all_cores", "measure", "throughput", "register_cli", "CONTENDERS"]

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

    def train(self: Any) -> None:
        t = time.perf_counter()
        orig(self)
        acc[0] += time.perf_counter() - t

    cls.train = train
    return acc


def _time_learn() -> list[float]:
    """Patch SB3's on-policy ``learn`` to accumulate its wall time (setup excluded for every contender)."""
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    acc = [0.0]
    orig = OnPolicyAlgorithm.learn

    def learn(self: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig(self, *args, **kwargs)
        finally:
            acc[0] += time.perf_counter() - t

    OnPolicyAlgorithm.learn = learn  # type: ignore[method-assign]
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
    """Summed Ant steps per second of ``processes`` (default: every core) raw MuJoCo loops run at
    once: the simulation ceiling of the machine as it is loaded now. Its ratio to
    :func:`raw_mujoco_rate` is the parallel speed-up that worker processes can get.
    """
    import multiprocessing as mp

    n = processes or os.cpu_count() or 1
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


def _run_crl(agent: str, steps: int, seed: int, n_envs: int = 8, vec_env: str = "auto") -> dict[str, float]:
    import crl.run as run
    from crl.agents import ALGOS
    from crl.vecenv import ProcVecEnv

    learn = _time_train(ALGOS["ppo"])
    orig = run.make_vec_env
    made: list[Any] = []

    def make_vec_env(env_id: str, make_kwargs: dict[str, Any], n_envs: int, kind: str = "dummy") -> Any:
        venv = orig(env_id, make_kwargs, n_envs, kind)
        if not isinstance(venv, ProcVecEnv):  # in-process envs: time them directly
            for i, e in enumerate(venv.envs):
                venv.envs[i] = _Timer(e)
        made.append(venv)
        return venv

    run.make_vec_env = make_vec_env
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
            agent_kwargs={"n_steps": 2048 // n_envs},
        )  # 2048 samples per update, as SB3's
        wall = _time_learn()
        res = run.train(cfg)
    out = {"wall": wall[0], "learn": learn[0], "steps": res.global_step}
    if made and isinstance(made[0], ProcVecEnv):  # workers: the main process's wait, and the workers' busy time
        out["sim_wall"], out["sim_busy"] = made[0].sim_wall, made[0].sim_busy
        out["workers"] = len(made[0].procs)
    return out


def _child(contender: str, steps: int, seed: int, n_envs: int = 8, vec_env: str = "auto") -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    agent, _, kind = contender.partition(":")  # "ppo:dummy" pins the vec env of one contender
    out = _run_sb3(steps, seed) if agent == "sb3" else _run_crl(agent, steps, seed, n_envs, kind or vec_env)
    out["sim"] = out.pop("sim_wall", _Timer.total)
    # this process plus its children (RUSAGE_CHILDREN is the largest child: count it once per env worker)
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ru += max(1, out.get("workers", 1)) * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["peak_rss_mb"] = ru / 1024
    return out


def measure(contender: str, steps: int, seed: int = 0, n_envs: int = 8, vec_env: str = "auto") -> dict[str, float]:
    """Train ``contender`` (``"sb3"``, a crl agent name, or ``agent:vec_env``) for ``steps`` in a child process.

    Returns wall seconds, env steps, steps/s, the time split (sim, act, learn seconds) and the
    child's peak RSS in MB (with its env worker processes, if any). crl agents run ``n_envs`` envs
    (``vec_env``: ``dummy`` in-process, ``proc`` worker processes, ``auto``) with
    ``n_steps = 2048 // n_envs`` (2048 samples per update, like the single-env SB3 script).
    With worker processes, ``sim`` is the time the trainer waits for them and ``sim_busy`` the
    time the workers spend in the envs (summed over workers).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_root(), os.environ.get("PYTHONPATH")]))}
    args = f"{contender!r}, {steps}, {seed}, {n_envs}, {vec_env!r}"
    code = f"import json, crl.bench as b; print('@@' + json.dumps(b._child({args})))"
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


#: Default contenders: plain SB3, then crl agents.
CONTENDERS = ("sb3", "ppo", "ppo-cbp")


def throughput(
    steps: int,
    repeats: int = 1,
    contenders: tuple[str, ...] = CONTENDERS,
    seed: int = 0,
    raw_steps: int = 5000,
    n_envs: int = 8,
    log: Callable[[str], None] | None = None,
    vec_env: str = "auto",
) -> dict[str, Any]:
    """Alternate ``repeats`` rounds of every contender; summarise by median steps/s."""
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
    for rep in range(repeats):
        for c in contenders:
            r = measure(c, steps, seed + rep, n_envs, vec_env)
            runs[c].append(r)
            if log:
                log(f"round {rep + 1}/{repeats} {c}: {r['sps']:.0f} steps/s")
    base = statistics.median(r["sps"] for r in runs[contenders[0]])
    rows = {}
    for c, rs in runs.items():
        sps = statistics.median(r["sps"] for r in rs)
        tot = sum(r["wall"] for r in rs)
        rows[c] = {
            "steps_per_s": sps,
            "all_steps_per_s": [r["sps"] for r in rs],
            "ratio": sps / base,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "sim_frac": sum(r["sim"] for r in rs) / tot,
            "act_frac": sum(r["act"] for r in rs) / tot,
            "learn_frac": sum(r["learn"] for r in rs) / tot,
            "worker_busy_frac": sum(r.get("sim_busy", 0.0) for r in rs) / tot,
        }
    return {
        "steps": steps,
        "repeats": repeats,
        "raw_mujoco_steps_per_s_per_core": raw_mujoco_rate(raw_steps),
        "raw_mujoco_steps_per_s_all_cores": raw_mujoco_rate_all_cores(raw_steps),
        "n_envs": n_envs,
        "vec_env": vec_env,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "results": rows,
    }


def _print_table(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"crl bench throughput: {res['steps']} steps x {res['repeats']} (median), Slippery Ant"
    t = Table(title=f"{title}, crl n_envs={res['n_envs']} vec_env={res.get('vec_env', 'dummy')}")
    for col in ("contender", "steps/s", "ratio to sb3", "peak RSS MB", "sim %", "act %", "learn %", "workers busy %"):
        t.add_column(col, justify="right")
    for c, r in res["results"].items():
        t.add_row(
            c,
            f"{r['steps_per_s']:.0f}",
            f"{r['ratio']:.2f}x",
            f"{r['peak_rss_mb']:.0f}",
            f"{100 * r['sim_frac']:.0f}",
            f"{100 * r['act_frac']:.0f}",
            f"{100 * r['learn_frac']:.0f}",
            f"{100 * r['worker_busy_frac']:.0f}" if r["worker_busy_frac"] else "",
        )
    t.add_row("raw MuJoCo Ant (1 core)", f"{res['raw_mujoco_steps_per_s_per_core']:.0f}", "", "", "", "", "", "")
    t.add_row(
        f"raw MuJoCo Ant ({res['cpus']} processes at once)",
        f"{res['raw_mujoco_steps_per_s_all_cores']:.0f}",
        "",
        "",
        "",
        "",
        "",
        "",
    )
    Console().print(t)
    print(f"cpus {res['cpus']}, load average {' '.join(f'{x:.2f}' for x in res['loadavg'])}")


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["throughput"], help="what to benchmark")
    p.add_argument("--steps", type=int, default=20_000, help="env steps per measurement (default 20000)")
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds (default 2)")
    p.add_argument(
        "--agent",
        action="append",
        default=None,
        help="crl agents to compare (default: ppo, ppo-cbp); AGENT:VEC_ENV pins the vec env (ppo:dummy)",
    )
    p.add_argument("--n-envs", type=int, default=8, help="in-process envs of the crl agents (default 8)")
    p.add_argument("--vec-env", default="auto", help="vec env of the crl agents: dummy, proc or auto (default)")
    p.add_argument("--raw-steps", type=int, default=5000, help="steps for the raw MuJoCo rate")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _bench(a: argparse.Namespace) -> int:
    from crl.errors import ConfigError

    if a.steps < 1 or a.repeats < 1:
        raise ConfigError(f"--steps and --repeats must be >= 1, got {a.steps} and {a.repeats}")
    if a.n_envs < 1 or 2048 % a.n_envs:
        raise ConfigError(f"--n-envs must divide 2048 (samples per update), got {a.n_envs}")
    agents = a.agent or [c for c in CONTENDERS[1:] if _agent_exists(c)]
    from crl.run import resolve_vec_env

    for kind in [a.vec_env, *(c.partition(":")[2] for c in agents if ":" in c)]:
        resolve_vec_env(kind, a.n_envs)  # unknown name: one clear line
    res = throughput(
        a.steps,
        a.repeats,
        ("sb3", *agents),
        raw_steps=a.raw_steps,
        n_envs=a.n_envs,
        vec_env=a.vec_env,
        log=None if a.json else lambda s: print(s, file=sys.stderr),
    )
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        _print_table(res)
    return 0


def _agent_exists(name: str) -> bool:
    from crl.catalog import resolve_agent

    try:
        resolve_agent(name)
    except Exception:
        return False
    return True


def register_cli(command: Callable[..., Any]) -> None:
    """Add ``crl bench`` to the CLI."""
    command("bench", "benchmark crl's training throughput against plain SB3", _add)(_bench)
