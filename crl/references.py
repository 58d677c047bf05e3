"""From-scratch reference runs for forward transfer, and the ``crl metrics`` command.

:mod:`crl.metrics` only reads run folders; launching reference runs trains agents, so it
lives here, one layer up (``references -> run``, ``references -> metrics``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crl.metrics import _fmt, load_run, run_metrics

__all__ = ["make_references", "register_cli"]


def make_references(run_dir: str | Path, steps: int | None = None, experiment: str | None = None) -> list[Path]:
    """Launch (or find finished) from-scratch reference runs of a run: one per regime id it
    visited, same env (drift seed included), agent and seed, with the schedule pinned to that
    regime (``cyclic`` with a one-regime cycle). ``steps`` defaults to the run's longest segment.
    Returns the reference run folders (under ``<experiment>-ref``).
    """
    import yaml

    from crl.config import yaml_load
    from crl.run import RunConfig, train

    d = Path(run_dir)
    cfg = yaml_load((d / "config.yaml").read_text())
    _, reg = load_run(d)
    ends = reg["end_step"].fillna(cfg["steps"]).astype(int)
    length = int(steps or (ends - reg["start_step"]).max())
    exp = f"{experiment or cfg['experiment']}-ref"
    agent = dict(cfg["agent"])
    agent_file = d.parents[1] / exp / f"{agent.get('name', 'agent')}.yaml"  # the run's resolved agent spec
    agent_file.parent.mkdir(parents=True, exist_ok=True)
    agent_file.write_text(yaml.safe_dump(agent, sort_keys=False))
    kwargs = {k: v for k, v in cfg["env"]["make_kwargs"].items() if k not in ("num_envs",)}
    out = []
    for k in sorted(set(int(x) for x in reg["regime"])):
        env_kwargs = {**kwargs, "schedule": {"cyclic": {"change_every": 10**15, "cycle": [k]}}}
        res = train(
            RunConfig(
                env=cfg["env"]["name"],
                agent=str(agent_file),
                seed=int(cfg["seed"]),
                steps=length,
                experiment=f"{exp}/regime_{k}",
                run_dir=str(d.parents[1]),
                env_kwargs=env_kwargs,
                n_envs=int(cfg.get("n_envs", 1)),
                wandb="disabled",
                progress=False,
                diagnostics_every=0,
            )
        )
        out.append(res.run_dir)
    return out


# -- CLI ------------------------------------------------------------------------
def register_cli(command: Any) -> None:
    """Add ``crl metrics`` to the CLI."""

    def add(p: Any) -> None:
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

    @command("metrics", "continual-learning metrics of run folders", add)
    def _metrics(a: Any) -> int:
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

        keys = [
            "average_performance",
            "mean_forgetting",
            "mean_forward_transfer",
            "plasticity_score",
            "forgetting",
            "forward_transfer",
            "source",
        ]
        t = Table("metric", *(Path(d).name for d in results))
        for k in keys:
            t.add_row(k, *(_fmt(r[k]) for r in results.values()))
        Console().print(t)
        return 0
