"""``crl bench throughput --paired``: speed ratios from short blocks run in turn, pair by pair.

:func:`crl.bench.throughput` times each contender over a whole run (tens of seconds), one after
the other. Where the machine's own speed moves on that scale (a shared or virtual machine whose
second core comes and goes), each round's ratio carries that drift, and only many rounds average
it out. Here every contender trains in a process of its own that lives for the whole bench, and a
:class:`Gate` callback holds it every ``block`` env steps until the bench lets it go on. Block
``k`` of every contender runs in turn (the order reversed every other block, so that a steady
drift favours no one), and block ``k``'s ratio to the first contender's block ``k`` compares two
measurements seconds apart. The bench reports the median of those per-block ratios with its
distribution-free 95 % interval (:func:`crl.stats.median_interval`).

A block is the env steps after a gate up to the next, with everything they bring: for SAC (one
gradient step per env step) ``block`` gradient steps; for PPO (gates at multiples of the 2,048-step
rollout) one update and one rollout. Contenders warm up one at a time before the first gate: SAC's
random steps, then ``warmup`` steps more (FastSAC's first timing probes); PPO's first two
rollouts and its first update (worker processes started, first kernels run).
While one contender runs its block the others wait on a pipe, using no CPU.

Example:
    >>> gate = Gate(first=4, block=2)
    >>> gate.positions(3)
    [4, 6, 8]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from stable_baselines3.common.callbacks import BaseCallback

from crl.bench import PPO_ROLLOUT, bench_setting, child_env, finish, raw_mujoco_rate, run_contender, time_split
from crl.stats import median_interval

__all__ = ["Gate", "ChildProcess", "run_blocks", "paired", "child", "PPO_BLOCK", "SAC_BLOCK"]

#: Default block for PPO: one rollout of SB3's 2,048 samples, so every block holds one update.
PPO_BLOCK = PPO_ROLLOUT
#: Default block for SAC: 250 gradient steps (2-4 s of SB3 on a 2-core machine).
SAC_BLOCK = 250


class Gate(BaseCallback):
    """Holds training at env steps ``first``, ``first + block``, ``first + 2 block``, ...: at each,
    prints ``@@gate STEPS SECONDS`` on ``out`` (the env steps and wall seconds since the last
    gate; ``0 0.0`` at the first) and waits for a line on ``inp``. Once ``inp`` ends it no longer
    waits. :attr:`waited` sums the seconds spent waiting. It leaves the weights alone
    (rollout-safe, so crl's fast loops keep their fast path).
    """

    rollout_safe = True

    def __init__(self, first: int, block: int, inp: IO[str] | None = None, out: IO[str] | None = None) -> None:
        super().__init__()
        if first < 1 or block < 1:
            raise ValueError(f"the first gate and the block must be >= 1 step, got {first} and {block}")
        self.first, self.block = first, block
        self.next: float = first
        self.inp, self.out = inp, out
        self.since: tuple[int, float] | None = None  # env step and time of the last go
        self.waited = 0.0

    def positions(self, n: int) -> list[int]:
        """The env steps of the first ``n`` gates."""
        return [self.first + i * self.block for i in range(n)]

    def _on_step(self) -> bool:
        step = self.num_timesteps
        if step < self.next:
            return True
        now = time.perf_counter()
        done = (step - self.since[0], now - self.since[1]) if self.since else (0, 0.0)
        print(f"@@gate {done[0]} {done[1]!r}", file=self.out or sys.stdout, flush=True)
        if (self.inp or sys.stdin).readline():
            self.next = self.first + self.block * ((step - self.first) // self.block + 1)
        else:
            self.next = math.inf
        self.since = (step, time.perf_counter())
        self.waited += self.since[1] - now
        return True


def child(
    contender: str,
    first: int,
    block: int,
    steps: int,
    seed: int = 0,
    n_envs: int = 16,
    vec_env: str = "auto",
    train_threads: int = 0,
    learning_starts: int | None = None,
) -> None:
    """The body of one contender's process: :func:`crl.bench.run_contender` for ``steps`` with a
    :class:`Gate` on stdin and stdout, then ``@@result`` and the run's totals as JSON (the wall
    time without the waits at the gates).
    """
    gate = Gate(first, block)
    r = run_contender(contender, steps, seed, n_envs, vec_env, train_threads, learning_starts, [gate])
    r["wall"] -= gate.waited
    print("@@result " + json.dumps(r), flush=True)


class ChildProcess:
    """One contender's process (``crl.bench_paired.<call>``, e.g. :func:`child`), driven line by
    line; ``source``: the crl source folder it imports (default: this one's), e.g. another git
    worktree, to time a change side by side (``benchmarks/paired_trees.py``).
    """

    def __init__(self, name: str, call: str, err: IO[str], source: str | None = None) -> None:
        self.name, self.err = name, err
        code = f"import crl.bench_paired as p; p.{call}"
        pipe = subprocess.PIPE
        self.p = subprocess.Popen(
            [sys.executable, "-c", code], stdin=pipe, stdout=pipe, stderr=err, text=True, env=child_env(source)
        )

    def read(self, tag: str) -> str:
        """The rest of the next stdout line that starts with ``@@<tag> ``."""
        assert self.p.stdout is not None
        for line in self.p.stdout:
            if line.startswith(f"@@{tag} "):
                return line[len(tag) + 3 :]
        self.p.wait()
        self.err.seek(0)
        last = self.err.read().strip().splitlines()[-1:]
        raise RuntimeError(f"bench child {self.name!r} failed (exit {self.p.returncode}): {last}")

    def gate(self) -> tuple[int, float]:
        """Wait for the next gate: the env steps and seconds of the block it ends."""
        steps, seconds = self.read("gate").split()
        return int(steps), float(seconds)

    def go(self) -> None:
        """Let the process run on from its gate."""
        assert self.p.stdin is not None
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def run_blocks(
    procs: dict[str, ChildProcess], blocks: int, log: Callable[[str], None] | None = None
) -> dict[str, list[float]]:
    """Run ``blocks`` blocks of every process in turn (reversed order every other block); each
    process's steps/s per block.
    """
    rates: dict[str, list[float]] = {c: [] for c in procs}
    names = list(procs)
    for k in range(blocks):
        for c in names if k % 2 == 0 else names[::-1]:
            procs[c].go()
            steps, seconds = procs[c].gate()
            rates[c].append(steps / seconds)
        if log:
            log(f"block {k + 1}/{blocks}: " + ", ".join(f"{c} {rates[c][-1]:.0f}" for c in names) + " steps/s")
    return rates


def _row(rates: list[float], base: list[float], run: dict[str, float], sac: bool) -> dict[str, Any]:
    ratios = [r / b for r, b in zip(rates, base, strict=True)]
    ratio, low, high = median_interval(ratios)
    return {
        "steps_per_s": statistics.median(rates),
        "all_steps_per_s": rates,
        "ratio": ratio,
        "ratio_low": None if math.isnan(low) else low,
        "ratio_high": None if math.isnan(high) else high,
        "round_ratios": ratios,
        **time_split([run], sac),
    }


def paired(
    blocks: int,
    contenders: Sequence[str],
    block: int | None = None,
    warmup: int | None = None,
    seed: int = 0,
    algo: str = "ppo",
    learning_starts: int = 1000,
    n_envs: int = 16,
    vec_env: str = "auto",
    train_threads: int = 0,
    raw_steps: int = 5000,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time ``blocks`` blocks of ``block`` env steps of every contender in turn (see the module
    docstring); the first contender is the baseline of every ratio.

    Contenders are those of :func:`crl.bench.measure`. ``block`` defaults to :data:`PPO_BLOCK` or
    :data:`SAC_BLOCK`; ``warmup`` (env steps before the first gate, after SAC's
    ``learning_starts`` random steps) to one block for SAC, two for PPO. Returns :func:`crl.bench.throughput`'s
    result with ``mode="paired"``: each row's ``ratio`` is the median of its per-block ratios
    (``round_ratios``), with ``ratio_low`` and ``ratio_high`` its 95 % interval (``None`` with 5
    blocks or fewer); ``steps_per_s`` is the median block's; the time split and peak memory
    cover the whole run, warm-up included.
    """
    sac = algo == "sac"
    block = block or (SAC_BLOCK if sac else PPO_BLOCK)
    warmup = (1 if sac else 2) * block if warmup is None else warmup
    first = (learning_starts if sac else 0) + warmup
    steps = first + blocks * block
    ls = learning_starts if sac else None
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        procs: dict[str, ChildProcess] = {}
        for i, c in enumerate(contenders):  # one at a time: warm-ups do not share the cores
            err = stack.enter_context(open(os.path.join(d, f"{i}.err"), "w+"))
            call = f"child({c!r}, {first}, {block}, {steps}, {seed}, {n_envs}, {vec_env!r}, {train_threads}, {ls})"
            procs[c] = ChildProcess(c, call, err)
            stack.callback(procs[c].kill)
            procs[c].gate()
            if log:
                log(f"{c}: warmed up ({first} steps)")
        rates = run_blocks(procs, blocks, log)
        runs = {}
        for c, proc in procs.items():
            proc.go()
            runs[c] = finish(json.loads(proc.read("result")), sac)
            proc.p.wait()
    base = rates[contenders[0]]
    raw = raw_mujoco_rate(raw_steps)
    return {
        "mode": "paired",
        **bench_setting(algo, learning_starts, raw, raw_steps, n_envs, vec_env, train_threads),
        "steps": steps,
        "blocks": blocks,
        "block_steps": block,
        "warmup_steps": warmup,
        "speed_probes": [],
        "speed_spread": None,
        "base_spread": (max(base) - min(base)) / max(base),
        "results": {c: _row(rates[c], base, runs[c], sac) for c in contenders},
    }
