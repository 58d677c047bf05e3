"""A wandb workspace with the regime-aware panels of an experiment (``crl dashboard``).

:func:`dashboard_spec` reads the run folders of an experiment (``config.yaml``, the header
of ``metrics.csv``) and returns the workspace as plain data: the runset (the experiment's
training runs, grouped by their wandb group so each line is one agent with its seeds
aggregated) and the sections:

* **Return across regime changes**: ``charts/episodic_return`` against ``global_step``,
  with ``regime/index`` and the drift values (``regime/friction``...) under it, on the same
  x-axis, so the changes line up with the dips;
* **Evaluation on every regime**: ``eval/regime_<k>/return`` (when the runs evaluated);
* **Diagnostics** of each network (``policy``, ``value``, ``actor``, ``critic_1``...): one
  panel per metric with every layer, ``plasticity/<net>/<layer>/<metric>``;
* **Continual-learning scores**: the ``scores/*`` of the run summaries (bar charts per group);
* **Losses**: ``losses/*`` and ``time/sps``.

:func:`build_workspace` turns the spec into a saved workspace with the ``wandb-workspaces``
package (``pip install wandb-workspaces``) and returns its URL. It needs the user online:
logged in (``wandb login`` or ``WANDB_API_KEY``), not ``WANDB_MODE=offline``/``disabled``,
and the runs synced (``wandb sync``); otherwise :func:`check_online` refuses in one line.
``crl dashboard RUNS_DIR --spec FILE`` writes the spec as JSON without any network.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from crl.errors import ConfigError

__all__ = ["dashboard_spec", "check_online", "build_workspace", "write_spec", "summary_scores"]

#: Panel kinds of a spec: a line plot of ``y`` keys against ``x``, or a bar chart of summary ``metrics``.
PANEL_KINDS = ("line", "bar")


def summary_scores(run_dir: str | Path) -> dict[str, float]:
    """The continual-learning scores of a run folder as ``scores/<name>`` numbers (the wandb run summary).

    The numbers of :func:`crl.metrics.run_scores`; non-finite scores are left out, and a run whose scores
    cannot be computed (no ``regimes.csv``: not a drifting env) gives ``{}``. A reader's
    failure is one line on stderr and ``{}``: the summary mirrors the files, it must not fail a run.
    """
    from crl.metrics import run_scores

    try:
        values = dict(run_scores(run_dir))
    except ConfigError:
        return {}
    except Exception as e:
        print(f"crl: no scores in the wandb summary of {run_dir}: {type(e).__name__}: {e}", file=sys.stderr)
        return {}
    return {f"scores/{k}": float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _run_folders(runs_dir: Path) -> list[tuple[dict[str, Any], list[str]]]:
    """``(config, metrics.csv header)`` of each run folder under ``runs_dir``, skipping non-run folders."""
    import yaml

    out = []
    for cfg_path in sorted(runs_dir.rglob("config.yaml")):
        try:
            cfg = yaml.safe_load(cfg_path.read_text())
            with (cfg_path.parent / "metrics.csv").open(newline="") as f:
                header = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError, yaml.YAMLError, csv.Error):
            continue
        if isinstance(cfg, dict) and isinstance(cfg.get("env"), dict) and isinstance(cfg.get("agent"), dict):
            out.append((cfg, header))
    return out


def _line(title: str, y: list[str]) -> dict[str, Any]:
    return {"kind": "line", "title": title, "x": "global_step", "y": y}


def _sections(keys: list[str], scores: list[str]) -> list[dict[str, Any]]:
    """The workspace sections for the metric ``keys`` the runs logged and the summary ``scores``."""
    regime = ["regime/index", *(k for k in keys if k.startswith("regime/") and k not in _REGIME_BOOKKEEPING)]
    sections = [
        {
            "name": "Return across regime changes",
            "panels": [_line("Episodic return", ["charts/episodic_return"]), _line("Regime and drift values", regime)],
        }
    ]
    evals = sorted((k for k in keys if k.startswith("eval/regime_")), key=lambda k: int(k.split("_")[1].split("/")[0]))
    if evals:
        sections.append({"name": "Evaluation on every regime", "panels": [_line("Return on each regime", evals)]})
    by_net: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for k in keys:
        parts = k.split("/")
        if parts[0] == "plasticity" and len(parts) >= 3:
            by_net[parts[1]][parts[-1]].append(k)
    for net, metrics in by_net.items():
        panels = [_line(f"{net}: {metric}", ys) for metric, ys in metrics.items()]
        sections.append({"name": f"Diagnostics: {net}", "panels": panels})
    if scores:
        panels = [{"kind": "bar", "title": s.removeprefix("scores/"), "metrics": [s]} for s in scores]
        sections.append({"name": "Continual-learning scores", "panels": panels})
    losses = [k for k in keys if k.startswith("losses/")]
    if losses or "time/sps" in keys:
        panels = [_line(k.removeprefix("losses/"), [k]) for k in losses]
        if "time/sps" in keys:
            panels.append(_line("steps/s", ["time/sps"]))
        sections.append({"name": "Losses", "panels": panels})
    return sections


#: ``regime/*`` columns that are bookkeeping, not drift values.
_REGIME_BOOKKEEPING = ("regime/index", "regime/segment", "regime/boundary")


def dashboard_spec(runs_dir: str | Path, project: str | None = None, entity: str | None = None) -> dict[str, Any]:
    """The workspace of the experiment under ``runs_dir`` as plain data (see the module docstring).

    Args:
        runs_dir: an experiment folder (``runs/<experiment>``) or any folder of run folders.
        project: the wandb project (default: the runs' own, from their ``config.yaml``).
        entity: the wandb entity (default: the runs' own, or the user's default).

    Raises :class:`~crl.errors.ConfigError` when ``runs_dir`` holds no run folder.
    """
    root = Path(runs_dir)
    runs = _run_folders(root) if root.is_dir() else []
    if not runs:
        raise ConfigError(f"no run folders (config.yaml and metrics.csv) under {str(runs_dir)!r}")
    keys: list[str] = list(dict.fromkeys(k for _, header in runs for k in header if k != "global_step"))
    experiments = sorted({str(cfg.get("experiment", "")) for cfg, _ in runs})
    wandb_cfg = [cfg.get("wandb") or {} for cfg, _ in runs]
    project = project or next((w["project"] for w in wandb_cfg if w.get("project")), "crl")
    entity = entity or next((w["entity"] for w in wandb_cfg if w.get("entity")), None)
    scores = sorted({k for p in root.rglob("config.yaml") for k in summary_scores(p.parent)})
    return {
        "name": f"crl: {', '.join(experiments)}",
        "project": project,
        "entity": entity,
        "runset": {"experiment": experiments, "job_type": "train", "groupby": "wandb.group"},
        "sections": _sections(keys, scores),
    }


def write_spec(spec: dict[str, Any], path: str | Path) -> Path:
    """Write ``spec`` as JSON to ``path`` (no network); return the path."""
    out = Path(path)
    out.write_text(json.dumps(spec, indent=1) + "\n")
    return out


def check_online() -> None:
    """Raise a one-line :class:`~crl.errors.ConfigError` unless a workspace can be saved from here:
    wandb not offline or disabled, a login, and the ``wandb-workspaces`` package.
    """
    from crl.track import wandb_default_mode

    hint = "or write the panels with --spec FILE (no network)"
    mode = os.environ.get("WANDB_MODE")
    if mode in ("offline", "disabled", "dryrun"):
        raise ConfigError(f"crl dashboard needs wandb online, but WANDB_MODE={mode}; unset it, {hint}")
    if wandb_default_mode() != "online":
        raise ConfigError(f"crl dashboard needs a wandb login (wandb login, or WANDB_API_KEY), {hint}")
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        package = "crl dashboard needs the wandb-workspaces package (pip install wandb-workspaces)"
        raise ConfigError(f"{package}, {hint}") from None


def build_workspace(spec: dict[str, Any]) -> str:
    """Save ``spec`` (:func:`dashboard_spec`) as a wandb workspace; return its URL.

    Needs the user online (:func:`check_online`); a failure of wandb's API is one line.
    """
    check_online()
    import wandb
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    def panel(p: dict[str, Any]) -> Any:
        if p["kind"] == "bar":
            return wr.BarPlot(title=p["title"], metrics=p["metrics"])
        return wr.LinePlot(title=p["title"], x=p["x"], y=p["y"])

    experiments = " or ".join(f"Config('experiment') = '{e}'" for e in spec["runset"]["experiment"])
    try:
        entity = spec["entity"] or wandb.Api().default_entity
    except Exception as e:  # no network or a bad key
        raise ConfigError(f"wandb could not be reached: {type(e).__name__}: {e}") from None
    sections = [ws.Section(name=x["name"], panels=[*map(panel, x["panels"])], is_open=True) for x in spec["sections"]]
    workspace = ws.Workspace(
        name=spec["name"],
        entity=entity,
        project=spec["project"],
        sections=sections,
        runset_settings=ws.RunsetSettings(
            filters=f"({experiments}) and JobType = 'train'",
            groupby=[expr.Config(spec["runset"]["groupby"])],
        ),
    )
    try:
        workspace.save()
    except Exception as e:  # network, permissions, an unsynced project: one line
        raise ConfigError(f"wandb did not save the workspace: {type(e).__name__}: {e}") from None
    return str(getattr(workspace, "url", "") or f"{entity}/{spec['project']}")
