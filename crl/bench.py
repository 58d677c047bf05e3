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
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym

from crl.system import usable_cores

__all__ = [
    "raw_mujoco_rate",
    "raw_mujoco_rate_all_cores",
    "run_contender",
    "finish",
    "time_split",
    "child_env",
    "bench_setting",
    "measure",
    "throughput",
    "print_table",
    "CONTENDERS",
    "PPO_ROLLOUT",
]

ENV_ID = "crl/SlipperyAnt-v0"
ENV_NAME = "slippery-ant"
#: Samples per PPO update in the bench (Dohare's ``n_steps``; crl's agents split it over their envs).
PPO_ROLLOUT = 2048


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


def _run_sb3(steps: int, seed: int, callbacks: Sequence[Any] = ()) -> dict[str, float]:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    import crl  # noqa: F401  (registers crl/SlipperyAnt-v0)

    learn = _time_train(PPO)
    venv = DummyVecEnv([lambda: _Timer(gym.make(ENV_ID))])
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=PPO_ROLLOUT,
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
    model.learn(steps, callback=list(callbacks) or None)  # None: the plain script, as before
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
    agent: str,
    steps: int,
    seed: int,
    n_envs: int = 16,
    vec_env: str = "auto",
    train_threads: int = 0,
    env: str = ENV_NAME,
    agent_kwargs: dict[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, float]:
    import crl.run as run
    from crl.agents import ALGOS
    from crl.catalog import resolve_agent
    from crl.run.callbacks import CrlCallback

    class TimeVecEnv(CrlCallback):
        """Wraps the run's vec env in :func:`_time_vec_env` when training starts."""

        def _init_callback(self) -> None:
            _time_vec_env(self.training_env)
            if hasattr(self.model, "critic"):  # SAC: the update's split (see sac_split)
                _SacSplit.current.attach(self.model)

        def _on_step(self) -> bool:
            return True

    spec = resolve_agent(agent)
    learn = _time_train(ALGOS[spec.algo])
    # an agent that observes the task id gets two ids (Slippery Ant's regimes never repeat); the
    # bench's steps stay in the first regime, so it measures task 0
    env_kwargs = {"task_id": 2} if spec.task_id else {}
    ppo_kwargs = {"n_steps": PPO_ROLLOUT // n_envs} if spec.algo == "ppo" else {}
    with tempfile.TemporaryDirectory() as d:
        cfg = run.RunConfig(
            env=env,
            env_kwargs=env_kwargs,
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
            agent_kwargs=agent_kwargs if agent_kwargs is not None else ppo_kwargs,
        )  # PPO: 2048 samples per update, as SB3's (SAC's and TD3's n_steps are n-step returns)
        wall = _time_learn()
        res = run.train(cfg, callbacks=[TimeVecEnv(), *callbacks])
    return {"wall": wall[0], "learn": learn[0], "steps": res.global_step}


SAC_ENV_ID = "crl/SlipperyHopper-v0"
SAC_ENV_NAME = "slippery-hopper"
#: The parts of SAC's gradient steps that ``--algo sac`` times (see :class:`_SacSplit`).
SAC_SPLIT = ("sample", "critic", "actor", "target")


class _SacSplit:
    """The wall time of each part of SAC's gradient steps, SB3's and crl's alike: the replay
    batch (the sampler's call), the critic part (from the batch to the critic optimizer's step:
    the actor's actions on the batch, the entropy coefficient's step, the soft target, the
    critics' loss, gradients and step), the actor part (to the actor optimizer's step) and the
    target update (the Polyak update). Timestamps come from the optimizers' step post-hooks.
    """

    current: _SacSplit

    def __init__(self) -> None:
        self.acc = dict.fromkeys(SAC_SPLIT, 0.0)
        self.mark = 0.0
        self._patch()

    def attach(self, model: Any) -> None:
        """Time ``model``'s critic and actor steps (their optimizers' post-hooks)."""
        for part, opt in (("critic", model.critic.optimizer), ("actor", model.actor.optimizer)):

            def post(opt: Any, args: Any, kwargs: Any, part: str = part) -> None:
                now = time.perf_counter()
                self.acc[part] += now - self.mark
                self.mark = now

            opt.register_step_post_hook(post)

    def _timed(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            self.mark = time.perf_counter()
            self.acc[part] += self.mark - t
            return out

        return timed

    def _patch(self) -> None:
        import stable_baselines3.sac.sac as sb3_sac
        from stable_baselines3.common.buffers import ReplayBuffer

        import crl.fast.sac as fast_sac
        import crl.fast.sac_update as fast_update

        ReplayBuffer.sample = self._timed("sample", ReplayBuffer.sample)  # type: ignore[method-assign]
        fast_sac.sample_batch = self._timed("sample", fast_sac.sample_batch)  # type: ignore[assignment]
        sb3_sac.polyak_update = self._timed("target", sb3_sac.polyak_update)  # type: ignore[assignment]
        fast_update.polyak_update = self._timed("target", fast_update.polyak_update)  # type: ignore[assignment]


def _run_sb3_sac(steps: int, seed: int, learning_starts: int, callbacks: Sequence[Any] = ()) -> dict[str, float]:
    """A plain SB3 SAC script with SB3's defaults (crl's ``sac`` agent's values) on Slippery Hopper."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.vec_env import DummyVecEnv

    import crl  # noqa: F401  (registers crl/SlipperyHopper-v0)

    learn = _time_train(SAC)
    venv = DummyVecEnv([lambda: _Timer(gym.make(SAC_ENV_ID))])
    model = SAC("MlpPolicy", venv, learning_starts=learning_starts, seed=seed)
    _SacSplit.current.attach(model)
    wall = _time_learn()
    model.learn(steps, callback=list(callbacks) or None)  # None: the plain script, as before
    return {"wall": wall[0], "learn": learn[0], "steps": model.num_timesteps}


def sac_update_products(
    obs_dim: int = 11, act_dim: int = 3, hidden: int = 256, batch: int = 256, n_critics: int = 2
) -> list[tuple[int, int, int]]:
    """The matrix products ``(m, k, n)`` of one SAC gradient step of two-hidden-layer MLPs (Hopper's
    sizes by default), as few as the math needs: forward passes of the actor (batch and next
    observations), the target critics, the critics (replayed and actor's actions); the critics'
    weight and input gradients; the actor loss's input gradients through the critics (each row
    through the critic it picked) and the actor's weight and input gradients.

    Example:
        >>> len(sac_update_products()), sum(m * k * n for m, k, n in sac_update_products()) // 10**6
        (39, 263)
    """
    b, h, q_in = batch, hidden, obs_dim + act_dim
    actor = [(b, obs_dim, h), (b, h, h), (b, h, 2 * act_dim)]
    critic = [(b, q_in, h), (b, h, h), (b, h, 1)]
    out = actor * 2 + critic * (3 * n_critics)
    out += [(h, b, h), (b, h, h), (h, b, q_in)] * n_critics  # critic loss: dW2, d(h1), dW1
    out += [(b // n_critics, h, h), (b // n_critics, h, act_dim)] * n_critics  # d(min Q)/d(action)
    out += [(b, 2 * act_dim, h), (2 * act_dim, b, h), (h, b, h), (b, h, h), (h, b, obs_dim)]  # actor
    return out


def sac_ceiling_ms(repeats: int = 20) -> float:
    """Milliseconds of the raw matrix products of one SAC gradient step (:func:`sac_update_products`)
    on one torch thread, best of ``repeats``: the compute limit of an update on one core.

    Example:
        >>> sac_ceiling_ms(2) > 0
        True
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pairs = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in sac_update_products()]
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for x, w in pairs:
                torch.mm(x, w)
            best = min(best, time.perf_counter() - t)
        return best * 1000
    finally:
        torch.set_num_threads(threads)


def run_contender(
    contender: str,
    steps: int,
    seed: int = 0,
    n_envs: int = 16,
    vec_env: str = "auto",
    train_threads: int = 0,
    learning_starts: int | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, float]:
    """Train ``contender`` in this process (see :func:`measure`, which runs this in a child) with
    the extra SB3 ``callbacks``; returns the raw totals: wall and learn seconds, env steps,
    simulation seconds, peak RSS in MB (this process and its children) and, for SAC
    (``learning_starts`` given), the seconds of each part of :data:`SAC_SPLIT`. Sets torch to one
    thread and patches SB3's classes for timing: meant for a process of its own.
    """
    import torch

    torch.set_num_threads(1)
    agent, _, kind = contender.partition(":")  # "ppo:dummy" pins the vec env of one contender
    if learning_starts is not None:
        split = _SacSplit.current = _SacSplit()
        if contender == "sb3":
            out = _run_sb3_sac(steps, seed, learning_starts, callbacks)
        else:
            kw = {"learning_starts": learning_starts}
            out = _run_crl(contender, steps, seed, 1, "dummy", 0, SAC_ENV_NAME, kw, callbacks)
        out.update(split.acc)
    elif agent == "sb3":
        out = _run_sb3(steps, seed, callbacks)
    else:
        out = _run_crl(agent, steps, seed, n_envs, kind or vec_env, train_threads, callbacks=callbacks)
    out["sim"] = _Timer.total
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["peak_rss_mb"] = ru / 1024
    return out


def finish(r: dict[str, float], sac: bool) -> dict[str, float]:
    """Add the derived figures to :func:`run_contender`'s totals ``r`` (in place, and returned):
    steps/s, acting seconds (wall less simulation and learning) and, with ``sac``, the learning
    seconds outside :data:`SAC_SPLIT`'s parts.
    """
    r["sps"] = r["steps"] / r["wall"]
    r["act"] = max(r["wall"] - r["sim"] - r["learn"], 0.0)
    if sac:
        r["learn_other"] = max(r["learn"] - sum(r[k] for k in SAC_SPLIT), 0.0)
    return r


def child_env(source: str | None = None) -> dict[str, str]:
    """The environment of a bench child: this one, with crl's source folder (or ``source``, another
    checkout's) first on ``PYTHONPATH``.
    """
    first = _root() if source is None else os.path.abspath(source)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [first, os.environ.get("PYTHONPATH")]))}


def measure(
    contender: str,
    steps: int,
    seed: int = 0,
    n_envs: int = 16,
    vec_env: str = "auto",
    train_threads: int = 0,
    learning_starts: int | None = None,
) -> dict[str, float]:
    """Train ``contender`` (``"sb3"``, a crl agent name, or ``agent:vec_env`` to pin the vec env of
    that contender, e.g. ``ppo:dummy``) for ``steps`` in a child process.

    Returns wall seconds, env steps, steps/s, the time split (sim, act, learn seconds) and the
    child's peak RSS in MB (worker processes included). crl agents run ``n_envs`` envs (in worker
    processes with ``vec_env="proc"``/``"auto"``) with ``n_steps = 2048 // n_envs`` (2048 samples
    per update, like the single-env SB3 script).

    With ``learning_starts`` (SAC): ``"sb3"`` is a plain SB3 SAC script and crl agents run one
    env on Slippery Hopper, learning from step ``learning_starts``; the result also has the
    seconds of each part of the gradient steps (:data:`SAC_SPLIT`).
    """
    call = f"b.run_contender({contender!r}, {steps}, {seed}, {n_envs}, {vec_env!r}, {train_threads}, {learning_starts})"
    code = f"import json, crl.bench as b; print('@@' + json.dumps({call}))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=False)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("@@")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"bench child {contender!r} failed: {p.stderr.strip().splitlines()[-1:]}")
    return finish(json.loads(lines[-1][2:]), learning_starts is not None)


def time_split(rs: Sequence[dict[str, float]], sac: bool) -> dict[str, float]:
    """The peak RSS (MB) and the shares of the wall time (``sim_frac``, ``act_frac``,
    ``learn_frac`` and, with ``sac``, one per :data:`SAC_SPLIT` part and ``learn_other_frac``)
    over the :func:`finish`-ed runs ``rs`` of one contender.

    Example:
        >>> r = {"wall": 4.0, "sim": 1.0, "act": 1.0, "learn": 2.0, "peak_rss_mb": 500.0}
        >>> time_split([r], sac=False)
        {'peak_rss_mb': 500.0, 'sim_frac': 0.25, 'act_frac': 0.25, 'learn_frac': 0.5}
    """
    tot = sum(r["wall"] for r in rs)
    parts = ("sim", "act", "learn", *((*SAC_SPLIT, "learn_other") if sac else ()))
    fracs = {f"{p}_frac": sum(r[p] for r in rs) / tot for p in parts}
    return {"peak_rss_mb": max(r["peak_rss_mb"] for r in rs), **fracs}


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
    algo: str = "ppo",
    learning_starts: int = 1000,
) -> dict[str, Any]:
    """Alternate ``repeats`` rounds of every contender; summarise by median steps/s.

    With ``probe_steps`` > 0, a short raw MuJoCo run (:func:`raw_mujoco_rate`) before every
    round, and the ceiling row's ``raw_steps`` run after the last round, track the machine's own
    speed: on a shared machine it can change by tens of percent within minutes, and
    ``speed_spread`` (the probes' range over their maximum) says how far the side-by-side ratios
    can be trusted. ``round_ratios`` are each round's steps/s over the first contender's in the
    same round.

    ``algo="sac"``: plain SB3 SAC against crl's SAC agents (one env each, Slippery Hopper,
    learning from step ``learning_starts``), with the split of the gradient steps' time and
    :func:`sac_ceiling_ms`.
    """
    sac = algo == "sac"
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
    probes: list[float] = []
    for rep in range(repeats):
        if probe_steps > 0:
            probes.append(raw_mujoco_rate(probe_steps))
        for c in contenders:
            r = measure(c, steps, seed + rep, n_envs, vec_env, train_threads, learning_starts if sac else None)
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
        rows[c] = {
            "steps_per_s": sps,
            "all_steps_per_s": [r["sps"] for r in rs],
            "ratio": sps / base,
            "round_ratios": [r["sps"] / b["sps"] for r, b in zip(rs, first, strict=True)],
            **time_split(rs, sac),
        }
    return {
        **bench_setting(algo, learning_starts, raw, raw_steps, n_envs, vec_env, train_threads),
        "steps": steps,
        "repeats": repeats,
        "speed_probes": probes,
        "speed_spread": (max(probes) - min(probes)) / max(probes) if probes else None,
        "results": rows,
    }


def bench_setting(
    algo: str, learning_starts: int, raw: float, raw_steps: int, n_envs: int, vec_env: str, train_threads: int
) -> dict[str, Any]:
    """What a bench result says of its setting and machine, measured now where it is a rate:
    the algorithm (with SAC's ``learning_starts`` and :func:`sac_ceiling_ms`), the one-core raw
    MuJoCo rate ``raw`` (measured by the caller) and :func:`raw_mujoco_rate_all_cores` over
    ``raw_steps``, crl's env and thread settings, the usable cores, the load average, the
    CPU's vendor, the instruction set torch's CPU kernels use and whose matrix products PPO's
    hand-written passes take (:func:`crl.fast.mlp.onednn_linear_preferred`).
    """
    import torch

    from crl.fast.mlp import cpu_vendor, onednn_linear_preferred

    sac = algo == "sac"
    return {
        "algo": algo,
        **({"learning_starts": learning_starts, "ceiling_ms": sac_ceiling_ms()} if sac else {}),
        "raw_mujoco_steps_per_s_per_core": raw,
        "raw_mujoco_steps_per_s_all_cores": raw_mujoco_rate_all_cores(raw_steps),
        "n_envs": n_envs,
        "vec_env": vec_env,
        "train_threads": train_threads,
        "cpus": usable_cores(),
        "loadavg": os.getloadavg(),
        "cpu_vendor": cpu_vendor() or "unknown vendor",
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "hand_products": "oneDNN" if onednn_linear_preferred() else "torch",
    }


def _ratio_range(rr: list[float]) -> str:
    return f"{min(rr):.2f}x" if len(rr) == 1 else f"{min(rr):.2f}-{max(rr):.2f}x"


def _interval_text(r: dict[str, Any]) -> str:
    lo, hi = r.get("ratio_low"), r.get("ratio_high")
    return "n/a (<= 5 blocks)" if lo is None or hi is None else f"{lo:.2f}-{hi:.2f}x"


def print_table(res: dict[str, Any]) -> None:
    """Print the result of :func:`throughput` (or of :func:`crl.bench_paired.paired`) as a table:
    ratios to plain SB3 (per round or per block; with paired blocks, the 95 % interval of the
    median ratio), peak memory and the split of the time.
    """
    from rich.console import Console
    from rich.table import Table

    sac, paired = res.get("algo") == "sac", res.get("mode") == "paired"
    cols = ["sim", "act", "learn"]
    if sac:
        env, crl_setup = "Slippery Hopper", f"SAC, learning from step {res['learning_starts']}, crl 1 env"
        cols = ["sim", "act", *SAC_SPLIT, "learn_other"]
    else:
        env = "Slippery Ant"
        crl_setup = f"crl n_envs={res['n_envs']} vec_env={res['vec_env']} train_threads={res['train_threads']}"
    if paired:
        how = f"{res['blocks']} paired blocks of {res['block_steps']} steps (median ratio)"
        ratio_cols = ["ratio per block", "95 % CI of the ratio"]
    else:
        how = f"{res['steps']} steps x {res['repeats']} (median)"
        ratio_cols = ["ratio per round"]
    t = Table(title=f"crl bench throughput: {how}, {env}, {crl_setup}")
    for col in ("contender", "steps/s", "ratio to sb3", *ratio_cols, "peak RSS MB", *(f"{c} %" for c in cols)):
        t.add_column(col, justify="right", no_wrap=col == "contender")
    for i, (c, r) in enumerate(res["results"].items()):
        spread = [_ratio_range(r["round_ratios"]), *([_interval_text(r)] if paired else [])]
        t.add_row(
            c,
            f"{r['steps_per_s']:.0f}",
            f"{r['ratio']:.2f}x",
            *([""] * len(spread) if i == 0 else spread),
            f"{r['peak_rss_mb']:.0f}",
            *(f"{100 * r[f'{col}_frac']:.0f}" for col in cols),
        )
    blank = [""] * (2 + len(ratio_cols) + len(cols))
    t.add_row("raw MuJoCo Ant (1 core)", f"{res['raw_mujoco_steps_per_s_per_core']:.0f}", *blank)
    all_cores = f"raw MuJoCo Ant ({res['cpus']} processes at once)"
    t.add_row(all_cores, f"{res['raw_mujoco_steps_per_s_all_cores']:.0f}", *blank)
    console = Console()
    if not console.is_terminal:  # a pipe or a file: no terminal width to fit, keep rows on one line
        console = Console(width=(170 if sac else 120) + (30 if paired else 0))
    console.print(t)
    cpu = ", ".join(res[k] for k in ("cpu_vendor", "cpu_capability") if k in res)  # older results: no vendor
    kernels = f" ({cpu}; PPO's hand-written products: {res['hand_products']})"
    print(f"cpus {res['cpus']}{kernels}, load average {' '.join(f'{x:.2f}' for x in res['loadavg'])}")
    if sac:
        ms = res["ceiling_ms"]
        print(
            f"ceiling: the raw matrix products of one SAC gradient step take {ms:.2f} ms on one thread "
            f"(at most {1000 / ms:.0f} steps/s on one core, {2000 / ms:.0f} split perfectly over two; "
            "before simulation, acting and every non-product operation)"
        )
    if paired:
        base = next(iter(res["results"].values()))["all_steps_per_s"]
        print(
            f"the baseline's own block rate moved over {min(base):.0f}-{max(base):.0f} steps/s (spread "
            f"{100 * res['base_spread']:.0f} %): the machine's drift, which each block's ratio pairs out"
        )
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
