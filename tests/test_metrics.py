"""Continual-learning scores (crl.metrics) on synthetic run folders whose scores are computed by hand.

The main test builds one experiment folder and checks that every output gives the same numbers:
``run_scores`` (the wandb summary), ``run_metrics``, ``crl metrics --json``, ``crl compare --json``
and the report's tables.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from crl import metrics as M
from crl.cli import main

CHANGE_EVERY = 100


def _write_run(
    d: Path,
    regimes: list[tuple[int, int, int | None]],
    episodes: list[tuple[int, int, float]],
    evals: list[tuple[int, dict[int, float]]] = (),
    config: dict | None = None,
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
    if config is not None:
        (d / "config.yaml").write_text(yaml.safe_dump(config))
        (d / "status.json").write_text(json.dumps({"status": "finished", "global_step": 320, "steps": 300}))
    return d


def _cyclic_run(d: Path, agent: str, seed: int, offset: float) -> Path:
    """Regimes 0 1 0 1 of 100 steps, the last cut to 20 steps (short); an episode every 10 steps.

    Returns: first two episodes of a segment (its first 25 %) ``early``, the others ``late``:
    seg 0: 1 / 10, seg 1: 2 / 20, seg 2: 4 / 8 + seed, seg 3 (short): 100. Plus ``offset``.
    """
    levels = [(1.0, 10.0), (2.0, 20.0), (4.0, 8.0 + seed), (100.0, 100.0)]
    bounds = [(0, 0, 100), (1, 100, 200), (0, 200, 300), (1, 300, 320)]
    eps = []
    for g, (_, a, b) in enumerate(bounds):
        for s in range(a + 10, b + 1, 10):
            early, late = levels[g]
            eps.append((s, g, offset + (early if s - a <= 25 else late)))
    config = {
        "experiment": "exp",
        "env": {"name": "toy", "make_kwargs": {"schedule": {"every_n_steps": {"change_every": CHANGE_EVERY}}}},
        "agent": {"name": agent},
        "seed": seed,
        "steps": 300,
        "command": f"crl train --agent {agent} --seed {seed}",
    }
    return _write_run(d / f"toy__{agent}__s{seed}", bounds, eps, config=config)


def _expected(seed: int, offset: float) -> dict[str, float]:
    """The scores of :func:`_cyclic_run`, by hand (late fraction 25 %, segment 3 left out as short)."""
    late = [10.0 + offset, 20.0 + offset, 8.0 + seed + offset]
    return {
        # p_0(T) = late of segment 2, p_1(T) = late of segment 1 (segment 3 is short)
        "average_performance": (late[2] + late[1]) / 2,
        # regime 0 revisited: late of segment 0 minus early of segment 2 = 10 - 4
        "forgetting": 6.0,
        "forward_transfer": float("nan"),
        # slope of (0, 10), (1, 20), (2, 8 + seed): ((8 + seed) - 10) / 2
        "plasticity_score": (seed - 2) / 2,
        "segments_scored": 3.0,
        "segments_short": 1.0,
    }


@pytest.fixture
def experiment(tmp_path):
    root = tmp_path / "runs" / "exp"
    for seed in range(3):
        _cyclic_run(root, "a", seed, 0.0)
    _cyclic_run(root, "b", 0, 1.0)
    (root / "report").mkdir()  # what crl report leaves in an experiment folder
    (root / "report" / "index.html").write_text("<html></html>")
    return root


def _same(a: float | None, b: float) -> bool:
    if a is None or np.isnan(a):
        return bool(np.isnan(b))
    return a == pytest.approx(b)


def test_run_scores_match_the_hand_computed_values(experiment):
    for seed in range(3):
        got = M.run_scores(experiment / f"toy__a__s{seed}")
        want = _expected(seed, 0.0)
        assert set(got) == set(want)
        assert all(_same(got[k], v) for k, v in want.items()), (got, want)
    seg = M.segment_table(experiment / "toy__a__s0")
    assert seg["short"].tolist() == [False, False, False, True]
    assert seg["late_return"].tolist()[:3] == [10.0, 20.0, 8.0]
    assert seg["early_return"].tolist()[:3] == [1.0, 2.0, 4.0]
    # with the short segment counted, it would decide the score: the slope would be positive
    with_stub = M.run_scores(experiment / "toy__a__s0", min_fraction=0.1)
    assert with_stub["segments_short"] == 0 and with_stub["plasticity_score"] > 10


def test_all_outputs_agree(experiment, capsys):
    # crl metrics --json on the experiment folder: the report folder is skipped with a note
    assert main(["metrics", str(experiment), "--json"]) == 0
    out, err = capsys.readouterr()
    per_run = json.loads(out, parse_constant=_no_nan)
    assert f"skipped {experiment / 'report'}: not a run folder" in err
    assert len(per_run) == 4
    for path, res in per_run.items():
        seed, offset = int(path[-1]), (1.0 if "__b__" in path else 0.0)
        want = _expected(seed, offset)
        for k in M.SCORES:
            assert _same(res[k], want[k]), (path, k)
        assert res["short_segments"] == [3]
    # crl compare --json: IQM over seeds; one seed has no interval
    assert main(["compare", str(experiment), "--json", "--poi", "--reps", "200"]) == 0
    comp = json.loads(capsys.readouterr().out, parse_constant=_no_nan)
    groups = {g["agent"]: g for g in comp["groups"]}
    assert groups["a"]["seeds"] == 3 and groups["a"]["short_segments"] == 3
    a, b = groups["a"]["scores"], groups["b"]["scores"]
    assert a["average_performance"]["point"] == pytest.approx(14.5)  # IQM of 14, 14.5, 15 (3 values: the mean)
    assert a["plasticity_score"]["point"] == pytest.approx(-0.5)
    assert a["forgetting"] == {"point": 6.0, "low": 6.0, "high": 6.0, "n": 3}
    assert a["forward_transfer"] == {"point": None, "low": None, "high": None, "n": 0}
    assert b["average_performance"] == {"point": 15.0, "low": None, "high": None, "n": 1}
    assert comp["poi"][0]["P(X > Y)"] == "n/a (1 seed)" and comp["poi"][0]["p"] is None
    for run in comp["runs"]:
        want = _expected(run["seed"], 1.0 if run["agent"] == "b" else 0.0)
        assert all(_same(run["scores"][k], v) for k, v in want.items())
    # the report's tables: the same module, the same numbers
    from crl import report

    t = report.compare_tables(experiment, poi=True, reps=200)["summary"].set_index("agent")
    assert t.loc["a", "average_performance_iqm"] == pytest.approx(14.5)
    assert t.loc["a", "plasticity_score_iqm"] == pytest.approx(-0.5)
    assert t.loc["b", "average_performance"] == "15, CI n/a (1 seed)"
    assert t.loc["a", "forgetting"] == "6 [6, 6] (n=3)"
    # the report page and its summary.csv
    index = report.build_report(experiment, experiment.parent / "out", reps=200)
    page = index.read_text()
    assert "15, CI n/a (1 seed)" in page and "6 [6, 6] (n=3)" in page
    csv_summary = {r["agent"]: r for r in csv.DictReader((index.parent / "summary.csv").open())}
    assert float(csv_summary["a"]["average_performance_iqm"]) == pytest.approx(14.5)
    assert float(csv_summary["a"]["plasticity_score_iqm"]) == pytest.approx(-0.5)


def _no_nan(name: str):
    raise AssertionError(f"{name} in JSON output")


def test_compare_prints_one_seed_as_na(experiment, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["compare", str(experiment / "toy__b__s0"), "--poi"]) == 0
    out = capsys.readouterr().out
    assert "n/a (1 seed)" in out and "[15, 15]" not in out


def test_forgetting_and_average_performance_from_evaluations(tmp_path):
    # A (0-100) B (100-200): p_A at end of A = 8, at T = 5 -> forgetting 3; p_B(T) = 9, F_B = 0
    run = _write_run(
        tmp_path / "r",
        [(0, 0, 100), (1, 100, 200)],
        [(50, 0, 1.0), (100, 0, 8.0), (150, 1, 2.0), (200, 1, 9.0)],
        [(50, {0: 2.0}), (100, {0: 8.0}), (150, {0: 6.0, 1: 3.0}), (200, {0: 5.0, 1: 9.0})],
    )
    res = M.run_metrics(run)
    assert res["source"] == "eval"
    assert res["forgetting_by_regime"] == {0: pytest.approx(3.0), 1: pytest.approx(0.0)}
    assert res["forgetting"] == pytest.approx(1.5)
    assert res["average_performance"] == pytest.approx(7.0)


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
    assert res["forward_transfer_by_regime"] == {1: pytest.approx(1 / 3)}
    assert res["forward_transfer"] == pytest.approx(1 / 3)
    assert M.forward_transfer(1.0, 0.5) == 1.0 and M.forward_transfer(0.5, 0.5) == 0.0


def test_compare_scores_forward_transfer_against_reference_runs(tmp_path, capsys):
    """``crl compare --reference`` gives the same forward transfer as ``crl metrics --reference``."""
    from crl.cli import main

    _write_run(
        tmp_path / "exp" / "r",
        [(0, 0, 100), (1, 100, 200)],
        [(50, 0, 3.0), (100, 0, 3.0), (100, 1, 0.0), (150, 1, 10.0), (200, 1, 10.0)],
    )
    ref1 = _write_run(tmp_path / "ref1", [(1, 0, None)], [(0, 0, 0.0), (75, 0, 10.0), (100, 0, 10.0)])
    assert main(["compare", str(tmp_path / "exp"), "--reference", str(ref1), "--json", "--reps", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["groups"][0]["scores"]["forward_transfer"]["point"] == pytest.approx(1 / 3)
    assert out["runs"][0]["scores"]["forward_transfer"] == pytest.approx(1 / 3)
    assert main(["compare", str(tmp_path / "exp"), "--json", "--reps", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["groups"][0]["scores"]["forward_transfer"]["point"] is None


def test_normalised_auc_step_function():
    assert M.normalised_auc(np.array([0, 25, 50]), np.array([0.0, 4.0, 8.0]), 100, 0.0, 8.0) == pytest.approx(
        (0 * 25 + 0.5 * 25 + 1.0 * 50) / 100
    )


def test_intended_segment_length_without_a_schedule(tmp_path):
    # no config: the median of the closed segments before the last (100), so the 40-step end is short
    run = _write_run(tmp_path / "r", [(0, 0, 100), (1, 100, 200), (0, 200, 240)], [(50, 0, 1.0), (150, 1, 2.0)])
    assert M.intended_segment_length(run) == 100
    assert M.run_metrics(run)["short_segments"] == [2]


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(M.RunReadError, match="not a run folder"):
        M.run_metrics(tmp_path)


# ---------------------------------------------------------------- readers never crash


@pytest.fixture
def damaged(experiment):
    """The experiment plus one folder of each kind of damage."""
    good = experiment / "toy__a__s0"
    bad = {}
    for name in ("binary", "half", "empty_csv", "bad_yaml", "bad_regimes", "no_files"):
        d = experiment / f"toy__{name}__s0"
        d.mkdir()
        bad[name] = d
        if name != "no_files":
            (d / "config.yaml").write_text((good / "config.yaml").read_text())
    (bad["binary"] / "metrics.csv").write_bytes(b"global_step,charts/episodic_return\n\x00\xff\xfe\x93garbage\n")
    text = (good / "metrics.csv").read_text()
    (bad["half"] / "metrics.csv").write_text(text[: len(text) // 2 + 3])  # cut in the middle of a row
    (bad["half"] / "regimes.csv").write_text((good / "regimes.csv").read_text())
    (bad["empty_csv"] / "metrics.csv").write_text("")
    (bad["bad_yaml"] / "config.yaml").write_text("env: [unclosed\n  agent: {")
    (bad["bad_yaml"] / "metrics.csv").write_text(text)
    (bad["bad_regimes"] / "metrics.csv").write_text(text)
    (bad["bad_regimes"] / "regimes.csv").write_text("segment,regime\n0,0\n")
    return experiment, bad


def test_readers_give_one_line_per_bad_folder_and_go_on(damaged):
    root, bad = damaged
    runs, notes = M.find_runs(root)
    names = {r.path.name for r in runs}
    assert {"toy__a__s0", "toy__a__s1", "toy__a__s2", "toy__b__s0", "toy__half__s0"} <= names
    assert "toy__binary__s0" not in names and "toy__bad_yaml__s0" not in names
    text = "\n".join(notes)
    assert f"skipped {bad['binary']}: metrics.csv is not text (binary byte at offset" in text
    assert f"skipped {bad['bad_yaml']}: config.yaml is not valid YAML (line" in text
    assert f"skipped {bad['bad_regimes']}: regimes.csv lacks column(s) start_step, end_step" in text
    assert f"skipped {bad['no_files']}: not a run folder" in text
    assert f"{bad['half'] / 'metrics.csv'}: left out a half-written last row" in text
    assert all("\n" not in n for n in notes)


def test_report_on_damaged_folders(damaged, capsys):
    from crl import report

    root, bad = damaged
    good = root / "toy__a__s1" / "metrics.csv"
    good.write_text(good.read_text().replace("20.0", "2x\u00e90", 1) + good.read_text())  # a bad cell, header twice
    index = report.build_report(root, root.parent / "out", reps=50)
    err = capsys.readouterr().err
    assert index.is_file() and "Traceback" not in err
    assert sum(str(bad["binary"]) in line for line in err.splitlines()) == 1


@pytest.mark.parametrize("command", ["metrics", "compare"])
def test_cli_on_damaged_folders(damaged, command, capsys):
    root, bad = damaged
    assert main([command, str(root), "--json", "--reps", "50"][: 3 if command == "metrics" else 5]) == 0
    out, err = capsys.readouterr()
    json.loads(out, parse_constant=_no_nan)
    assert "Traceback" not in err
    for name in ("binary", "bad_yaml", "no_files"):
        assert sum(str(bad[name]) in line for line in err.splitlines()) == 1, name


def test_nothing_to_compare_is_exit_2(tmp_path, capsys):
    import subprocess
    import sys

    (tmp_path / "empty").mkdir()
    for cmd in (["compare", str(tmp_path / "empty")], ["metrics", str(tmp_path / "empty")]):
        res = subprocess.run([sys.executable, "-m", "crl", *cmd], capture_output=True, text=True)
        assert res.returncode == 2, res
        assert res.stderr.strip().startswith(f"crl: error: {tmp_path / 'empty'}: not a run folder"), res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    res = subprocess.run(
        [sys.executable, "-m", "crl", "compare", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert res.returncode == 2 and "no such folder" in res.stderr


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
    assert set(res["forward_transfer_by_regime"]) == {0, 1}


def test_paired_differences_match_the_hand_computed_ones(tmp_path, capsys):
    """Agent b is agent a plus a per-seed offset: the paired difference is the mean offset, and only
    seeds both agents have are paired."""
    root = tmp_path / "runs" / "exp"
    offsets = {0: 1.0, 1: 3.0, 2: 2.0}
    for seed, off in offsets.items():
        _cyclic_run(root, "a", seed, 0.0)
        _cyclic_run(root, "b", seed, off)
    _cyclic_run(root, "a", 7, 0.0)  # no partner: left out
    runs, _ = M.find_runs(root)
    t = M.paired_table(runs, "a", reps=500).set_index("score")
    avg = t.loc["average_performance"]
    assert (avg["agent"], avg["base"], avg["n"]) == ("b", "a", 3)
    assert avg["mean"] == pytest.approx(2.0) and 1.0 <= avg["lo"] <= 2.0 <= avg["hi"] <= 3.0
    assert avg["wins"].startswith("1 [") and avg["wins"].endswith("(n=3)")
    forget = t.loc["forgetting"]  # the offset cancels in forgetting: no difference, no wins
    assert forget["mean"] == 0.0 and forget["wins"].startswith("0 [")
    assert M.paired_table(runs, "nobody").empty
    assert main(["compare", str(root), "--paired", "a", "--json", "--reps", "200"]) == 0
    paired = json.loads(capsys.readouterr().out)["paired"]
    assert {(p["agent"], p["score"]) for p in paired} >= {("b", "average_performance"), ("b", "forgetting")}
    assert main(["compare", str(root), "--paired", "c"]) == 2
    assert "--paired: unknown agent 'c'; valid: a, b" in capsys.readouterr().err


def test_the_share_of_seeds_at_the_floor_per_segment(experiment, capsys):
    """Late returns of agent a (seeds 0-2) by segment: 10, 20, 8 + seed; segment 3 is short."""
    runs, _ = M.find_runs(experiment)
    t = M.floor_table(runs, floor=9.5)
    a = t[t["agent"] == "a"].set_index("segment")
    assert list(a.index) == [0, 1, 2] and list(a["regime"]) == [0, 1, 0]
    assert list(a["hits"]) == [0, 0, 2] and list(a["n"]) == [3, 3, 3]  # 8 and 9 are below 9.5, 10 is not
    assert a.loc[2, "share"] == pytest.approx(2 / 3) and 0.0 < a.loc[2, "lo"] < 2 / 3 < a.loc[2, "hi"] < 1.0
    assert a.loc[0, "at_floor"].startswith("0 [0, ")
    assert main(["compare", str(experiment), "--floor", "9.5", "--json", "--reps", "100"]) == 0
    floor = json.loads(capsys.readouterr().out)["floor"]
    assert {(f["agent"], f["segment"], f["hits"]) for f in floor} >= {("a", 2, 2), ("b", 2, 1), ("b", 0, 0)}
