"""Copy the small files that crl's scores read from run folders (the evidence of docs/results.md).

    python docs/results/forgetting/evidence.py SRC DST

For every finished run folder below SRC (a folder with ``config.yaml`` whose ``status.json`` says
``finished``; the others are named on stderr and left out) it writes, at the same place below
DST: ``config.yaml``, ``status.json`` and ``regimes.csv`` as they are, and ``metrics.csv`` cut to
the columns :mod:`crl.metrics` reads (``global_step``, ``charts/episodic_return``,
``regime/segment``, ``eval/regime_<k>/return``), rows with none of them dropped. ``crl compare``
and ``crl metrics`` give the same scores on DST as on SRC; checkpoints, models and loss rows stay
behind.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

SCORED = re.compile(r"^(global_step|charts/episodic_return|regime/segment|eval/regime_\d+/return)$")


def copy_evidence(src: Path, dst: Path) -> list[Path]:
    """Copy the scored files of every finished run folder below ``src`` to ``dst``; return the folders written."""
    written = []
    for run in sorted(p.parent for p in src.rglob("config.yaml")):
        status = json.loads((run / "status.json").read_text()).get("status")
        if status != "finished":
            print(f"left out {run}: {status}", file=sys.stderr)
            continue
        out = dst / run.relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "status.json", "regimes.csv"):
            shutil.copy(run / name, out / name)
        m = pd.read_csv(run / "metrics.csv")
        m = m[[c for c in m.columns if SCORED.match(c)]]
        m[m.drop(columns="global_step").notna().any(axis=1)].to_csv(out / "metrics.csv", index=False)
        written.append(out)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python docs/results/forgetting/evidence.py SRC DST")
    for folder in copy_evidence(Path(sys.argv[1]), Path(sys.argv[2])):
        print(folder)
