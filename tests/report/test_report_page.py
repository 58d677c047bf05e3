"""The report page's sections on generated run folders: one seed, bin width, every diagnostics panel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from crl import report, report_figures

SEG = 4000
N_SEG = 3
NETS = ("policy", "value")
METRICS = ("dormant_tau", "srank", "effective_rank", "weight_change")


def write_run(root: Path, agent: str, seed: int, level: float) -> Path:
    """A finished run: 3 segments of 4000 steps and a 200-step stub (too short to score), an episode
    every 200 steps, diagnostics every 1000."""
    d = root / "exp" / f"cp__{agent}__s{seed}"
    d.mkdir(parents=True)
    cfg = {"experiment": "exp", "env": {"name": "cp"}, "agent": {"name": agent}, "seed": seed, "steps": N_SEG * SEG}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = []
    for s in range(200, N_SEG * SEG + 201, 200):
        seg = (s - 1) // SEG
        rows.append({"global_step": s, "charts/episodic_return": level + seg + seed, "regime/segment": seg})
        if s % 1000 == 0:
            diag = {f"plasticity/{n}/{k}/{m}": s / 1000 for n in NETS for k in (0, 1) for m in METRICS}
            rows.append({"global_step": s, **diag})
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
    segs = [{"segment": k, "regime": k, "start_step": k * SEG, "end_step": (k + 1) * SEG, "level": k} for k in range(3)]
    segs.append({"segment": 3, "regime": 3, "start_step": N_SEG * SEG, "end_step": None, "level": 3})
    pd.DataFrame(segs).to_csv(d / "regimes.csv", index=False)
    (d / "status.json").write_text(
        json.dumps({"status": "finished", "global_step": N_SEG * SEG + 200, "steps": N_SEG * SEG})
    )
    return d


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_seed")
    write_run(root, "ppo", 0, 10.0)
    write_run(root, "ppo-cbp", 0, 20.0)
    return root


def test_default_bin_is_a_tenth_of_the_regime_length(one_seed):
    runs = report.load_runs(one_seed)
    assert report.regime_length(runs) == SEG
    assert report.default_bin_steps(runs) == SEG // 10


def test_one_seed_page_says_na(one_seed, tmp_path):
    index = report.build_report(one_seed, tmp_path / "out", reps=100)
    text = index.read_text()
    assert "bins of 400 steps" in text
    # per-regime table: the value and no interval
    assert "<td>10, CI n/a (1 seed)</td>" in text and "<td>20, CI n/a (1 seed)</td>" in text
    assert "intervals n/a (1 seed)" in text
    # the 200-step stub: marked in the table, not a task of the aggregates (3 segments)
    assert text.count("<td>too short: left out</td>") == 2
    assert "Aggregates over 3 tasks (env, regime segment)" in text
    assert "Probability of improvement needs &gt;= 3 seeds for every agent" in text
    assert not (tmp_path / "out" / "poi.png").exists()
    for sid in ("diagnostics-policy", "diagnostics-value"):
        assert f'<section id="{sid}">' in text
    # seeds next to every figure
    for cap in text.split("<figcaption>")[1:]:
        assert "n=1" in cap.split("</figcaption>")[0], cap[:200]


def test_reference_column_in_the_summary_and_runs_tables(one_seed, tmp_path):
    """The report marks the references as ``crl compare`` does (:func:`crl.metrics.reference_kind`):
    plain ppo on the sequence is fine-tuning, a uniform-schedule run multi-task, a method nothing."""
    from crl.metrics import REFERENCE_NOTE

    root = tmp_path / "runs"
    for agent in ("ppo", "ppo-cbp"):
        write_run(root, agent, 0, 10.0)
    multi = write_run(root, "mt", 0, 30.0)
    cfg = yaml.safe_load((multi / "config.yaml").read_text())
    cfg |= {"env": {"name": "cp-multitask", "make_kwargs": {"schedule": {"uniform": {"regimes": [0, 1]}}}}}
    cfg["agent"] = {"name": "ppo"}
    (multi / "config.yaml").write_text(yaml.safe_dump(cfg))
    text = report.build_report(root, tmp_path / "out", reps=50).read_text()
    summary = text.split('<section id="summary">')[1].split("</section>")[0]
    assert "<th>env</th><th>agent</th><th>reference</th><th>seeds</th>" in summary
    assert "<td>cp</td><td>ppo</td><td>fine-tuning</td>" in summary
    assert "<td>cp</td><td>ppo-cbp</td><td></td>" in summary
    assert "<td>cp-multitask</td><td>ppo</td><td>multi-task</td>" in summary
    assert REFERENCE_NOTE in summary
    runs = text.split('<section id="runs">')[1].split("</section>")[0]
    assert "<th>agent</th><th>reference</th><th>seed</th>" in runs
    assert runs.count("<td>fine-tuning</td>") == 1 and runs.count("<td>multi-task</td>") == 1
    summary_csv = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False)
    assert sorted(summary_csv["reference"]) == ["", "fine-tuning", "multi-task"]


def test_bin_option(one_seed, tmp_path):
    from crl.cli import main

    assert main(["report", str(one_seed), "-o", str(tmp_path / "o"), "--bin", "1000", "--reps", "50"]) == 0
    assert "bins of 1,000 steps" in (tmp_path / "o" / "index.html").read_text()


def test_every_diagnostics_panel_with_regime_lines(one_seed):
    import matplotlib

    matplotlib.use("Agg")
    runs = report.load_runs(one_seed)
    table, notes = report.segment_scores(runs)
    assert not notes
    col = report_figures.colours(["ppo", "ppo-cbp"])
    assert report_figures.diagnostic_networks(runs) == ["policy", "value"]
    for net in NETS:
        fig = report_figures.fig_diagnostics(runs, table, col, net, bin_steps=1000)
        axes = [a for a in fig.axes if a.get_visible()]
        assert len(axes) == 2 * len(METRICS)  # every layer x metric of this network
        titles = {a.get_title() for a in axes}
        assert titles == {f"layer {k}: {m}" for k in (0, 1) for m in METRICS}
        for a in axes:
            vlines = sorted(ln.get_xdata()[0] for ln in a.get_lines() if ln.get_linestyle() == "--")
            assert vlines == [SEG, 2 * SEG, 3 * SEG]
            data = [ln for ln in a.get_lines() if ln.get_linestyle() == "-"]
            assert len(data) == 2 and np.allclose(data[0].get_ydata(), np.arange(1, 13))
