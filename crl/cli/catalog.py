"""``crl envs`` and ``crl agents``: what the catalogs hold."""

from __future__ import annotations

import argparse
import textwrap

from crl.cli.common import add_catalog_arg

ENVS_HELP = "list the drifting environments of the catalog"
AGENTS_HELP = "list the agents of the catalog"


def add_envs_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl envs``."""
    p.add_argument("name", nargs="?", help="show one env in full")
    add_catalog_arg(p)


def run_envs(a: argparse.Namespace) -> int:
    """List the envs, or show one."""
    import yaml

    from crl.catalog import env_specs, resolve_env

    if a.name:
        s = resolve_env(a.name)
        print(
            yaml.safe_dump(
                {
                    "name": s.name,
                    "id": s.id,
                    "base": s.base,
                    "drifts": s.drifts,
                    "schedule": s.schedule,
                    "base_kwargs": s.base_kwargs,
                    "description": s.description,
                    "file": s.path,
                },
                sort_keys=False,
            ).rstrip()
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table("name", "id", "base", "drifts", "schedule", "description")
    for name, s in sorted(env_specs().items()):
        drifts = ", ".join(next(iter(d)) if isinstance(d, dict) else str(d) for d in s.drifts)
        sched = next(iter(s.schedule)) if s.schedule else "-"
        t.add_row(name, s.id, s.base or "-", drifts or "-", sched, textwrap.shorten(s.description, 80))
    Console(width=200).print(t)
    return 0


def add_agents_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl agents``."""
    p.add_argument("name", nargs="?", help="show one agent in full")
    add_catalog_arg(p)


def run_agents(a: argparse.Namespace) -> int:
    """List the agents, or show one."""
    import yaml

    from crl.catalog import agent_specs, resolve_agent

    if a.name:
        print(yaml.safe_dump(resolve_agent(a.name).to_dict(), sort_keys=False).rstrip())
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table("name", "algo", "optimizer", "interventions", "description")
    for name, s in sorted(agent_specs().items()):
        ivs = ", ".join(next(iter(i)) if isinstance(i, dict) else str(i) for i in s.interventions)
        t.add_row(name, s.algo, s.optimizer.get("name", "?"), ivs or "-", textwrap.shorten(s.description, 90))
    Console(width=200).print(t)
    return 0
