"""The report page: figures saved as PNG and SVG, sections of one self-contained HTML file.

:func:`write` draws every figure of :mod:`crl.report_figures`, saves it as ``<name>.png`` and
``<name>.svg``, embeds the PNG in ``index.html`` (base64, so the page needs no network) and
writes the tables. Each section is a ``<section id="...">`` (see :data:`SECTIONS`) whose
figure caption names the number of seeds per agent. The page has no script.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import crl.report_figures as rf
from crl.metrics import REFERENCE_NOTE, SCORES
from crl.report import STATUS_MARK, Run, per_regime_table, segment_scores

__all__ = ["SECTIONS", "ReportInput", "write", "table_html"]

#: Section ids of the page, in order (``diagnostics-<net>`` is one section per network).
SECTIONS = (
    "summary",
    "per-regime-table",
    "returns",
    "per-regime-bars",
    "aggregates",
    "profiles",
    "poi",
    "diagnostics",
    "runs",
    "configs",
)

MIN_POI_SEEDS = 3


@dataclass
class ReportInput:
    """What the page shows: the runs, their folder, the comparison tables and the binning."""

    runs: list[Run]
    runs_dir: Path
    tables: dict[str, pd.DataFrame]
    bin_steps: int
    late_fraction: float
    reps: int


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1250px}
table{border-collapse:collapse;margin:1em 0;font-size:13px} th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#eee} img{max-width:100%;border:1px solid #ddd} figcaption{font-size:13px;color:#333;margin:4px 0 18px}
.RUNNING{color:#b60} .FAILED{color:#c00;font-weight:bold} .INTERRUPTED{color:#a0a} .note{color:#555;font-size:13px}
pre{background:#f6f6f6;padding:6px;font-size:11px;overflow:auto} nav a{margin-right:1em}"""


def table_html(df: pd.DataFrame, cols: list[str] | None = None) -> str:
    """An HTML table of ``df``'s columns ``cols`` (all by default), escaped; status cells get their class."""
    cols = list(df.columns) if cols is None else [c for c in cols if c in df.columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = str(row[c])
            cls = f' class="{v}"' if c == "status" and v in STATUS_MARK.values() else ""
            cells.append(f"<td{cls}>{html.escape(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _seeds_text(counts: dict[str, int]) -> str:
    return "seeds per agent: " + ", ".join(f"{a} n={n}" for a, n in sorted(counts.items()))


def _save(fig: Any, out: Path, name: str) -> dict[str, Path]:
    import matplotlib.pyplot as plt

    paths = {}
    for ext in ("png", "svg"):
        paths[ext] = out / f"{name}.{ext}"
        fig.savefig(paths[ext], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


class _Page:
    """Collects the sections and the saved figures of one report."""

    def __init__(self, out: Path) -> None:
        self.out, self.parts, self.figures = out, [], {}

    def section(self, sid: str, title: str, body: str) -> None:
        self.parts.append(f'<section id="{sid}"><h2>{html.escape(title)}</h2>\n{body}</section>')

    def figure(self, name: str, fig: Any, caption: str) -> str:
        if fig is None:
            return f'<p class="note">{html.escape(caption)}: nothing to draw.</p>'
        self.figures[name] = _save(fig, self.out, name)
        b64 = base64.b64encode(self.figures[name]["png"].read_bytes()).decode()
        return (
            f'<figure><img alt="{name}" src="data:image/png;base64,{b64}">'
            f'<figcaption>{html.escape(caption)} (<a href="{name}.svg">SVG</a>)</figcaption></figure>'
        )


def _notes(lines: list[str]) -> str:
    return "".join(f'<p class="note">{html.escape(x)}</p>' for x in lines)


def _score_sections(page: _Page, p: ReportInput, table: pd.DataFrame, col: dict, seeds: str) -> None:
    """Per-regime bars, rliable aggregates, profiles and probability of improvement."""
    page.section(
        "per-regime-bars",
        "Per-regime bars",
        page.figure("per_regime", rf.fig_regime_bars(table, col, p.reps), f"Late-segment return per regime; {seeds}"),
    )
    scores, tasks, notes = rf.score_matrices(table) if len(table) else ({}, [], [])
    n = {a: s.shape[0] for a, s in scores.items()}
    one = any(v < 2 for v in n.values())
    where = f"{len(tasks)} tasks (env, regime segment), min-max normalised per task over all runs shown"
    ci = "intervals n/a (1 seed)" if one else "95% stratified-bootstrap CIs (rliable)"
    agg = page.figure(
        "aggregates", rf.fig_aggregates(scores, col, p.reps), f"Aggregates over {where}; {ci}; {_seeds_text(n)}"
    )
    page.section("aggregates", "Aggregate metrics: IQM, mean, median, optimality gap", agg + _notes(notes))
    prof = page.figure(
        "profiles", rf.fig_profiles(scores, col, p.reps), f"Performance profiles over {where}; {ci}; {_seeds_text(n)}"
    )
    page.section("profiles", "Performance profiles", prof)
    few = {a: k for a, k in n.items() if k < MIN_POI_SEEDS}
    if few or len(n) < 2:
        body = _notes(
            [
                f"Probability of improvement needs >= {MIN_POI_SEEDS} seeds for every agent and two agents; "
                f"{_seeds_text(n)}."
            ]
        )
    else:
        body = page.figure("poi", rf.fig_poi(scores, p.reps), f"P(X > Y) over {where}; 95% CIs; {_seeds_text(n)}")
    if "poi" in p.tables and len(p.tables["poi"]):
        body += table_html(p.tables["poi"], ["env", "X", "Y", "P(X > Y)"])
    page.section("poi", "Probability of improvement", body)


def _diagnostics_sections(page: _Page, p: ReportInput, table: pd.DataFrame, col: dict, seeds: str) -> None:
    nets = rf.diagnostic_networks(p.runs)
    if not nets:
        page.section("diagnostics", "Diagnostics", _notes(["no plasticity/* columns logged"]))
        return
    links = " ".join(f'<a href="#diagnostics-{n}">{html.escape(n)}</a>' for n in nets)
    page.section("diagnostics", "Diagnostics by network", f"<nav>{links}</nav>")
    for net in nets:
        fig = rf.fig_diagnostics(p.runs, table, col, net, p.bin_steps)
        cap = (
            f"{net}: every plasticity/{net}/<layer>/<metric>, IQM over seeds per bin of {p.bin_steps:,} steps; "
            f"dashed: regime changes; {seeds}"
        )
        page.section(f"diagnostics-{net}", f"Diagnostics: {net} network", page.figure(f"diagnostics_{net}", fig, cap))


def write(p: ReportInput, out: Path) -> tuple[Path, dict[str, dict[str, Path]]]:
    """Draw the figures into ``out``, write ``out/index.html`` and return it with the figure paths."""
    import matplotlib

    matplotlib.use("Agg")
    page = _Page(out)
    table, notes = segment_scores(p.runs, p.late_fraction)
    col = rf.colours(sorted({r.agent for r in p.runs}))
    counts = rf.seed_counts(p.runs)
    seeds = "seeds: " + ", ".join(f"{e}/{a} n={n}" for (e, a), n in sorted(counts.items()))
    s = p.tables["summary"]
    cols = ["env", "agent", "reference", "seeds", "status", *SCORES, "short_segments"]
    summary = table_html(s, cols) + _notes([REFERENCE_NOTE, *notes])
    page.section("summary", "Per agent (IQM [95% CI] over seeds)", summary)
    page.section(
        "per-regime-table",
        "Per regime: late-segment return (IQM [95% CI] over seeds)",
        table_html(per_regime_table(table, reps=p.reps)) if len(table) else _notes(["no segment scores"]),
    )
    cap = f"Return across regime changes (dashed: regime changes; lower panel: drift value); {seeds}"
    page.section(
        "returns",
        "Return across regime changes",
        page.figure("returns", rf.fig_returns(p.runs, table, col, p.bin_steps, p.reps), cap),
    )
    _score_sections(page, p, table, col, seeds)
    _diagnostics_sections(page, p, table, col, seeds)
    runs_cols = ["run", "env", "agent", "reference", "seed", "status", "step", "error", "command"]
    page.section("runs", "Runs", table_html(p.tables["runs"], runs_cols))
    cfgs = "".join(_config_html(r) for r in p.runs)
    page.section("configs", "Configs", cfgs)
    index = out / "index.html"
    index.write_text(_html(p, "\n".join(page.parts)))
    return index, page.figures


def _config_html(r: Run) -> str:
    cfg = html.escape(yaml.safe_dump(r.config, sort_keys=False))
    return f"<details><summary>{html.escape(r.name)} ({r.state})</summary><pre>{cfg}</pre></details>"


def _html(p: ReportInput, body: str) -> str:
    nav = " ".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    intro = (
        f"{len(p.runs)} runs from <code>{html.escape(str(p.runs_dir))}</code>. Statistics: interquartile mean (IQM) "
        "over seeds with 95&nbsp;% stratified-bootstrap confidence intervals (rliable); with one seed the interval is "
        "n/a. Scores come from <code>crl.metrics</code> (the same numbers as <code>crl metrics</code> and "
        f"<code>crl compare</code>); segments too short to judge are left out. Curves: bins of {p.bin_steps:,} steps."
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>crl report</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>crl report</h1>\n<nav>{nav}</nav>\n<p>{intro}</p>\n"
        f"{body}\n</body></html>\n"
    )
