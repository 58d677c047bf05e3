"""Paired blocks of real runs from two or more crl source trees: is a change faster?

``crl bench throughput --paired`` compares crl's agents with plain SB3 within one source tree.
To time a change, run the same contender from two trees (e.g. ``git worktree add /tmp/base
main`` beside your checkout) in the bench's own child processes (:func:`crl.bench_paired.child`,
one per tree, ``PYTHONPATH`` pointing at the tree), block by block in turn (the order reversed
every other block), and compare each block with the first tree's block of the same round::

    python benchmarks/paired_trees.py sb3=.:sb3 base=/tmp/base:sac new=.:sac --blocks 30 --algo sac

Each argument is ``LABEL=TREE:CONTENDER`` (a contender of ``crl bench throughput``: ``sb3``,
``sac``, ``ppo``, ...). Prints each label's median block rate and the median of its per-block
ratios to the first label, with the 95 % interval (:func:`crl.stats.median_interval`), and the
same for the last label against the second one (the change, where the first is plain SB3).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from typing import IO

from crl.bench_paired import PPO_BLOCK, SAC_BLOCK
from crl.stats import median_interval


def _gate(out: IO[str]) -> tuple[int, float]:
    """The env steps and seconds of the block that the child's next gate line ends."""
    for line in out:
        if line.startswith("@@gate "):
            steps, seconds = line.split()[1:]
            return int(steps), float(seconds)
    raise RuntimeError("a bench child ended before its gate (run it alone to see its error)")


def _start(tree: str, contender: str, first: int, block: int, steps: int, ls: int | None) -> subprocess.Popen[str]:
    call = f"child({contender!r}, {first}, {block}, {steps}, 0, 16, 'auto', 0, {ls})"
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    code = f"import crl.bench_paired as p; p.{call}"
    pipe = subprocess.PIPE
    return subprocess.Popen([sys.executable, "-c", code], stdin=pipe, stdout=pipe, text=True, env=env, cwd="/")


def main() -> None:
    """Run the blocks and print the rates and ratios (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("contenders", nargs="+", help="LABEL=TREE:CONTENDER, the first is every ratio's base")
    ap.add_argument("--algo", choices=("ppo", "sac"), default="sac")
    ap.add_argument("--blocks", type=int, default=30)
    args = ap.parse_args()
    sac = args.algo == "sac"
    block, ls = (SAC_BLOCK, 1000) if sac else (PPO_BLOCK, None)
    first = (1000 + block) if sac else 2 * block
    steps = first + args.blocks * block
    procs = {}
    for spec in args.contenders:  # one at a time: warm-ups do not share the cores
        label, _, rest = spec.partition("=")
        tree, _, contender = rest.rpartition(":")
        procs[label] = _start(tree, contender, first, block, steps, ls)
        _gate(procs[label].stdout)  # type: ignore[arg-type]
    names, rates = list(procs), {label: [] for label in procs}  # type: ignore[var-annotated]
    try:
        for k in range(args.blocks):
            for label in names if k % 2 == 0 else names[::-1]:
                p = procs[label]
                p.stdin.write("go\n")  # type: ignore[union-attr]
                p.stdin.flush()  # type: ignore[union-attr]
                n, seconds = _gate(p.stdout)  # type: ignore[arg-type]
                rates[label].append(n / seconds)
    finally:
        for p in procs.values():
            p.kill()
    pairs = [(label, names[0]) for label in names[1:]] + ([(names[-1], names[1])] if len(names) > 2 else [])
    for label in names:
        print(f"{label}: median block {statistics.median(rates[label]):.1f} steps/s")
    for a, b in pairs:
        ratio, low, high = median_interval([x / y for x, y in zip(rates[a], rates[b], strict=True)])
        print(f"{a}/{b}: {ratio:.3f} ({low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()
