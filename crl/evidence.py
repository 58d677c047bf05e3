"""Evidence: the small part of run folders that every score and figure of the Results reads.

:func:`cut_runs` (``crl results cut RUNS_DIR DEST``) copies, for every finished run folder
below ``RUNS_DIR``, to the same place below ``DEST``:

* ``config.yaml``, ``status.json`` and ``regimes.csv`` as they are;
* ``metrics.csv`` cut to the columns :mod:`crl.metrics` and the report's return figures read
  (:data:`SCORED`: ``global_step``, ``charts/episodic_return``, ``regime/segment``,
  ``eval/regime_<k>/return`` and ``eval/regime_<k>/success``), plus any column matched by
  ``keep`` (e.g. ``optimizer/`` for TRAC's scale); rows with none of them are dropped; with
  ``compress``, as ``metrics.csv.gz`` (long runs of short episodes: ~3 bytes an episode).

The values are copied, not rounded, so ``crl compare``, ``crl metrics`` and ``crl report`` give
the same numbers on ``DEST`` as on ``RUNS_DIR`` (``tests/test_evidence.py`` checks it on a real
run). Checkpoints, models, loss and diagnostics rows stay behind: a CartPole run of 32k steps
is ~35 kB. Runs that are not finished are left out, each with one note.

Example:
    >>> import tempfile
    >>> cut_runs(tempfile.mkdtemp(), tempfile.mkdtemp())
    ([], [])
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pandas as pd

from crl.errors import ConfigError

__all__ = ["SCORED", "COPIED", "scored_columns", "cut_run", "cut_runs"]

#: The ``metrics.csv`` columns every score and return figure reads.
SCORED = re.compile(r"^(global_step|charts/episodic_return|regime/segment|eval/regime_\d+/(return|success))$")
#: The files copied as they are.
COPIED = ("config.yaml", "status.json", "regimes.csv")


def scored_columns(columns: list[str], keep: str | None = None) -> list[str]:
    """The columns of ``columns`` that the evidence keeps: :data:`SCORED`, and those ``keep`` (a regex) matches.

    Example:
        >>> scored_columns(["global_step", "losses/value_loss", "eval/regime_1/return", "optimizer/policy/trac_scale"])
        ['global_step', 'eval/regime_1/return']
        >>> scored_columns(["global_step", "optimizer/policy/trac_scale"], keep="^optimizer/")
        ['global_step', 'optimizer/policy/trac_scale']
    """
    extra = re.compile(keep) if keep else None
    return [c for c in columns if SCORED.match(c) or (extra is not None and extra.search(c))]


def cut_run(run: Path, out: Path, keep: str | None = None, compress: bool = False) -> Path:
    """Copy the evidence of one run folder ``run`` to ``out`` (created); return ``out``.

    ``compress`` writes ``metrics.csv.gz`` (gzip without a time stamp, so a second cut gives the
    same bytes; :func:`crl.metrics.read_run` reads it) instead of ``metrics.csv``: 4-5x smaller.
    """
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (run / name).is_file():
            shutil.copyfile(run / name, out / name)
    m = pd.read_csv(run / "metrics.csv", low_memory=False)
    m = m[scored_columns(list(m.columns), keep)]
    if "global_step" in m:
        m = m[m.drop(columns="global_step").notna().any(axis=1)]
    text = m.to_csv(index=False)
    for name in ("metrics.csv", "metrics.csv.gz"):
        (out / name).unlink(missing_ok=True)
    if compress:
        (out / "metrics.csv.gz").write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
    else:
        (out / "metrics.csv").write_text(text)
    return out


def cut_runs(
    src: str | Path, dst: str | Path, keep: str | None = None, compress: bool = False
) -> tuple[list[Path], list[str]]:
    """Cut every finished run folder below ``src`` (one with ``config.yaml`` and ``metrics.csv``)
    into ``dst`` at the same relative place; return the folders written and one note per run left out.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ConfigError(f"{src}: no such folder (give the runs folder a sweep wrote, e.g. runs/<experiment>)")
    if keep:
        try:
            re.compile(keep)
        except re.error as e:
            raise ConfigError(f"--keep {keep!r} is not a regular expression ({e})") from e
    if dst.resolve().is_relative_to(src.resolve()):
        raise ConfigError(f"{dst} is inside {src}: the evidence would be read back as runs; write it elsewhere")
    written, notes = [], []
    for run in _run_folders(src):
        if not (run / "metrics.csv").is_file():
            notes.append(f"left out {run}: no metrics.csv")
            continue
        status = _status(run)
        if status != "finished":
            notes.append(f"left out {run}: {status}")
            continue
        written.append(cut_run(run, dst / run.relative_to(src), keep, compress))
    return written, notes


def _run_folders(src: Path) -> list[Path]:
    """Folders with a ``config.yaml`` below ``src``, not those inside another (a wandb run's ``files/``)."""
    found: list[Path] = []
    for d in sorted(p.parent for p in src.rglob("config.yaml")):
        if not any(d.is_relative_to(f) for f in found):
            found.append(d)
    return found


def _status(run: Path) -> str:
    try:
        status = json.loads((run / "status.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return "no readable status.json"
    return str(status)
