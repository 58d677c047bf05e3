"""``crl report``, ``crl compare``, ``crl metrics`` and ``crl results``: what a set of runs shows."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPORT_HELP = "build the HTML comparison report from run directories"
COMPARE_HELP = "print the comparison tables in the terminal"
METRICS_HELP = "continual-learning metrics of run folders"
RESULTS_HELP = "the Results' evidence: cut run folders to what scores read; regenerate tables and figures"


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


def _score_arguments(p: argparse.ArgumentParser) -> None:
    from crl.metrics import LATE_FRACTION, MIN_SEGMENT_FRACTION

    p.add_argument(
        "--late-fraction",
        "--frac",
        dest="late_fraction",
        type=_fraction,
        default=LATE_FRACTION,
        help=f"share of a segment whose episodes give its late return (default {LATE_FRACTION})",
    )
    p.add_argument(
        "--min-segment",
        type=_fraction,
        default=MIN_SEGMENT_FRACTION,
        help="segments shorter than this share of the intended length are left out of the scores "
        f"(default {MIN_SEGMENT_FRACTION})",
    )
    p.add_argument("--json", action="store_true", help="print JSON (undefined values as null)")


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction in (0, 1]")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return v


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl compare``."""
    p.add_argument("paths", nargs="+", metavar="PATH", help="run folders, experiment folders or runs folders")
    p.add_argument("--poi", action="store_true", help="add probability of improvement between agent pairs")
    p.add_argument(
        "--paired",
        metavar="BASE",
        default=None,
        help="add each agent's per-seed differences from agent BASE (mean, bootstrap CI, share of seeds won)",
    )
    p.add_argument(
        "--floor",
        type=float,
        default=None,
        metavar="RETURN",
        help="add the share of seeds whose late return in each segment is below RETURN (Wilson CI)",
    )
    p.add_argument("--reps", type=_positive_int, default=2000, help="bootstrap resamples for the confidence intervals")
    _reference_argument(p)
    _score_arguments(p)


def _reference_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="DIR",
        help="from-scratch reference run (one per regime), for forward transfer",
    )


def _load(paths: list[str]):
    """The runs below ``paths``; a note per skipped folder on stderr; none is a one-line error."""
    from crl.errors import ConfigError
    from crl.metrics import find_runs

    runs, notes = find_runs(paths)
    given = tuple(f"skipped {p}: " for p in paths)
    for n in notes:
        if runs or not n.startswith(given):  # with nothing found, the error below says it for the paths given
            print(f"crl: note: {n}", file=sys.stderr)
    if not runs:
        why = [n.removeprefix("skipped ") for n in notes if n.startswith(given)]
        if len(paths) == 1 and len(why) == 1:
            raise ConfigError(f"{why[0]}: nothing to compare")
        raise ConfigError(f"no run folders (with config.yaml or metrics.csv) in {', '.join(paths)}")
    return runs


def _root(paths: list[str]) -> str | None:
    return paths[0] if len(paths) == 1 and Path(paths[0]).is_dir() else None


def run_compare(a: argparse.Namespace) -> int:
    """Print the comparison tables (or JSON) of the runs below the given paths."""
    from crl.metrics import improvement_table, run_table, summary_table

    runs = _load(a.paths)
    refs = a.reference or None
    summary = summary_table(
        runs, reps=a.reps, late_fraction=a.late_fraction, min_fraction=a.min_segment, reference_dirs=refs
    )
    poi = improvement_table(runs, reps=min(a.reps, 1000), late_fraction=a.late_fraction, min_fraction=a.min_segment)
    extra = {"paired": _paired(runs, a), "floor": _floor(runs, a)}
    table = run_table(runs, _root(a.paths))
    if a.json:
        _print_compare_json(runs, summary, poi if a.poi else None, table, refs, extra)
    else:
        _print_compare_tables(summary, poi if a.poi else None, table, a.late_fraction, a.min_segment, extra)
    return 0


def _floor(runs, a: argparse.Namespace):
    """The table of ``--floor RETURN`` (None without it)."""
    from crl.metrics import floor_table

    if a.floor is None:
        return None
    return floor_table(runs, a.floor, late_fraction=a.late_fraction, min_fraction=a.min_segment)


def _paired(runs, a: argparse.Namespace):
    """The paired table of ``--paired BASE`` (None without it); an unknown BASE is a one-line error."""
    from crl.errors import ConfigError, UnknownNameError
    from crl.metrics import paired_table

    if a.paired is None:
        return None
    agents = sorted({r.agent for r in runs})
    if a.paired not in agents:
        raise ConfigError(f"--paired: {UnknownNameError('agent', a.paired, agents)}")
    return paired_table(runs, a.paired, reps=a.reps, late_fraction=a.late_fraction, min_fraction=a.min_segment)


def _print_compare_json(runs, summary, poi, table, refs=None, extra=None) -> None:
    from crl.metrics import SCORES, json_safe, run_scores

    groups = []
    for row in summary.to_dict("records"):
        scores = {
            k: {"point": row[f"{k}_iqm"], "low": row[f"{k}_lo"], "high": row[f"{k}_hi"], "n": row[f"{k}_n"]}
            for k in SCORES
        }
        keys = ("env", "agent", "reference", "seeds", "status", "short_segments")
        groups.append({k: row[k] for k in keys} | {"scores": scores})
    out = {"groups": groups, "runs": table.to_dict("records")}
    for entry, run in zip(out["runs"], runs, strict=True):
        entry["scores"] = run_scores(run, refs)
    if poi is not None:
        out["poi"] = poi.to_dict("records")
    for key, df in (extra or {}).items():
        if df is not None:
            out[key] = df.to_dict("records")
    print(json.dumps(json_safe(out), indent=1, allow_nan=False))


_PAIRED = ["env", "agent", "base", "score", "difference", "wins"]
_FLOOR = ["env", "agent", "segment", "regime", "at_floor"]


def _print_compare_tables(summary, poi, table, late_fraction: float, min_fraction: float, extra=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from crl.metrics import REFERENCE_NOTE, SCORES

    extra = extra or {}
    console = Console()
    styles = {"RUNNING": "yellow", "FAILED": "bold red", "INTERRUPTED": "magenta", "finished": "green"}
    per_agent = ["env", "agent", "reference", "seeds", "status", *SCORES, "short_segments"]
    specs = [
        ("Per agent: IQM [95% CI] (n seeds)", summary, per_agent),
        ("Probability of improvement (average_performance)", poi, ["env", "X", "Y", "P(X > Y)"]),
        ("Paired by seed: agent - base, mean [95% CI] (n pairs); wins: share of seeds", extra.get("paired"), _PAIRED),
        ("Seeds at the floor: share [95% Wilson CI] (n seeds)", extra.get("floor"), _FLOOR),
        ("Runs", table, ["run", "status", "step", "error", "command"]),
    ]
    for title, df, cols in specs:
        if df is None or df.empty:
            continue
        t = Table(title=title)
        for c in cols:
            t.add_column(c, overflow="fold")
        for vals in df[cols].astype(str).values.tolist():
            t.add_row(*[f"[{styles[v]}]{v}[/]" if v in styles else v for v in vals])
        console.print(t)
    console.print(
        f"late return: last {late_fraction:.0%} of a segment; segments under {min_fraction:.0%} of the intended "
        "length are left out (short_segments); definitions: docs/metrics.md"
    )
    console.print(REFERENCE_NOTE)


def add_metrics_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl metrics``."""
    p.add_argument("run_dirs", nargs="+", metavar="PATH", help="run folders, experiment folders or runs folders")
    _reference_argument(p)
    p.add_argument(
        "--make-references",
        action="store_true",
        help="launch from-scratch reference runs on each regime of each run first",
    )
    p.add_argument(
        "--measure",
        choices=("return", "success"),
        default="return",
        help="score average performance and forgetting on the evaluations' returns, or on their success "
        "rates (Continual World: eval/regime_<k>/success)",
    )
    _score_arguments(p)


#: The columns of ``crl metrics``' table, after the run (``--json`` has every part).
METRIC_COLUMNS = (
    "reference",
    "average_performance",
    "forgetting",
    "forward_transfer",
    "plasticity_score",
    "performance",
    "short_segments",
    "source",
)


def run_metrics(a: argparse.Namespace) -> int:
    """Print the continual-learning metrics of each run below the given paths."""
    from crl.errors import ConfigError
    from crl.metrics import REFERENCE_NOTE, RunReadError, format_value, json_safe, run_metrics
    from crl.references import make_references

    results = {}
    for run in _load(a.run_dirs):
        refs = list(a.reference)
        if a.make_references:
            refs += [str(p) for p in make_references(run.path)]
        try:
            results[str(run.path)] = run_metrics(run, refs or None, a.late_fraction, a.min_segment, a.measure)
        except RunReadError as e:
            print(f"crl: note: skipped {e}", file=sys.stderr)
    if not results:
        raise ConfigError(f"no drifting runs (with regimes.csv) in {', '.join(a.run_dirs)}")
    if a.json:
        print(json.dumps(json_safe(results), indent=1, allow_nan=False))
        return 0
    from rich.console import Console
    from rich.table import Table

    root = _root(a.run_dirs)
    t = Table("run", *METRIC_COLUMNS, title="Continual-learning scores per run (definitions: docs/metrics.md)")
    for d, r in results.items():
        t.add_row(_relative(d, root), *(format_value(r[k]) for k in METRIC_COLUMNS))
    Console().print(t)
    Console().print(REFERENCE_NOTE)
    return 0


def _relative(path: str, root: str | None) -> str:
    try:
        return str(Path(path).relative_to(root)) if root else Path(path).name
    except ValueError:
        return Path(path).name


def add_results_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl results cut`` and ``crl results build``."""
    from crl.cli.common import OneLineParser

    sub = p.add_subparsers(dest="results_command", metavar="{cut,build}", parser_class=OneLineParser, required=True)
    cut = sub.add_parser("cut", help="copy what the scores read from finished run folders (crl.evidence)")
    cut.add_argument("runs_dir", metavar="RUNS_DIR", help="run, experiment or runs folder")
    cut.add_argument("dest", metavar="DEST", help="evidence folder (e.g. docs/results/<study>/runs)")
    cut.add_argument(
        "--keep",
        metavar="REGEX",
        default=None,
        help="also keep the metrics.csv columns this regular expression matches (e.g. '^optimizer/')",
    )
    cut.add_argument(
        "--gzip",
        action="store_true",
        help="write metrics.csv.gz (4-5x smaller; crl compare, metrics and report read it): for long runs",
    )
    build = sub.add_parser("build", help="regenerate every study's tables and figures (crl.studies)")
    build.add_argument("docs_dir", metavar="DOCS_DIR", nargs="?", default="docs", help="default: docs")
    build.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary folder and fail, naming them, if tables differ from DOCS_DIR/results.md",
    )


def run_results(a: argparse.Namespace) -> int:
    """``crl results cut`` / ``crl results build``."""
    if a.results_command == "cut":
        from crl.evidence import cut_runs

        written, notes = cut_runs(a.runs_dir, a.dest, a.keep, a.gzip)
        for n in notes:
            print(f"crl: note: {n}", file=sys.stderr)
        for d in written:
            print(d)
        return 0
    from crl.studies import build

    return build(a.docs_dir, check=a.check)
