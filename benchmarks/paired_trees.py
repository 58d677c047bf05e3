"""Paired blocks of real runs from two or more crl source trees: is a change faster?

``crl bench throughput --paired`` compares crl's agents with plain SB3 within one source tree.
To time a change, run the same contender from two trees (e.g. ``git worktree add /tmp/base
main`` beside your checkout) in the bench's own child processes (:func:`crl.bench_paired.child`
in a :class:`crl.bench_paired.ChildProcess` whose source is the tree), block by block in turn
(:func:`crl.bench_paired.run_blocks`: the order reversed every other block), and compare each
block with the first tree's block of the same round::

    python benchmarks/paired_trees.py sb3=.:sb3 base=/tmp/base:sac new=.:sac --blocks 30 --algo sac

Each argument is ``LABEL=TREE:CONTENDER`` (a contender of ``crl bench throughput``: ``sb3``,
``sac``, ``ppo``, ...). Prints each label's median block rate and the median of its per-block
ratios to the first label, with the 95 % interval (:func:`crl.stats.median_interval`), and the
same for the last label against the second one (the change, where the first is plain SB3).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile

from crl.bench_paired import PPO_BLOCK, SAC_BLOCK, ChildProcess, run_blocks
from crl.stats import median_interval


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
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        procs: dict[str, ChildProcess] = {}
        for i, spec in enumerate(args.contenders):  # one at a time: warm-ups do not share the cores
            label, _, rest = spec.partition("=")
            tree, _, contender = rest.rpartition(":")
            err = stack.enter_context(open(os.path.join(d, f"{i}.err"), "w+"))
            call = f"child({contender!r}, {first}, {block}, {steps}, 0, 16, 'auto', 0, {ls})"
            procs[label] = ChildProcess(label, call, err, source=tree)
            stack.callback(procs[label].kill)
            procs[label].gate()
        rates = run_blocks(procs, args.blocks)
    names = list(procs)
    pairs = [(label, names[0]) for label in names[1:]] + ([(names[-1], names[1])] if len(names) > 2 else [])
    for label in names:
        print(f"{label}: median block {statistics.median(rates[label]):.1f} steps/s")
    for a, b in pairs:
        ratio, low, high = median_interval([x / y for x, y in zip(rates[a], rates[b], strict=True)])
        print(f"{a}/{b}: {ratio:.3f} ({low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()
