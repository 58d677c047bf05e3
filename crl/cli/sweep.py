"""``crl sweep``: a grid of runs from a sweep file, locally or on Ray."""

from __future__ import annotations

import argparse
from pathlib import Path

from crl.cli.common import add_run_args

HELP = "run a grid of runs from a sweep file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl sweep``."""
    p.add_argument("file", help="sweep YAML file (or the name of a catalog experiment)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs of the grid with their state (new, finished, resumable, failed, running)",
    )
    p.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: one process per run (default); ray: one Ray task per run",
    )
    p.add_argument("--workers", type=int, default=None, help="local runs at a time (default: number of cores)")
    p.add_argument("--address", default=None, help="Ray cluster address (ray.init(address=...)), e.g. HOST:6379")
    p.add_argument(
        "--retries",
        type=int,
        default=None,
        help="times a failed run is retried from its last checkpoint (default: 0 local, 2 ray)",
    )
    p.add_argument("--report", action="store_true", help="build the report at the end (also: report: true)")
    p.add_argument("--no-progress", action="store_true")
    add_run_args(p)


def run(a: argparse.Namespace) -> int:
    """Run the sweep (or list it with ``--dry-run``); exit 1 if a run did not finish."""
    from crl.run import command_line
    from crl.sweep import load_sweep, plan, run_sweep

    spec = load_sweep(a.file)
    if a.dry_run:
        runs = plan(spec, a.run_dir, a.wandb)
        for r in runs:
            print(f"{r.state:10s} {r.dir}")
        states = ["new", "resumable", "failed", "finished"] + ["running"] * any(r.state == "running" for r in runs)
        counts = {s: sum(r.state == s for r in runs) for s in states}
        print(f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
        return 0
    summary = run_sweep(
        spec,
        a.run_dir,
        a.wandb,
        backend=a.backend,
        workers=a.workers,
        address=a.address,
        retries=a.retries,
        progress=not a.no_progress,
        source=str(a.file),
        command=command_line(),
    )
    out = Path(a.run_dir) / spec.experiment
    n_ok = summary["counts"].get("finished", 0)
    print(f"{n_ok}/{len(summary['runs'])} runs finished; summary in {out / 'sweep.json'}")
    for r in summary["runs"]:
        if r["status"] != "finished":
            print(f"  {r['status']:11s} {r['name']}: {r['error']}")
    if summary["interrupted"]:
        raise KeyboardInterrupt
    if (spec.report or a.report) and n_ok:
        from crl.report import build_report

        print(f"report: {build_report(out, out / 'report')}")
    return 0 if n_ok == len(summary["runs"]) else 1
