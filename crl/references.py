"""From-scratch reference runs for forward transfer (``crl metrics --make-references``).

:mod:`crl.metrics` only reads run folders; launching reference runs trains agents, so it
lives here, one layer up (``references -> run``, ``references -> metrics``).
"""

from __future__ import annotations

from pathlib import Path

from crl.metrics import load_run

__all__ = ["make_references"]


def make_references(run_dir: str | Path, steps: int | None = None, experiment: str | None = None) -> list[Path]:
    """Launch (or find finished) from-scratch reference runs of a run: one per regime id it
    visited, same env (drift seed included), agent and seed, with the schedule pinned to that
    regime (``cyclic`` with a one-regime cycle). ``steps`` defaults to the run's longest segment.
    Returns the reference run folders (``<runs>/<experiment>-ref/regime_<k>/<run>``).
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
                experiment=f"regime_{k}",
                run_dir=str(d.parents[1] / exp),
                env_kwargs=env_kwargs,
                n_envs=int(cfg.get("n_envs", 1)),
                wandb="disabled",
                progress=False,
                diagnostics_every=0,
            )
        )
        out.append(res.run_dir)
    return out
