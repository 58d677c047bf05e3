"""``crl bench``: crl's training throughput measured side by side with plain SB3."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

HELP = "benchmark crl's training throughput against plain SB3, and its probe against plain NumPy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl bench``."""
    p.add_argument(
        "kind", choices=["throughput", "probe"], help="what to benchmark (probe: crl probe against plain NumPy)"
    )
    p.add_argument(
        "--algo",
        choices=["ppo", "sac"],
        default="ppo",
        help="ppo: plain SB3 PPO against crl's PPO agents on Slippery Ant (default); sac: plain SB3 SAC against "
        "crl's SAC agents on Slippery Hopper, with the split of the gradient steps and the compute ceiling",
    )
    p.add_argument(
        "--learning-starts",
        type=int,
        default=1000,
        help="--algo sac: random warm-up steps before learning, for every contender (default 1000)",
    )
    p.add_argument("--steps", type=int, default=None, help="env steps per measurement (default 20000)")
    p.add_argument("--repeats", type=int, default=None, help="alternating rounds (default 2)")
    p.add_argument(
        "--agent",
        action="append",
        default=None,
        help="crl agents to compare (default: ppo, ppo-cbp; with --algo sac: sac); AGENT:VEC_ENV pins the vec env "
        "(ppo:dummy)",
    )
    _paired_arguments(p)
    p.add_argument("--n-envs", type=int, default=16, help="envs of the crl agents (default 16)")
    p.add_argument(
        "--train-threads",
        type=int,
        default=0,
        help="torch threads of crl's updates (default 0: one, as acting; 2 helps ~10%% on free cores "
        "and collapses when other jobs hold them)",
    )
    p.add_argument(
        "--vec-env", choices=["auto", "dummy", "proc"], default="auto", help="how crl runs its envs (default auto)"
    )
    p.add_argument("--raw-steps", type=int, default=5000, help="steps for the raw MuJoCo rate")
    p.add_argument(
        "--probe-steps",
        type=int,
        default=None,
        help="steps of the raw MuJoCo speed probe before every round (the ceiling row's --raw-steps run is the "
        "one after the last; 0: no probes; default 1000)",
    )
    p.add_argument("--seeds", type=int, default=30, help="probe: networks per method (default 30)")
    p.add_argument("--examples", type=int, default=20_000, help="probe: examples per network (default 20000)")
    p.add_argument(
        "--methods",
        default="bp,l2,cbp,shrink-perturb,linear",
        help="probe: the methods batched in crl's second row (default bp,l2,cbp,shrink-perturb,linear)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _paired_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl bench throughput --paired``."""
    p.add_argument(
        "--paired",
        action="store_true",
        help="instead of whole runs one after the other, keep every contender's run alive and time short blocks "
        "of each in turn; the ratio is the median of the per-block ratios, with its 95%% interval (steadier "
        "where the machine's speed drifts; replaces --steps, --repeats and --probe-steps)",
    )
    p.add_argument("--blocks", type=int, default=20, help="--paired: blocks per contender (default 20)")
    p.add_argument(
        "--block-steps",
        type=int,
        default=None,
        help="--paired: env steps per block (default 2048 for ppo, a multiple of the 2048-step rollout; 250 for sac)",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="--paired: env steps before the first block (after --learning-starts for sac; default one block for sac, "
        "two for ppo)",
    )


def run(a: argparse.Namespace) -> int:
    """Run the benchmark and print its table (or JSON)."""
    from crl.bench import CONTENDERS, PPO_ROLLOUT, print_table
    from crl.catalog import resolve_agent
    from crl.errors import ConfigError

    if a.kind == "probe":
        return _run_probe(a)
    if a.n_envs < 1 or PPO_ROLLOUT % a.n_envs:
        raise ConfigError(f"--n-envs must divide {PPO_ROLLOUT} (samples per update), got {a.n_envs}")
    default = CONTENDERS[1:] if a.algo == "ppo" else ("sac",)
    agents = a.agent or [c for c in default if _agent_exists(c)]
    for c in agents:
        name, _, kind = c.partition(":")
        if ":" in c and kind not in ("auto", "dummy", "proc"):
            raise ConfigError(f"--agent {c}: vec env must be one of auto, dummy, proc; got {kind!r}")
        resolve_agent(name)  # an unknown name or a bad agent file: one line, before any run starts
    if a.paired:
        res = _paired(a, agents)
    else:
        res = _rounds(a, agents)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print_table(res)
    return 0


def _rounds(a: argparse.Namespace, agents: list[str]) -> dict[str, Any]:
    """``crl bench throughput``: whole runs, contender after contender, round after round."""
    from crl.bench import throughput
    from crl.errors import ConfigError

    a.steps = 20_000 if a.steps is None else a.steps
    a.repeats = 2 if a.repeats is None else a.repeats
    a.probe_steps = 1000 if a.probe_steps is None else a.probe_steps
    if a.steps < 1 or a.repeats < 1:
        raise ConfigError(f"--steps and --repeats must be >= 1, got {a.steps} and {a.repeats}")
    if a.probe_steps < 0:
        raise ConfigError(f"--probe-steps must be >= 0, got {a.probe_steps}")
    if a.algo == "sac" and not 0 <= a.learning_starts < a.steps:
        raise ConfigError(f"--learning-starts must be >= 0 and below --steps ({a.steps}), got {a.learning_starts}")
    return throughput(
        a.steps,
        a.repeats,
        ("sb3", *agents),
        raw_steps=a.raw_steps,
        n_envs=a.n_envs,
        log=None if a.json else lambda s: print(s, file=sys.stderr),
        vec_env=a.vec_env,
        train_threads=a.train_threads,
        probe_steps=a.probe_steps,
        algo=a.algo,
        learning_starts=a.learning_starts,
    )


def _paired(a: argparse.Namespace, agents: list[str]) -> dict[str, Any]:
    """``crl bench throughput --paired``: short blocks of every contender in turn."""
    from crl.bench import PPO_ROLLOUT
    from crl.bench_paired import PPO_BLOCK, SAC_BLOCK, paired
    from crl.errors import ConfigError

    for flag, value in (("--steps", a.steps), ("--repeats", a.repeats), ("--probe-steps", a.probe_steps)):
        if value is not None:
            raise ConfigError(f"{flag} does not apply with --paired (it has --blocks, --block-steps, --warmup-steps)")
    block = a.block_steps if a.block_steps is not None else SAC_BLOCK if a.algo == "sac" else PPO_BLOCK
    if a.blocks < 1 or block < 1:
        raise ConfigError(f"--blocks and --block-steps must be >= 1, got {a.blocks} and {block}")
    if a.algo == "ppo" and block % PPO_ROLLOUT:
        raise ConfigError(
            f"--block-steps must be a multiple of {PPO_ROLLOUT} (the rollout) with --algo ppo, got {block}"
        )
    if a.warmup_steps is not None and a.algo == "sac" and a.warmup_steps < 1:
        raise ConfigError(f"--warmup-steps must be >= 1, got {a.warmup_steps}")
    if (
        a.warmup_steps is not None
        and a.algo == "ppo"
        and (a.warmup_steps < PPO_ROLLOUT or a.warmup_steps % PPO_ROLLOUT)
    ):
        raise ConfigError(
            f"--warmup-steps must be a positive multiple of {PPO_ROLLOUT} (the rollout) with --algo ppo, "
            f"got {a.warmup_steps}"
        )
    if a.algo == "sac" and a.learning_starts < 0:
        raise ConfigError(f"--learning-starts must be >= 0, got {a.learning_starts}")
    return paired(
        a.blocks,
        ("sb3", *agents),
        block=block,
        warmup=a.warmup_steps,
        algo=a.algo,
        learning_starts=a.learning_starts,
        n_envs=a.n_envs,
        vec_env=a.vec_env,
        train_threads=a.train_threads,
        raw_steps=a.raw_steps,
        log=None if a.json else lambda s: print(s, file=sys.stderr),
    )


def _agent_exists(name: str) -> bool:
    """Whether the catalog has agent ``name``."""
    from crl.catalog import resolve_agent

    try:
        resolve_agent(name)
    except Exception:
        return False
    return True


def _run_probe(a: argparse.Namespace) -> int:
    """``crl bench probe``: crl's probe against plain NumPy."""
    from crl.bench_probe import print_probe_table, probe_bench
    from crl.errors import ConfigError, UnknownNameError
    from crl.probe import METHODS

    if a.seeds < 1 or a.examples < 2:
        raise ConfigError(f"--seeds must be >= 1 and --examples >= 2, got {a.seeds} and {a.examples}")
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise UnknownNameError("probe method", m, list(METHODS))
    res = probe_bench(a.seeds, a.examples, methods, log=None if a.json else lambda s: print(s, file=sys.stderr))
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print_probe_table(res)
    return 0
