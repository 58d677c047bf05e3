"""``crl dashboard``: a wandb workspace with the regime-aware panels of an experiment."""

from __future__ import annotations

import argparse

HELP = "build a wandb workspace with the regime-aware panels of an experiment (online), or write its spec"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl dashboard``."""
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="experiment folder (runs/<experiment>)")
    p.add_argument("--project", default=None, help="wandb project (default: the runs' own)")
    p.add_argument("--entity", default=None, help="wandb entity (default: the runs' own, or yours)")
    p.add_argument("--spec", default=None, metavar="FILE", help="write the panels as JSON to FILE; no network")


def run(a: argparse.Namespace) -> int:
    """Write the spec (``--spec``) or save the workspace and print its URL."""
    from crl.dashboard import build_workspace, check_online, dashboard_spec, write_spec

    spec = dashboard_spec(a.runs_dir, project=a.project, entity=a.entity)
    if a.spec:
        n = sum(len(s["panels"]) for s in spec["sections"])
        print(f"{write_spec(spec, a.spec)}: {len(spec['sections'])} sections, {n} panels")
        return 0
    check_online()
    print(build_workspace(spec))
    return 0
