"""``crl results cut``: the evidence of real runs gives the same scores, tables and figures as the runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from crl.cli import main
from crl.evidence import SCORED, cut_runs
from tests._resume import train_here
from tests.conftest import run_crl

STEPS = "2048"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real cyclic-cartpole runs (a change every 512 steps, regime evaluations, diagnostics and
    losses logged: columns the evidence leaves behind), trained by ``crl train``'s entry point in
    this process (tests._resume.train_here)."""
    root = tmp_path_factory.mktemp("runs")
    for agent in ("ppo", "ppo-l2"):
        train_here(
            *("train", "--env", "cyclic-cartpole", "--agent", agent, "--steps", STEPS, "--run-dir", str(root)),
            *("--experiment", "exp", "--env-kwargs", "change_every=512", "--eval-every", "512"),
            *("--eval-episodes", "1", "--diagnostics-every", "512", "--agent-kwargs", "n_steps=256", "batch_size=64"),
            *("--wandb", "disabled", "--no-progress"),
        )
    return root / "exp"


def _crl(capsys, *args: str) -> tuple[int, str, str]:
    """``crl ARGS`` through its entry point in this process: (exit status, stdout, stderr). The
    real command line's one-line error: :func:`test_cut_command_and_bad_input`'s missing folder."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def mixed(runs, tmp_path):
    """The runs, a failed copy of one and a wandb-like ``files/config.yaml`` inside one."""
    mixed = tmp_path / "mixed"
    shutil.copytree(runs, mixed)
    first = sorted(mixed.iterdir())[0]
    shutil.copytree(first, mixed / "failed-run")
    (mixed / "failed-run" / "status.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    nested = first / "wandb" / "offline-run" / "files"
    nested.mkdir(parents=True)
    (nested / "config.yaml").write_text("a: 1\n")
    return mixed


def test_cut_keeps_what_scores_read(runs, mixed, tmp_path):
    written, notes = cut_runs(mixed, tmp_path / "ev")
    assert [p.name for p in written] == sorted(p.name for p in runs.iterdir())
    assert notes == [f"left out {mixed / 'failed-run'}: failed"]
    for d in written:
        assert sorted(p.name for p in d.iterdir()) == ["config.yaml", "metrics.csv", "regimes.csv", "status.json"]
        cols = list(pd.read_csv(d / "metrics.csv").columns)
        assert all(SCORED.match(c) for c in cols) and "eval/regime_1/return" in cols
        full = pd.read_csv(runs / d.name / "metrics.csv", low_memory=False)
        assert any(c.startswith("plasticity/") for c in full.columns)
        assert (d / "metrics.csv").stat().st_size < (runs / d.name / "metrics.csv").stat().st_size / 2


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("command", [("compare", "--json", "--paired", "ppo", "--floor", "20"), ("metrics", "--json")])
def test_scores_on_the_evidence_equal_the_runs(runs, tmp_path, capsys, command, compress):
    written, _ = cut_runs(runs, tmp_path / "ev", compress=compress)
    assert (written[0] / "metrics.csv.gz").is_file() == compress != (written[0] / "metrics.csv").is_file()
    (code, out, _), (code_cut, out_cut, _) = (
        _crl(capsys, command[0], str(d), *command[1:]) for d in (runs, tmp_path / "ev")
    )
    assert code == code_cut == 0
    full, cut = json.loads(out), json.loads(out_cut)
    if command[0] == "compare":
        for part in ("groups", "paired", "floor"):
            assert cut[part] == full[part], part
        assert [r["scores"] for r in cut["runs"]] == [r["scores"] for r in full["runs"]]
    else:
        assert list(cut.values()) == list(full.values())


@pytest.mark.expensive  # two reports, ~30 s: the scores are the same functions as compare's (checked above)
def test_report_on_the_evidence_equals_the_runs(runs, tmp_path):
    cut_runs(runs, tmp_path / "ev")
    for src, out in ((runs, tmp_path / "full"), (tmp_path / "ev", tmp_path / "cut")):
        run_crl("report", str(src), "-o", str(out), "--reps", "50", check=True)
    assert (tmp_path / "cut" / "summary.csv").read_text() == (tmp_path / "full" / "summary.csv").read_text()
    assert (tmp_path / "cut" / "returns.png").is_file() and (tmp_path / "cut" / "per_regime.png").is_file()


def test_cut_command_and_bad_input(runs, mixed, tmp_path, capsys):
    code, out, err = _crl(capsys, "results", "cut", str(mixed), str(tmp_path / "ev"), "--keep", "^losses/")
    assert code == 0 and "left out" in err and len(out.split()) == 2
    first = sorted((tmp_path / "ev").iterdir())[0]
    assert any(c.startswith("losses/") for c in pd.read_csv(first / "metrics.csv").columns)
    gzip = ("results", "cut", str(runs), str(tmp_path / "gz"), "--gzip")
    (code, again, _), (code_twice, twice, _) = _crl(capsys, *gzip), _crl(capsys, *gzip)
    again, twice = again.split(), twice.split()
    assert code == code_twice == 0 and again == twice and not (Path(again[0]) / "metrics.csv").exists()
    data = (Path(again[0]) / "metrics.csv.gz").read_bytes()
    assert _crl(capsys, *gzip)[0] == 0
    assert (Path(again[0]) / "metrics.csv.gz").read_bytes() == data  # no time stamp: the same bytes
    bad = run_crl("results", "cut", str(tmp_path / "nope"), str(tmp_path / "x"))  # the real command line
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no such folder" in bad.stderr
    code, _, err = _crl(capsys, "results", "cut", str(runs), str(runs / "evidence"))
    assert code == 2 and "inside" in err
    code, _, err = _crl(capsys, "results", "cut", str(runs), str(tmp_path / "y"), "--keep", "(")
    assert code == 2 and "regular expression" in err
