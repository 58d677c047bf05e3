"""Studies: every table and figure of the Results page, regenerated from committed evidence.

A **study** is a folder ``docs/results/<study>/`` holding its evidence (run folders cut by
``crl results cut`` (:mod:`crl.evidence`), or a ``crl probe`` result JSON) and a ``study.yaml``::

    title: Forgetting on revisits, cyclic level-shift CartPole
    commands: |                 # the exact commands that made the evidence
      crl sweep experiments/forgetting-cartpole.yaml --workers 2 --wandb disabled
      crl results cut runs/forgetting-cartpole docs/results/forgetting/runs
    seeds: 3                    # text or number: what the reader needs
    steps: 32,768 per run
    cost: ~0.65 CPU-hours for the 36 runs (2 cores, under load)
    late_fraction: 0.25         # THE late window of the study: every table and figure uses it
    runs: runs                  # cut run folders (relative to the study folder) ...
    references: [references/regime_0/run, references/regime_1/run]   # for forward transfer
    probe: results.json         # ... or a crl probe result
    order: [ppo, ppo-ewc]       # optional: row order (agents or probe methods; others follow, sorted)
    labels: {bp: bp (plain SGD)}  # optional: row labels
    reps: 2000                  # optional: bootstrap resamples (crl compare's default)
    tables:
      compare: {type: compare}
    figures:
      returns: {type: returns, bin_steps: 2048}

Table types (:data:`TABLES`) on runs: ``compare`` (:func:`crl.metrics.summary_table`, option
``scores``), ``paired`` (:func:`crl.metrics.paired_table`; ``base``, ``scores``), ``floor``
(:func:`crl.metrics.floor_table`; ``floor``), ``per-regime`` (late return per segment, IQM over
seeds with its CI, :func:`crl.report.segment_scores`; optional ``floor`` adds the seeds below
it, ``ci: false`` drops the intervals), ``per-seed`` (each run: every regime's performance at the
end, :func:`crl.metrics.run_metrics`, and its ``scores``); on a probe: ``probe-bins`` (the result's IQM and CI per
bin; ``bins``: 1-based bin numbers, ``ratio: true`` adds the late / early ratio) and
``probe-paired`` (each method minus ``base`` seed by seed, on the mean error of the late window
of the bins, :func:`crl.stats.paired_difference`, and the share of seeds with a lower error,
:func:`crl.stats.share_estimate`) and ``probe-rise`` (each method's late window minus its early
window of the same width, seed by seed, and the share of seeds whose error rose). Every table
takes ``digits`` (significant digits, default 3);
every table or figure on runs takes ``envs`` (only the runs on these envs).
Figure types (:data:`FIGURES`): ``returns`` (:func:`crl.report_figures.fig_returns`;
``bin_steps``), ``per-regime`` (:func:`crl.report_figures.fig_regime_bars`), ``columns`` (any
logged columns kept by ``crl results cut --keep``, :func:`crl.report_figures.fig_columns`;
``columns``, ``bin_steps``, ``log``) and ``probe``
(:func:`crl.probe.write_figure`, the late window shaded). Each figure is
``<study>/<name>.png``. Every study also has an ``about`` block: seeds, steps, cost and the
commands as a ``bash`` block.

:func:`build` (``crl results build``, ``make results``) writes each figure file and puts each
block into ``docs/results.md`` between its markers, leaving the prose outside them alone::

    <!-- crl-results forgetting/compare -->
    (generated)
    <!-- /crl-results -->

``build(check=True)`` (``--check``) draws the figures in a temporary folder and fails, naming
them, where a block differs from the page, a figure file is missing, or a table or figure has no
marker (or a marker no study makes).

Example:
    >>> print(markdown_table(["method", "bin 1"], [["bp", "0.43"]]))
    | method | bin 1 |
    |---|---:|
    | bp | 0.43 |
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crl.errors import ConfigError, UnknownNameError

__all__ = [
    "TABLES",
    "FIGURES",
    "MARKER",
    "Study",
    "load_study",
    "find_studies",
    "markdown_table",
    "study_blocks",
    "draw_figures",
    "replace_blocks",
    "build",
]

#: A generated block of the Results page: ``<!-- crl-results ID -->`` ... ``<!-- /crl-results -->``.
MARKER = re.compile(r"<!-- crl-results (\S+) -->\n(.*?)<!-- /crl-results -->", re.DOTALL)
_KEYS = {"title", "commands", "seeds", "steps", "cost", "late_fraction", "tables", "figures"}
_OPTIONAL = {"runs", "references", "probe", "order", "labels", "reps"}


@dataclass
class Study:
    """One study folder, read: its ``study.yaml`` and where its evidence is."""

    name: str
    path: Path
    spec: dict[str, Any]
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def late_fraction(self) -> float:
        """The study's late window, as a share of a segment (runs) or of the bins (probe)."""
        return float(self.spec["late_fraction"])

    @property
    def reps(self) -> int:
        """Bootstrap resamples of the intervals."""
        return int(self.spec.get("reps", 2000))

    def where(self, *parts: str) -> str:
        """``<study.yaml>: part.part`` for an error message."""
        return f"{self.path / 'study.yaml'}: {'.'.join(parts)}" if parts else str(self.path / "study.yaml")


def load_study(path: str | Path) -> Study:
    """Read and check ``path/study.yaml``; a bad one is a one-line :class:`~crl.errors.ConfigError`."""
    from crl.config import load_yaml

    path = Path(path)
    spec = load_yaml(path / "study.yaml")
    where = path / "study.yaml"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: not a mapping of study fields ({', '.join(sorted(_KEYS))})")
    missing, unknown = _KEYS - set(spec), set(spec) - _KEYS - _OPTIONAL
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(sorted(missing))}")
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; valid: {_valid_keys()}")
    if ("runs" in spec) == ("probe" in spec):
        raise ConfigError(f"{where}: give its evidence as either runs: FOLDER or probe: FILE.json")
    lf = spec["late_fraction"]
    if isinstance(lf, bool) or not isinstance(lf, (int, float)) or not 0 < lf <= 1:
        raise ConfigError(f"{where}: late_fraction must be a number in (0, 1], got {lf!r}")
    study = Study(path.name, path, spec)
    study.tables = _artifacts(study, "tables", TABLES)
    study.figures = _artifacts(study, "figures", FIGURES)
    return study


def _valid_keys() -> str:
    return ", ".join(sorted(_KEYS | _OPTIONAL))


def _artifacts(study: Study, kind: str, types: dict[str, Any]) -> dict[str, dict[str, Any]]:
    items = study.spec[kind] or {}
    if not isinstance(items, dict):
        raise ConfigError(f"{study.where(kind)}: a mapping of name: {{type: ..., options}}")
    evidence = "runs" if "runs" in study.spec else "probe"
    out = {}
    for name, opts in items.items():
        if not isinstance(opts, dict) or "type" not in opts:
            raise ConfigError(f"{study.where(kind, str(name))}: needs type: one of {', '.join(types)}")
        if opts["type"] not in types:
            raise UnknownNameError(f"{kind[:-1]} type in {study.where(kind, str(name))}:", opts["type"], list(types))
        if types[opts["type"]][0] != evidence:
            raise ConfigError(f"{study.where(kind, str(name))}: type {opts['type']} reads {types[opts['type']][0]}")
        if name == "about":
            raise ConfigError(f"{study.where(kind, 'about')}: 'about' is the study's own block; rename it")
        out[str(name)] = opts
    return out


def find_studies(docs_dir: str | Path) -> list[Study]:
    """Every study below ``docs_dir/results`` (a folder with ``study.yaml``), by name."""
    root = Path(docs_dir) / "results"
    return [load_study(p.parent) for p in sorted(root.glob("*/study.yaml"))]


# ---------------------------------------------------------------- formatting


def markdown_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A Markdown table: the first ``left`` columns (names) left-aligned, the others (values) right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * left + "---:|" * (len(header) - left)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _num(x: float, digits: int) -> str:
    return "-" if not math.isfinite(x) else f"{x:.{digits}g}"


def _ci(point: float, lo: float, hi: float, digits: int) -> str:
    """``point [lo, hi]``; ``point`` alone without an interval; ``-`` without a value."""
    if not math.isfinite(point):
        return "-"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return _num(point, digits)
    return f"{_num(point, digits)} [{_num(lo, digits)}, {_num(hi, digits)}]"


def _share(hits: int, n: int, lo: float, hi: float) -> str:
    return "-" if n == 0 else f"{hits}/{n} [{lo:.2f}, {hi:.2f}]"


def _ordered(study: Study, names: list[str]) -> list[str]:
    order = [str(x) for x in study.spec.get("order") or []]
    return [n for n in order if n in names] + sorted(n for n in names if n not in order)


def _label(study: Study, name: str) -> str:
    return str((study.spec.get("labels") or {}).get(name, name))


def _score_title(score: str) -> str:
    return score.replace("_", " ")


def _about(study: Study) -> str:
    s = study.spec
    line = f"Seeds: {s['seeds']}; steps: {s['steps']}; cost: {s['cost']}; late window: last {study.late_fraction:.0%}"
    if "runs" in s:
        line += " of each segment."
    else:
        line += " of the bins."
    return f"```bash\n{str(s['commands']).strip()}\n```\n\n{line}"


# ---------------------------------------------------------------- tables on runs


def _runs(study: Study) -> list[Any]:
    from crl.metrics import find_runs

    runs, _ = find_runs(study.path / str(study.spec["runs"]))
    if not runs:
        raise ConfigError(f"{study.where('runs')}: no run folders in {study.path / str(study.spec['runs'])}")
    return runs


def _on_envs(runs: Any, opts: dict[str, Any]) -> Any:
    """The runs on the envs ``opts["envs"]`` names (all without it); a probe result as it is."""
    if "envs" not in opts or not isinstance(runs, list):
        return runs
    envs = {str(e) for e in opts["envs"]}
    return [r for r in runs if r.env in envs]


def _refs(study: Study) -> list[Any] | None:
    """The study's reference runs, read once (every run's forward transfer reads them)."""
    from crl.metrics import read_run

    refs = [read_run(study.path / str(r)) for r in study.spec.get("references") or []]
    return refs or None


def _scores(study: Study, opts: dict[str, Any], default: tuple[str, ...]) -> list[str]:
    from crl.metrics import SCORES

    scores = [str(s) for s in opts.get("scores", default)]
    for s in scores:
        if s not in SCORES:
            raise UnknownNameError("score", s, list(SCORES))
    return scores


def _compare(study: Study, runs: list[Any], opts: dict[str, Any]) -> str:
    from crl.metrics import SCORES, summary_table

    scores, d = _scores(study, opts, SCORES), int(opts.get("digits", 3))
    s = summary_table(runs, study.reps, study.late_fraction, reference_dirs=_refs(study), scores=scores)
    rows = []
    for env in sorted(s["env"].unique()):
        e = s[s["env"] == env].set_index("agent")
        for agent in _ordered(study, list(e.index)):
            r = e.loc[agent]
            cells = [_ci(r[f"{k}_iqm"], r[f"{k}_lo"], r[f"{k}_hi"], d) for k in scores]
            rows.append([env, _label(study, agent), r["reference"], str(r["seeds"]), *cells])
    return markdown_table(["env", "agent", "reference", "seeds", *map(_score_title, scores)], rows, left=3)


def _paired(study: Study, runs: list[Any], opts: dict[str, Any]) -> str:
    from crl.metrics import paired_table

    base, d = str(_required(study, opts, "base")), int(opts.get("digits", 3))
    scores = _scores(study, opts, ("average_performance",))
    p = paired_table(runs, base, study.reps, study.late_fraction)
    header = ["env", "agent"]
    for k in scores:
        header += [f"{_score_title(k)}: agent - {base}", "seeds where higher"]
    rows = []
    for env in sorted(p["env"].unique()):
        e = p[p["env"] == env]
        for agent in _ordered(study, list(e["agent"].unique())):
            cells = [env, _label(study, agent)]
            for k in scores:
                r = e[(e["agent"] == agent) & (e["score"] == k)].iloc[0]
                cells += [
                    _ci(r["mean"], r["lo"], r["hi"], d),
                    _share(int(r["won"]), int(r["n"]), r["won_lo"], r["won_hi"]),
                ]
            rows.append(cells)
    return markdown_table(header, rows, left=2)


def _required(study: Study, opts: dict[str, Any], key: str) -> Any:
    if key not in opts:
        raise ConfigError(f"{study.where()}: a {opts['type']} table needs {key}:")
    return opts[key]


def _segment_header(t: Any) -> tuple[list[tuple[int, int]], list[str]]:
    segs = sorted({(int(s), int(r)) for s, r in zip(t["segment"], t["regime"], strict=True)})
    return segs, [f"segment {s} (regime {r})" for s, r in segs]


def _floor(study: Study, runs: list[Any], opts: dict[str, Any]) -> str:
    from crl.metrics import floor_table

    f = floor_table(runs, float(_required(study, opts, "floor")), study.late_fraction)
    segs, header = _segment_header(f)
    rows = []
    for env in sorted(f["env"].unique()):
        e = f[f["env"] == env]
        for agent in _ordered(study, list(e["agent"].unique())):
            a = e[e["agent"] == agent].set_index("segment")
            cells = [
                _share(int(a.loc[s, "hits"]), int(a.loc[s, "n"]), a.loc[s, "lo"], a.loc[s, "hi"])
                if s in a.index
                else "-"
                for s, _ in segs
            ]
            rows.append([env, _label(study, agent), *cells])
    return markdown_table(["env", "agent", *header], rows, left=2)


def _per_regime(study: Study, runs: list[Any], opts: dict[str, Any]) -> str:
    from crl.report import segment_scores
    from crl.stats import iqm_estimate

    t, _ = segment_scores(runs, study.late_fraction)
    segs, header = _segment_header(t)
    floor, d, ci = opts.get("floor"), int(opts.get("digits", 3)), bool(opts.get("ci", True))
    rows = []
    for env in sorted(t["env"].unique()):
        e = t[t["env"] == env]
        for agent in _ordered(study, list(e["agent"].unique())):
            cells = []
            for s, _ in segs:
                v = e[(e["agent"] == agent) & (e["segment"] == s)]["score"].to_numpy(float)
                est = iqm_estimate(v, reps=study.reps)
                cell = _ci(est.point, est.low, est.high, d) if ci else _num(est.point, d)
                if floor is not None and math.isfinite(est.point):
                    cell += f" ({int(np.sum(v[np.isfinite(v)] < float(floor)))} below {floor:g})"
                cells.append(cell)
            rows.append([env, _label(study, agent), *cells])
    return markdown_table(["env", "agent", *header], rows, left=2)


def _per_seed(study: Study, runs: list[Any], opts: dict[str, Any]) -> str:
    from crl.metrics import run_metrics

    scores, d = _scores(study, opts, ("average_performance",)), int(opts.get("digits", 3))
    per = {
        id(r): run_metrics(r, _refs(study) if "forward_transfer" in scores else None, study.late_fraction) for r in runs
    }
    regimes = sorted({k for m in per.values() for k in m["performance"]})
    rows = []
    for env in sorted({r.env for r in runs}):
        for agent in _ordered(study, sorted({r.agent for r in runs if r.env == env})):
            for r in (r for r in runs if r.env == env and r.agent == agent):
                m = per[id(r)]
                cells = [_num(float(m["performance"].get(k, math.nan)), d) for k in regimes]
                rows.append([env, _label(study, agent), str(r.seed), *cells, *(_num(float(m[k]), d) for k in scores)])
    header = ["env", "agent", "seed", *(f"regime {k} at the end" for k in regimes), *map(_score_title, scores)]
    return markdown_table(header, rows, left=2)


# ---------------------------------------------------------------- tables on a probe


def _probe(study: Study) -> dict[str, Any]:
    import json

    path = study.path / str(study.spec["probe"])
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{study.where('probe')}: cannot read {path} as a crl probe result ({e})") from e


def _probe_bins(study: Study, res: dict[str, Any], opts: dict[str, Any]) -> str:
    from crl.probe import early_late

    methods = _ordered(study, list(res["methods"]))
    n_bins = len(res["methods"][methods[0]]["bins"])
    picks = [
        int(b) for b in opts.get("bins", sorted({1, n_bins // 4 + 1, n_bins // 2 + 1, 3 * n_bins // 4 + 1, n_bins}))
    ]
    if any(not 1 <= b <= n_bins for b in picks):
        raise ConfigError(f"{study.where()}: probe-bins bins must be in 1..{n_bins}, got {picks}")
    d, ratio = int(opts.get("digits", 3)), bool(opts.get("ratio", False))
    frac = study.late_fraction
    header = ["method", *(f"bin {b}" for b in picks)]
    header += [f"last {frac:.0%} / first {frac:.0%} of bins"] if ratio else []
    rows = []
    for m in methods:
        bins = res["methods"][m]["bins"]
        cells = [_ci(bins[b - 1]["iqm"], bins[b - 1]["lo"], bins[b - 1]["hi"], d) for b in picks]
        if ratio:
            early, late = early_late(res, m, frac)
            cells.append(f"{late / early:.2f}" if early > 0 else "-")
        rows.append([_label(study, m), *cells])
    return markdown_table(header, rows)


def _probe_paired(study: Study, res: dict[str, Any], opts: dict[str, Any]) -> str:
    from crl.stats import paired_difference, share_estimate

    base, d = str(opts.get("base", "bp")), int(opts.get("digits", 3))
    if base not in res["methods"]:
        raise UnknownNameError("probe-paired base method", base, list(res["methods"]))
    late = {m: _late_mean(v["seeds"], study.late_fraction) for m, v in res["methods"].items()}
    k = max(1, round(len(res["methods"][base]["bins"]) * study.late_fraction))
    rows = []
    for m in _ordered(study, [m for m in res["methods"] if m != base]):
        est = paired_difference(late[m], late[base], reps=study.reps)
        ok = np.isfinite(late[m]) & np.isfinite(late[base])
        hits = int(np.sum(late[m][ok] < late[base][ok]))
        lower = share_estimate(hits, int(ok.sum()))
        cells = [_ci(est.point, est.low, est.high, d) + f" (n={est.n})", _share(hits, lower.n, lower.low, lower.high)]
        rows.append([_label(study, m), *cells])
    what = f"mean error over the last {k} bins ({study.late_fraction:.0%})"
    return markdown_table(["method", f"{what}: method - {base}", f"seeds with a lower error than {base}"], rows)


def _probe_rise(study: Study, res: dict[str, Any], opts: dict[str, Any]) -> str:
    """Per method, seed by seed: the mean error of the last ``late_fraction`` of the bins minus that of
    the first as many (a rise is loss of plasticity), with a bootstrap CI and the seeds where it rose.
    """
    from crl.stats import paired_difference, share_estimate

    d, frac = int(opts.get("digits", 3)), study.late_fraction
    rows = []
    for m in _ordered(study, list(res["methods"])):
        per = np.asarray(res["methods"][m]["seeds"], dtype=float)
        late, early = _late_mean(per.tolist(), frac), _late_mean(per[:, ::-1].tolist(), frac)
        est = paired_difference(late, early, reps=study.reps)
        ok = np.isfinite(late) & np.isfinite(early)
        hits = int(np.sum(late[ok] > early[ok]))
        rose = share_estimate(hits, int(ok.sum()))
        cells = [_ci(est.point, est.low, est.high, d) + f" (n={est.n})", _share(hits, rose.n, rose.low, rose.high)]
        rows.append([_label(study, m), *cells])
    k = max(1, round(len(res["methods"][next(iter(res["methods"]))]["bins"]) * frac))
    return markdown_table(["method", f"mean error: last {k} bins - first {k} bins", "seeds whose error rose"], rows)


def _late_mean(seeds: list[list[float]], frac: float) -> np.ndarray:
    """Per seed: the mean of the last ``frac`` of the bins (at least one bin), as in :func:`crl.probe.early_late`."""
    per = np.asarray(seeds, dtype=float)
    k = max(1, round(per.shape[1] * frac))
    return per[:, -k:].mean(axis=1)


#: Table types: what evidence each reads, and its function.
TABLES: dict[str, tuple[str, Any]] = {
    "compare": ("runs", _compare),
    "paired": ("runs", _paired),
    "floor": ("runs", _floor),
    "per-regime": ("runs", _per_regime),
    "per-seed": ("runs", _per_seed),
    "probe-bins": ("probe", _probe_bins),
    "probe-paired": ("probe", _probe_paired),
    "probe-rise": ("probe", _probe_rise),
}


def study_blocks(study: Study) -> dict[str, str]:
    """Every generated block of a study by its id (``<study>/about``, ``<study>/<table>``), without figures."""
    evidence = _runs(study) if "runs" in study.spec else _probe(study)
    blocks = {f"{study.name}/about": _about(study)}
    for name, opts in study.tables.items():
        blocks[f"{study.name}/{name}"] = TABLES[opts["type"]][1](study, _on_envs(evidence, opts), opts)
    return blocks


# ---------------------------------------------------------------- figures


def _fig_returns(study: Study, runs: list[Any], opts: dict[str, Any]) -> Any:
    import crl.report_figures as rf
    from crl.report import default_bin_steps, segment_scores

    table, _ = segment_scores(runs, study.late_fraction)
    col = rf.colours(sorted({r.agent for r in runs}))
    bin_steps = int(opts.get("bin_steps") or default_bin_steps(runs))
    return rf.fig_returns(runs, table, col, bin_steps, min(study.reps, 1000))


def _fig_per_regime(study: Study, runs: list[Any], opts: dict[str, Any]) -> Any:
    import crl.report_figures as rf
    from crl.report import segment_scores

    table, _ = segment_scores(runs, study.late_fraction)
    fig = rf.fig_regime_bars(table, rf.colours(sorted({r.agent for r in runs})), min(study.reps, 1000))
    for ax in fig.axes if fig is not None else []:
        ax.set_ylabel(f"return, last {study.late_fraction:.0%} of the segment")
    return fig


def _fig_columns(study: Study, runs: list[Any], opts: dict[str, Any]) -> Any:
    import crl.report_figures as rf
    from crl.report import default_bin_steps, segment_scores

    columns = [str(c) for c in _required(study, opts, "columns")]
    table, _ = segment_scores(runs, study.late_fraction)
    col = rf.colours(sorted({r.agent for r in runs}))
    bin_steps = int(opts.get("bin_steps") or default_bin_steps(runs))
    return rf.fig_columns(runs, table, col, columns, bin_steps, bool(opts.get("log", False)))


def _fig_probe(study: Study, res: dict[str, Any], opts: dict[str, Any]) -> Any:
    from crl.probe import probe_figure

    return probe_figure(res, late_fraction=study.late_fraction)


#: Figure types: what evidence each reads, and its function (a matplotlib figure).
FIGURES: dict[str, tuple[str, Any]] = {
    "returns": ("runs", _fig_returns),
    "per-regime": ("runs", _fig_per_regime),
    "columns": ("runs", _fig_columns),
    "probe": ("probe", _fig_probe),
}


def draw_figures(study: Study, out: Path) -> dict[str, Path]:
    """Draw every figure of ``study`` as ``out/<name>.png``; return the files by block id."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not study.figures:
        return {}
    evidence = _runs(study) if "runs" in study.spec else _probe(study)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, opts in study.figures.items():
        fig = FIGURES[opts["type"]][1](study, _on_envs(evidence, opts), opts)
        if fig is None:
            raise ConfigError(f"{study.where('figures', name)}: nothing to draw from the evidence")
        paths[f"{study.name}/{name}"] = out / f"{name}.png"
        fig.savefig(paths[f"{study.name}/{name}"], dpi=100, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
    return paths


def _figure_block(study: Study, name: str, page: Path) -> str:
    target = os.path.relpath(study.path / f"{name}.png", page.parent)
    alt = str(study.figures[name].get("alt", f"{study.spec['title']}: {name}"))
    return f"![{alt}]({Path(target).as_posix()})"


# ---------------------------------------------------------------- the page


def replace_blocks(text: str, blocks: dict[str, str]) -> tuple[str, list[str]]:
    r"""``text`` with each marked block's content replaced by ``blocks[id]``; also the ids of markers
    that no block has (left as they are).

    Example:
        >>> page = "intro\n<!-- crl-results s/t -->\nold\n<!-- /crl-results -->\nmore"
        >>> replace_blocks(page, {"s/t": "| new |"})
        ('intro\n<!-- crl-results s/t -->\n| new |\n<!-- /crl-results -->\nmore', [])
    """
    unknown: list[str] = []

    def sub(m: re.Match) -> str:
        if m.group(1) not in blocks:
            unknown.append(m.group(1))
            return m.group(0)
        return f"<!-- crl-results {m.group(1)} -->\n{blocks[m.group(1)].rstrip()}\n<!-- /crl-results -->"

    return MARKER.sub(sub, text), unknown


def _page_blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in MARKER.finditer(text)}


def build(docs_dir: str | Path = "docs", check: bool = False, log: Any = None) -> int:
    """Regenerate every study's figures and the blocks of ``docs_dir/results.md``; return the exit status.

    With ``check``, the figures are drawn in a temporary folder and nothing is written: the
    status is 1 and each problem is named (on ``log``, stderr by default) when a block differs
    from the page, a figure file is missing, or a table or figure has no marker.
    """
    log = log or (lambda s: print(s, file=sys.stderr))
    page = Path(docs_dir) / "results.md"
    if not page.is_file():
        raise ConfigError(f"{page}: no such file (give the docs folder holding results.md)")
    text = page.read_text()
    studies = find_studies(docs_dir)
    blocks: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="crl-results-")) if check else None
    try:
        for study in studies:
            blocks |= study_blocks(study)
            drawn = draw_figures(study, tmp / study.name if tmp else study.path)
            blocks |= {fid: _figure_block(study, fid.split("/", 1)[1], page) for fid in drawn}
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return _finish(page, text, blocks, studies, check, log)


def _finish(page: Path, text: str, blocks: dict[str, str], studies: list[Study], check: bool, log: Any) -> int:
    new, unknown = replace_blocks(text, blocks)
    shown = _page_blocks(text)
    problems = [f"{page}: marker {u} names no study's table or figure" for u in unknown]
    problems += [
        f"{page}: no marker for {b} (add <!-- crl-results {b} --> and <!-- /crl-results --> where it goes)"
        for b in blocks
        if b not in shown and not b.endswith("/about")
    ]
    if check:
        problems += [
            f"{page}: {b} differs from what the evidence gives"
            for b in shown
            if b in blocks and shown[b] != blocks[b].rstrip() + "\n"
        ]
        problems += [
            f"{s.path / (n + '.png')}: missing (run crl results build)"
            for s in studies
            for n in s.figures
            if not (s.path / f"{n}.png").is_file()
        ]
    for p in problems:
        log(p)
    if not check and new != text:
        page.write_text(new)
    if not check:
        log(f"{len(studies)} studies, {len(blocks)} blocks: {page} {'updated' if new != text else 'unchanged'}")
    return 1 if problems else 0
