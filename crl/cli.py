"""The ``crl`` command.

Sub-commands register themselves in :data:`COMMANDS` (name -> (add_arguments, run)), so
new ones plug in without touching an if/elif chain. Every :class:`~crl.errors.CrlError`
is printed as one line ``crl: error: ...`` with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

from crl.errors import CrlError

__all__ = ["main", "COMMANDS", "command"]

Adder = Callable[[argparse.ArgumentParser], None]
Runner = Callable[[argparse.Namespace], int]

#: Sub-commands: name -> (help, add_arguments, run).
COMMANDS: dict[str, tuple[str, Adder, Runner]] = {}


def command(name: str, help: str, add: Adder) -> Callable[[Runner], Runner]:
    """Decorator registering a sub-command."""

    def deco(fn: Runner) -> Runner:
        COMMANDS[name] = (help, add, fn)
        return fn

    return deco


def _common_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default="runs", help="root folder of the outputs (default: runs)")
    p.add_argument(
        "--wandb",
        choices=["auto", "offline", "online", "disabled"],
        default=None,
        help="wandb mode (default: offline unless wandb is configured)",
    )
    p.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="DIR",
        help="extra catalog folder with envs/ and agents/ (also: CRL_CATALOG)",
    )


# -- train --------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="env catalog name, YAML path or Gymnasium id")
    p.add_argument("--agent", required=True, help="agent catalog name or YAML path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=100_000, help="environment steps (default 100000)")
    p.add_argument("--experiment", default="default", help="folder under --run-dir grouping runs")
    p.add_argument("--env-kwargs", nargs="*", default=[], metavar="K=V", help="gymnasium.make overrides")
    p.add_argument(
        "--agent-kwargs",
        nargs="*",
        default=[],
        metavar="K=V",
        help="agent overrides: hyperparameters by name, other spec keys dotted (optimizer.betas=[0.99,0.99])",
    )
    p.add_argument("--n-envs", type=int, default=1)
    p.add_argument(
        "--vec-env",
        choices=["auto", "dummy", "proc"],
        default="auto",
        help="envs in the learner's process (dummy) or in worker processes (proc); auto: proc for n-envs > 1",
    )
    p.add_argument("--checkpoint-every", type=int, default=50_000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--train-threads", type=int, default=0, help="torch threads during updates (0: --torch-threads)")
    p.add_argument("--resume", action="store_true", help="require resuming from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--diagnostics-every", type=int, default=10_000, help="steps between plasticity/* rows (0: off)")
    p.add_argument("--eval-every", type=int, default=0, help="steps between evaluations on every regime (0: off)")
    p.add_argument("--eval-episodes", type=int, default=3, help="episodes per regime and evaluation")
    _common_run_args(p)


@command("train", "train one (env, agent, seed) run", _train_args)
def _train(a: argparse.Namespace) -> int:
    from crl.config import parse_overrides
    from crl.run import RunConfig, command_line, train

    cfg = RunConfig(
        env=a.env,
        agent=a.agent,
        seed=a.seed,
        steps=a.steps,
        experiment=a.experiment,
        run_dir=a.run_dir,
        env_kwargs=parse_overrides(a.env_kwargs, "--env-kwargs"),
        agent_kwargs=parse_overrides(a.agent_kwargs, "--agent-kwargs"),
        n_envs=a.n_envs,
        vec_env=a.vec_env,
        checkpoint_every=a.checkpoint_every,
        wandb=a.wandb or "auto",
        device=a.device,
        torch_threads=a.torch_threads,
        train_threads=a.train_threads,
        progress=not a.no_progress,
        command=command_line(),
        diagnostics_every=a.diagnostics_every,
        eval_every=a.eval_every,
        eval_episodes=a.eval_episodes,
    )
    result = train(cfg, resume=True if a.resume else None, overwrite=a.overwrite)
    if result.skipped:
        print(f"already finished: {result.run_dir}")
    else:
        print(f"{result.status} at step {result.global_step:,}: {result.run_dir}")
    return 0


# -- sweep --------------------------------------------------------------------
def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="sweep YAML file (or the name of a catalog experiment)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs of the grid with their state (new, finished, resumable, failed)",
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
    _common_run_args(p)


@command("sweep", "run a grid of runs from a sweep file", _sweep_args)
def _sweep(a: argparse.Namespace) -> int:
    from crl.run import command_line
    from crl.sweep import load_sweep, plan, run_sweep

    spec = load_sweep(a.file)
    if a.dry_run:
        runs = plan(spec, a.run_dir, a.wandb)
        for r in runs:
            print(f"{r.state:10s} {r.dir}")
        counts = {s: sum(r.state == s for r in runs) for s in ("new", "resumable", "failed", "finished")}
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
        try:
            from crl.report import build_report
        except ImportError:
            build_report = None
        if build_report is not None:
            path = build_report(out, out / "report")
            print(f"report: {path}")
        else:
            print("report: crl.report is not available in this version", file=sys.stderr)
    return 0 if n_ok == len(summary["runs"]) else 1


# -- catalogs -----------------------------------------------------------------
def _envs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="show one env in full")
    p.add_argument("--catalog", action="append", default=[], metavar="DIR")


@command("envs", "list the drifting environments of the catalog", _envs_args)
def _envs(a: argparse.Namespace) -> int:
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


def _agents_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="show one agent in full")
    p.add_argument("--catalog", action="append", default=[], metavar="DIR")


@command("agents", "list the agents of the catalog", _agents_args)
def _agents(a: argparse.Namespace) -> int:
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


# -- entry point --------------------------------------------------------------
def _load_optional_commands() -> None:
    """Import modules that add sub-commands (report, metrics, probe, bench) if present."""
    import importlib

    for mod in ("crl.report", "crl.references", "crl.probe", "crl.bench"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        register = getattr(m, "register_cli", None)
        if register is not None:
            register(command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``crl``."""
    _load_optional_commands()
    parser = argparse.ArgumentParser(prog="crl", description="Continual reinforcement learning on drifting tasks.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=help_, description=help_))
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
        return COMMANDS[a.command][2](a)
    except CrlError as e:
        print(f"crl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crl: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
