"""``crl probe``: loss of plasticity in a supervised stream through the same plug-ins."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "loss of plasticity in a supervised stream (bit-flipping, permuted digits)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl probe``."""
    from crl.probe import METHODS, TASKS

    p.add_argument("--task", default="bit-flipping", help=f"one of {', '.join(TASKS)}")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--seeds", type=int, default=10, help="networks per method (default 10)")
    p.add_argument(
        "--examples",
        type=int,
        default=200_000,
        help="examples per network (default 200000, a fifth of Dohare's 1M: enough for plain backprop's error "
        "to rise clearly on bit-flipping at step size 0.01; the paper's full curves need --examples 1000000, "
        "see docs/performance.md for the time)",
    )
    p.add_argument("--step-size", type=float, default=None, help="SGD step size (default: the task's, 0.01)")
    p.add_argument("--change-every", type=int, default=None, help="examples per task (default 10000 / 5000)")
    p.add_argument(
        "--bin-size", type=int, default=None, help="examples per error bin (default: one task, --change-every)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes (default: number of cores); the SGD methods are shared out among them by cost, each "
        "process's methods learning as one batched network (the numbers do not depend on the split)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/probe", help="folder of the figure and results.json")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(a: argparse.Namespace) -> int:
    """Run the probe; write its figure and results.json."""
    from crl.probe import print_table, run_probe, write_figure

    res = run_probe(
        a.task,
        [m.strip() for m in a.methods.split(",") if m.strip()],
        seeds=a.seeds,
        examples=a.examples,
        step_size=a.step_size,
        change_every=a.change_every,
        bin_size=a.bin_size,
        workers=a.workers,
        seed=a.seed,
        log=None if a.json else lambda s: print(s, file=sys.stderr),
    )
    out = Path(a.out)
    fig = write_figure(res, out)
    saved = out / f"probe-{res['task']}.json"
    saved.write_text(json.dumps(res, indent=1))
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print_table(res)
        print(f"{res['seconds']:.0f} s; figure {fig}; results {saved}")
    return 0
