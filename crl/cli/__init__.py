"""The ``crl`` command: every sub-command is registered here, in :data:`COMMANDS`.

========================  ==================================================================
:mod:`crl.cli.train`      ``crl train``: one (env, agent, seed) run
:mod:`crl.cli.sweep`      ``crl sweep``: a grid of runs, locally or on Ray
:mod:`crl.cli.catalog`    ``crl envs``, ``crl agents``: what the catalogs hold
:mod:`crl.cli.results`    ``crl report``, ``crl compare``, ``crl metrics``, ``crl results``
:mod:`crl.cli.probe`      ``crl probe``: supervised plasticity probes
:mod:`crl.cli.bench`      ``crl bench``: throughput against plain SB3
:mod:`crl.cli.dashboard`  ``crl dashboard``: a wandb workspace of an experiment
========================  ==================================================================

Each module defines its arguments and its handler; heavy imports (torch, SB3) happen in
the handler, so ``crl --help`` is fast. Every :class:`~crl.errors.CrlError` is printed as
one line ``crl: error: ...`` with exit status 2.

Example:
    >>> sorted(COMMANDS)
    ['agents', 'bench', 'compare', 'dashboard', 'envs', 'metrics', 'probe', 'report', 'results', 'sweep', 'train']
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from typing import NamedTuple

from crl.cli import bench, catalog, dashboard, probe, results, sweep, train
from crl.cli.common import OneLineParser
from crl.errors import CrlError

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


class Command(NamedTuple):
    """A sub-command: its help line, its arguments and its handler (returns the exit status)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: Every sub-command of ``crl``, in the order ``crl --help`` lists them.
COMMANDS: dict[str, Command] = {
    "train": Command(train.HELP, train.add_arguments, train.run),
    "sweep": Command(sweep.HELP, sweep.add_arguments, sweep.run),
    "envs": Command(catalog.ENVS_HELP, catalog.add_envs_arguments, catalog.run_envs),
    "agents": Command(catalog.AGENTS_HELP, catalog.add_agents_arguments, catalog.run_agents),
    "report": Command(results.REPORT_HELP, results.add_report_arguments, results.run_report),
    "compare": Command(results.COMPARE_HELP, results.add_compare_arguments, results.run_compare),
    "metrics": Command(results.METRICS_HELP, results.add_metrics_arguments, results.run_metrics),
    "results": Command(results.RESULTS_HELP, results.add_results_arguments, results.run_results),
    "probe": Command(probe.HELP, probe.add_arguments, probe.run),
    "bench": Command(bench.HELP, bench.add_arguments, bench.run),
    "dashboard": Command(dashboard.HELP, dashboard.add_arguments, dashboard.run),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``crl``."""
    parser = OneLineParser(prog="crl", description="Continual reinforcement learning on drifting tasks.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, cmd in COMMANDS.items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``crl``; return the exit status."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    warnings.filterwarnings("ignore", module="gymnasium")
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.version:
        from crl import __version__

        print(__version__)
        return 0
    if not a.command:
        parser.print_help()
        return 2
    try:
        from crl.catalog import add_catalog

        for d in getattr(a, "catalog", []) or []:
            add_catalog(d)
        return COMMANDS[a.command].run(a)
    except CrlError as e:
        print(f"crl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crl: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
