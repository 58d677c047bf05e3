"""``crl report``, ``crl compare`` and ``crl metrics``: what a set of runs shows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPORT_HELP = "build the HTML comparison report from run directories"
COMPARE_HELP = "print the comparison tables in the terminal"
METRICS_HELP = "continual-learning metrics of run folders"


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl report``."""
    p.add_argument("runs_dir")
    p.add_argument("-o", "--out", default=None, help="output folder (default RUNS_DIR/report)")
    p.add_argument(
        "--bin",
        "--bin-steps",
        dest="bin_steps",
        type=int,
        default=None,
        help="curve bin width in steps (default: a tenth of the regime length)",
    )
    p.add_argument("--late-fraction", type=float, default=0.25, help="late part of each regime, as a fraction")
    p.add_argument("--poi", action="store_true", help="add probability of improvement between agent pairs")
    p.add_argument("--reps", type=int, default=1000, help="bootstrap resamples for the confidence intervals")
    p.add_argument("--wandb", action="store_true", help="also log figures and tables as a wandb report run")
    p.add_argument("--wandb-project", default="crl")
    p.add_argument("--wandb-mode", default="offline", choices=["offline", "online", "disabled"])


def run_report(a: argparse.Namespace) -> int:
    """Build the report and print its path."""
    from crl.report import build_report

    path = build_report(
        a.runs_dir,
        a.out,
        bin_steps=a.bin_steps,
        late_fraction=a.late_fraction,
        poi=a.poi,
        reps=a.reps,
        wandb=a.wandb,
        wandb_project=a.wandb_project,
        wandb_mode=a.wandb_mode,
    )
    print(path)
    return 0


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl compare``."""
    p.add_argument("runs_dir")
    p.add_argument("--late-fraction", type=float, default=0.25)
    p.add_argument("--poi", action="store_true")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the confidence intervals")


def run_compare(a: argparse.Namespace) -> int:
    """Print the comparison tables."""
    from crl.report import print_compare

    print_compare(a.runs_dir, poi=a.poi, late_fraction=a.late_fraction, reps=a.reps)
    return 0


def add_metrics_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl metrics``."""
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders")
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="DIR",
        help="from-scratch reference run (one per regime), for forward transfer",
    )
    p.add_argument(
        "--make-references",
        action="store_true",
        help="launch from-scratch reference runs on each regime of each run first",
    )
    p.add_argument("--frac", type=float, default=0.1, help="share of a regime giving its final return")
    p.add_argument("--json", action="store_true", help="print JSON")


#: The rows of ``crl metrics``' table.
METRIC_ROWS = (
    "average_performance",
    "mean_forgetting",
    "mean_forward_transfer",
    "plasticity_score",
    "forgetting",
    "forward_transfer",
    "source",
)


def run_metrics(a: argparse.Namespace) -> int:
    """Print the continual-learning metrics of each run folder."""
    from crl.metrics import format_value, run_metrics
    from crl.references import make_references

    results = {}
    for d in a.run_dirs:
        refs = list(a.reference)
        if a.make_references:
            refs += [str(p) for p in make_references(d)]
        results[d] = run_metrics(d, refs or None, frac=a.frac)
    if a.json:
        print(json.dumps(results, indent=1, default=float))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table("metric", *(Path(d).name for d in results))
    for k in METRIC_ROWS:
        t.add_row(k, *(format_value(r[k]) for r in results.values()))
    Console().print(t)
    return 0
