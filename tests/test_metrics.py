"""Continual-learning metrics on synthetic run folders with known answers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from crl import metrics as M


def _write_run(
    d: Path,
    regimes: list[tuple[int, int, int | None]],
    episodes: list[tuple[int, int, float]],
    evals: list[tuple[int, dict[int, float]]] = (),
) -> Path:
    """regimes: (regime, start, end); episodes: (step, segment, return); evals: (step, {regime: value})."""
    d.mkdir(parents=True)
    eval_keys = sorted({k for _, e in evals for k in e})
    cols = ["global_step", "charts/episodic_return", "regime/segment"] + [f"eval/regime_{k}/return" for k in eval_keys]
    rows = [{"global_step": s, "charts/episodic_return": r, "regime/segment": g} for s, g, r in episodes]
    rows += [{"global_step": s, **{f"eval/regime_{k}/return": v for k, v in e.items()}} for s, e in evals]
    rows.sort(key=lambda r: r["global_step"])
    with (d / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)
    with (d / "regimes.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["segment", "regime", "start_step", "end_step"])
        for i, (k, a, b) in enumerate(regimes):
            w.writerow([i, k, a, "" if b is None else b])
    return d


def test_forgetting_and_average_performance_from_evaluations(tmp_path):
    # A (0-100) B (100-200): p_A at end of A = 8, at T = 5 -> forgetting 3; p_B(T) = 9
    run = _write_run(
        tmp_path / "r",
        [(0, 0, 100), (1, 100, 200)],
        [(50, 0, 1.0), (100, 0, 8.0), (150, 1, 2.0), (200, 1, 9.0)],
        [(50, {0: 2.0}), (100, {0: 8.0}), (150, {0: 6.0, 1: 3.0}), (200, {0: 5.0, 1: 9.0})],
    )
    res = M.run_metrics(run)
    assert res["source"] == "eval"
    assert res["forgetting"][0] == pytest.approx(3.0)
    assert res["average_performance"] == pytest.approx(7.0)


def test_forgetting_on_revisits_and_plasticity_slope(tmp_path):
    # A B A: A ends at 10 (last 10%), comes back at 4 (first 10%) -> forgetting 6
    eps = [(10, 0, 2.0), (95, 0, 10.0), (150, 1, 5.0), (195, 1, 8.0), (205, 2, 4.0), (295, 2, 6.0)]
    run = _write_run(tmp_path / "r", [(0, 0, 100), (1, 100, 200), (0, 200, 300)], eps)
    res = M.run_metrics(run)
    assert res["source"] == "train"
    assert res["final_returns"] == [10.0, 8.0, 6.0]
    assert res["forgetting"] == {0: pytest.approx(6.0)}
    assert res["plasticity_score"] == pytest.approx(-2.0)
    assert res["average_performance"] == pytest.approx((6.0 + 8.0) / 2)


def test_forward_transfer_against_reference_runs(tmp_path):
    # run's regime-1 curve: 0 until step 50 of its segment, then 10 -> AUC 0.5 with lo 0, hi 10
    # reference on regime 1: 0 until 75, then 10 -> AUC 0.25. FT = (0.5 - 0.25) / 0.75 = 1/3
    run = _write_run(
        tmp_path / "r",
        [(0, 0, 100), (1, 100, 200)],
        [(50, 0, 3.0), (100, 0, 3.0), (100, 1, 0.0), (150, 1, 10.0), (200, 1, 10.0)],
    )
    ref1 = _write_run(tmp_path / "ref1", [(1, 0, None)], [(0, 0, 0.0), (75, 0, 10.0), (100, 0, 10.0)])
    res = M.run_metrics(run, [ref1])
    assert res["forward_transfer"] == {1: pytest.approx(1 / 3)}
    assert M.forward_transfer(1.0, 0.5) == 1.0 and M.forward_transfer(0.5, 0.5) == 0.0


def test_normalised_auc_step_function():
    assert M.normalised_auc(np.array([0, 25, 50]), np.array([0.0, 4.0, 8.0]), 100, 0.0, 8.0) == pytest.approx(
        (0 * 25 + 0.5 * 25 + 1.0 * 50) / 100
    )


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    from crl.errors import ConfigError

    with pytest.raises(ConfigError, match="not a run folder"):
        M.run_metrics(tmp_path)


@pytest.mark.expensive
def test_make_references_launches_one_pinned_run_per_regime(tmp_path):
    from crl.run import RunConfig, train

    run = train(
        RunConfig(
            env="slippery-ant",
            agent="ppo",
            seed=0,
            steps=768,
            run_dir=str(tmp_path),
            wandb="disabled",
            env_kwargs={"change_every": 300, "episode_steps": 100, "schedule": "cyclic"},
            agent_kwargs={"n_steps": 256, "batch_size": 64, "n_epochs": 1},
            progress=False,
        )
    )
    from crl.references import make_references

    refs = make_references(run.run_dir, steps=256)
    assert len(refs) == 2
    for k, ref in enumerate(refs):
        with (ref / "regimes.csv").open() as f:
            assert {int(r["regime"]) for r in csv.DictReader(f)} == {k}
    res = M.run_metrics(run.run_dir, refs)
    assert set(res["forward_transfer"]) == {0, 1}
