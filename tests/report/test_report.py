"""Tests of crl.stats and crl.report on generated run directories with known curves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from crl import report, stats
from crl.report_page import SECTIONS

SEG = 10_000  # steps per regime segment
N_SEG = 4
FRICTION = [1.0, 0.5, 1.0, 0.5]  # regimes 0,1,0,1: revisits


def make_run(root: Path, agent: str, seed: int, level: float, drop: float, status: str = "finished", upto=None):
    """Episodes every 500 steps; return = level - drop * segment (constant within a segment), + seed offset."""
    d = root / "exp" / f"ant__{agent}__s{seed}"
    d.mkdir(parents=True)
    steps = N_SEG * SEG if upto is None else upto
    cfg = {
        "experiment": "exp",
        "env": {"name": "ant", "id": "Ant-v5", "make_kwargs": {}},
        "agent": {"name": agent, "algo": "ppo"},
        "seed": seed,
        "steps": N_SEG * SEG,
        "command": f"crl train exp --agent {agent} --seed {seed}",
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = []
    for s in range(500, steps + 1, 500):
        seg = (s - 1) // SEG
        rows.append({"global_step": s, "charts/episodic_return": level - drop * seg + seed, "regime/index": seg % 2})
        if s % 2000 == 0:
            rows.append(
                {"global_step": s, "plasticity/pi/0/dormant_fraction": 0.01 * drop * seg, "losses/value_loss": 1.0}
            )
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
    segs = []
    for k in range(N_SEG):
        if k * SEG >= steps:
            break
        end = (k + 1) * SEG if (k + 1) * SEG <= steps and upto is None else None
        segs.append({"segment": k, "regime": k % 2, "start_step": k * SEG, "end_step": end, "friction": FRICTION[k]})
    pd.DataFrame(segs).to_csv(d / "regimes.csv", index=False)
    (d / "status.json").write_text(
        json.dumps({"status": status, "global_step": steps, "steps": N_SEG * SEG, "error": None})
    )
    return d


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed in range(4):
        make_run(root, "ppo", seed, level=100.0, drop=10.0)
        make_run(root, "cbp", seed, level=100.0, drop=0.0)
    make_run(root, "l2", 0, level=50.0, drop=0.0, status="running", upto=25_000)
    failed = make_run(root, "l2", 1, level=50.0, drop=0.0, status="failed", upto=12_000)
    st = json.loads((failed / "status.json").read_text())
    (failed / "status.json").write_text(json.dumps({**st, "error": "NonFiniteLossError: loss is nan at step 12000"}))
    return root


# ---------------------------------------------------------------- statistics


def test_iqm_hand_computed():
    # sorted -50,0,1,2,3,4,5,100: drop 2 each side -> mean of 1,2,3,4
    assert stats.iqm(np.array([100.0, 0.0, 2.0, 3.0, 4.0, 5.0, 1.0, -50.0])) == pytest.approx(2.5)
    # 4 values: middle two
    assert stats.iqm(np.array([1.0, 2.0, 3.0, 100.0])) == pytest.approx(2.5)
    assert np.isnan(stats.iqm(np.array([])))


def test_iqm_is_scipys_trimmed_mean_to_the_bit():
    """crl's IQM is scipy.stats.trim_mean(x, 0.25) without its per-call overhead: the same numbers,
    so every committed table stays what it was (docs/results.md, crl results build --check)."""
    from scipy.stats import trim_mean

    rng = np.random.default_rng(0)
    for n in range(1, 40):
        x = rng.normal(size=n) * rng.uniform(1, 1000)
        assert stats.iqm(x) == float(trim_mean(x, 0.25))
    c = rng.normal(size=(9, 12))
    c[3, 6:] = np.nan
    m, _, _ = stats.iqm_curve(c, reps=20)
    assert m.tolist() == [stats.iqm(col) for col in c.T]


def test_iqm_ci_contains_point_and_is_tight_for_constant():
    m, lo, hi = stats.iqm_ci(np.array([5.0, 5.0, 5.0, 5.0]), reps=200)
    assert (m, lo, hi) == (5.0, 5.0, 5.0)
    m, lo, hi = stats.iqm_ci(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]), reps=500)
    assert m == pytest.approx(3.5) and lo < m < hi


def test_iqm_curve_and_slope():
    c = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, np.nan]])
    m, lo, hi = stats.iqm_curve(c, reps=200)
    assert m[0] == pytest.approx(2.5) and m[1] == pytest.approx(20.0)
    assert np.all(lo <= m) and np.all(m <= hi)
    assert stats.slope(np.arange(4), np.array([3.0, 2.0, 1.0, 0.0])) == pytest.approx(-1.0)


def test_probability_of_improvement():
    p, lo, hi = stats.probability_of_improvement(np.array([1.0, 2.0]), np.array([1.0, 2.0]), reps=100)
    assert p == pytest.approx(0.5) and lo <= p <= hi


# ---------------------------------------------------------------- tables and report


def test_compare_tables_known_numbers(runs_dir):
    t = report.compare_tables(runs_dir, poi=True, reps=300)
    s = t["summary"].set_index("agent")
    assert set(s.index) == {"ppo", "cbp", "l2"}
    # ppo: late returns per segment 100+seed-10k, plasticity slope -10 for every seed
    assert s.loc["ppo", "plasticity_score_iqm"] == pytest.approx(-10.0)
    assert s.loc["cbp", "plasticity_score_iqm"] == pytest.approx(0.0)
    # average performance (crl.metrics): mean of each regime's last late return, (80 + 70) / 2 + seed;
    # IQM over seeds 0..3 -> 75 + 1.5
    assert s.loc["ppo", "average_performance_iqm"] == pytest.approx(76.5)
    assert s.loc["cbp", "average_performance_iqm"] == pytest.approx(101.5)
    # forgetting on revisits: late at previous visit (seg k-2) minus early at revisit = 20 for ppo
    assert s.loc["ppo", "forgetting_iqm"] == pytest.approx(20.0)
    assert s.loc["cbp", "forgetting_iqm"] == pytest.approx(0.0)
    runs = t["runs"]
    assert runs.loc[runs["agent"] == "l2", "status"].tolist() == ["RUNNING", "FAILED"]
    assert s.loc["l2", "seeds"] == 2 and "1 failed" in s.loc["l2", "status"]
    poi = t["poi"].set_index(["X", "Y"])
    assert poi.loc[("cbp", "ppo"), "p"] == pytest.approx(1.0)


def test_late_regime_returns(runs_dir):
    run = next(r for r in report.load_runs(runs_dir) if r.agent == "ppo" and r.seed == 0)
    lr = report.late_regime_returns(run)
    assert lr["late_return"].tolist() == [100.0, 90.0, 80.0, 70.0]
    assert lr["regime"].tolist() == [0, 1, 0, 1]


def test_bad_runs_dir(tmp_path):
    with pytest.raises(report.ConfigError, match="does not exist"):
        report.load_runs(tmp_path / "nope")
    with pytest.raises(report.ConfigError, match="no runs"):
        report.build_report(tmp_path, tmp_path / "out")


FIGURES = ("returns", "per_regime", "aggregates", "profiles", "poi", "diagnostics_pi")


@pytest.fixture(scope="module")
def built(runs_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = report.build_report(runs_dir, out, bin_steps=2000, poi=True, reps=200, wandb=True)
    return path, out


def test_report_files(built):
    path, out = built
    for name in FIGURES:
        assert (out / f"{name}.png").stat().st_size > 1000, name
        assert (out / f"{name}.svg").read_text().lstrip().startswith("<?xml"), name
    text = path.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    assert text.count("data:image/png;base64,") == len(FIGURES)
    assert "<script" not in text and "rendered-ok" not in text
    # the unfinished l2 runs lack late segments: left out of the aggregates (ppo, cbp: 4 seeds each)
    assert "ant__l2__s1: scores on 1 of 4 segments, left out of the aggregates" in text
    for needle in (
        "ppo",
        "cbp",
        "l2",
        "RUNNING",
        "FAILED",
        "loss is nan",
        "crl train exp --agent cbp --seed 3",
        "-10 [-10, -10]",
    ):
        assert needle in text, needle


def test_wandb_report_run(built):
    _, out = built
    run_dirs = list((out / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    images = list(run_dirs[0].rglob("media/images/report/*.png"))
    assert len(images) == len(FIGURES)
    assert list(run_dirs[0].rglob("media/table/report/*.table.json"))


def test_cli_commands(runs_dir, tmp_path, capsys):
    from crl.cli import main

    args = ["report", str(runs_dir / "exp"), "-o", str(tmp_path / "o"), "--bin", "5000", "--reps", "100"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "o" / "index.html")
    assert (tmp_path / "o" / "returns.svg").is_file() and not (tmp_path / "o" / "wandb").exists()
    assert main(["compare", str(runs_dir), "--poi", "--reps", "100"]) == 0
    assert "Probability of improvement" in capsys.readouterr().out


def test_print_compare(runs_dir):
    from rich.console import Console

    console = Console(record=True, width=200)
    report.print_compare(runs_dir, reps=100, console=console)
    out = console.export_text()
    assert "ppo" in out and "RUNNING" in out and "Per agent" in out
    assert "reference" in out and "fine-tuning" in out and "multi-task = all regimes" in out


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium not installed (/usr/bin/chromium); apt-get install chromium"
)
def test_html_in_headless_chromium(built, tmp_path):
    path, out = built
    base = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    dom = subprocess.run(
        [*base, f"--user-data-dir={tmp_path / 'p1'}", "--enable-logging=stderr", "--v=0", "--dump-dom", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dom.stdout.rstrip().endswith("</html>"), dom.stderr[-2000:]
    for sid in [*SECTIONS, "diagnostics-pi"]:
        assert re.search(rf'<section id="{sid}"><h2>[^<]+</h2>', dom.stdout), sid
    for name in FIGURES:
        assert re.search(rf'<img alt="{name}" src="data:image/png;base64,', dom.stdout), name
    summary = dom.stdout.split('<section id="summary">')[1].split("</section>")[0]
    assert "<th>reference</th>" in summary and "<td>ant</td><td>ppo</td><td>fine-tuning</td>" in summary
    assert not re.search(r"CONSOLE\(\d+\).*(Error|error)", dom.stderr), dom.stderr[-2000:]
    shot = out / "screenshot.png"
    subprocess.run(
        [*base, f"--user-data-dir={tmp_path / 'p2'}", f"--screenshot={shot}", "--window-size=1280,2400", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shot.stat().st_size > 20_000
    keep = Path("/tmp/crl_report_screenshot.png")
    shutil.copy(shot, keep)
