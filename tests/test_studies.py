"""``crl results build``: the Results' tables and figures from committed evidence (crl.studies)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from crl.cli import main
from crl.errors import ConfigError
from crl.stats import paired_difference
from crl.studies import build, find_studies, load_study, study_blocks
from tests.conftest import ROOT
from tests.report.test_report import make_run

STUDY = {
    "title": "t",
    "commands": "crl sweep experiments/quickstart.yaml\n",
    "seeds": 4,
    "steps": 40000,
    "cost": "none",
    "late_fraction": 0.25,
    "reps": 200,
}


def test_the_committed_results_are_what_the_evidence_gives(capsys):
    """The default suite's guard: every generated block of docs/results.md equals what its study's
    evidence gives today, and every figure draws."""
    assert main(["results", "build", "--check", str(ROOT / "docs")]) == 0, capsys.readouterr().err
    assert {s.name for s in find_studies(ROOT / "docs")} >= {"forgetting", "probe-bit-flipping"}


@pytest.fixture
def docs(tmp_path):
    """A docs folder with a runs study (4 seeds of ppo falling by 10 a segment, cbp flat) and a probe study."""
    runs = tmp_path / "docs" / "results" / "toy" / "runs"
    for seed in range(4):
        make_run(runs, "ppo", seed, level=100.0, drop=10.0)
        make_run(runs, "cbp", seed, level=100.0, drop=0.0)
    tables = {"compare": {"type": "compare", "scores": ["average_performance"]}}
    tables |= {"paired": {"type": "paired", "base": "ppo"}, "floor": {"type": "floor", "floor": 80}}
    tables |= {"late": {"type": "per-regime", "floor": 80}, "seeds": {"type": "per-seed"}}
    figures = {"returns": {"type": "returns"}, "bars": {"type": "per-regime"}}
    figures |= {"dormant": {"type": "columns", "columns": ["plasticity/pi/0/dormant_fraction"], "log": True}}
    spec = STUDY | {"runs": "runs", "order": ["ppo"], "tables": tables, "figures": figures}
    (runs.parent / "study.yaml").write_text(yaml.safe_dump(spec))
    probe = tmp_path / "docs" / "results" / "pr"
    probe.mkdir()
    rng = np.random.default_rng(0)
    bp = rng.uniform(0.5, 1.0, (5, 10))
    methods = {"bp": bp, "cbp": bp - 0.1 * np.arange(1, 6)[:, None]}
    res = {"task": "bit-flipping", "seeds": 5, "bin_size": 100, "step_size": 0.01, "change_every": 100, "methods": {}}
    for m, per in methods.items():
        bins = [{"iqm": float(np.median(c)), "lo": float(c.min()), "hi": float(c.max())} for c in per.T]
        res["methods"][m] = {"bins": bins, "seeds": per.tolist()}
    (probe / "res.json").write_text(json.dumps(res))
    tables = {"bins": {"type": "probe-bins", "bins": [1, 10], "ratio": True}, "paired": {"type": "probe-paired"}}
    tables |= {"rise": {"type": "probe-rise"}}
    spec = STUDY | {"late_fraction": 0.2, "probe": "res.json", "tables": tables, "figures": {"c": {"type": "probe"}}}
    (probe / "study.yaml").write_text(yaml.safe_dump(spec))
    ids = [
        "toy/about",
        "toy/compare",
        "toy/paired",
        "toy/floor",
        "toy/late",
        "toy/seeds",
        "toy/returns",
        "toy/bars",
        "toy/dormant",
    ]
    ids += ["pr/bins", "pr/paired", "pr/rise", "pr/c"]
    page = "# Results\n\nprose stays\n" + "".join(
        f"\n<!-- crl-results {i} -->\nold\n<!-- /crl-results -->\n" for i in ids
    )
    (tmp_path / "docs" / "results.md").write_text(page)
    return tmp_path / "docs"


def test_build_writes_tables_and_figures_between_markers(docs):
    lines = []
    assert build(docs, check=True, log=lines.append) == 1  # nothing generated yet
    assert any("toy/compare differs" in x for x in lines) and any("returns.png: missing" in x for x in lines)
    assert build(docs, log=lines.append) == 0
    page = (docs / "results.md").read_text()
    assert page.startswith("# Results\n\nprose stays\n") and "\nold\n" not in page
    assert (docs / "results" / "toy" / "returns.png").is_file() and (docs / "results" / "pr" / "c.png").is_file()
    assert "![t: returns](results/toy/returns.png)" in page
    assert "```bash\ncrl sweep experiments/quickstart.yaml\n```" in page
    assert build(docs, check=True, log=lines.append) == 0


def test_tables_have_the_known_numbers(docs):
    blocks = study_blocks(load_study(docs / "results" / "toy"))
    compare = blocks["toy/compare"].splitlines()
    # average performance = the late return of the last visit of each regime, averaged: ppo 100 - 25 + seed
    # (segments 2 and 3 at 80 and 70), cbp 100 + seed; IQM over seeds 0..3 adds 1.5
    assert compare[2].startswith("| ant | ppo |") and "| 76.5 [" in compare[2]
    assert compare[3].startswith("| ant | cbp |") and "| 102 [" in compare[3]
    assert "| ant | cbp | 25 [25, 25] | 4/4 [0.51, 1.00] |" in blocks["toy/paired"]
    floor = blocks["toy/floor"].splitlines()  # ppo below 80 from segment 3 (70 + seed)
    assert floor[2] == "| ant | ppo | 0/4 [0.00, 0.49] | 0/4 [0.00, 0.49] | 0/4 [0.00, 0.49] | 4/4 [0.51, 1.00] |"
    assert "| ant | ppo | 3 | 83 | 73 | 78 |" in blocks["toy/seeds"]  # seed 3: regime 0 ends at 80 + 3, 1 at 70 + 3
    assert "| ant | ppo | 102 [" in blocks["toy/late"] and "| 71.5 [70, 73] (4 below 80) |" in blocks["toy/late"]


def test_probe_tables_pair_seeds(docs):
    blocks = study_blocks(load_study(docs / "results" / "pr"))
    res = json.loads((docs / "results" / "pr" / "res.json").read_text())
    late = {m: np.asarray(v["seeds"])[:, -2:].mean(axis=1) for m, v in res["methods"].items()}
    est = paired_difference(late["cbp"], late["bp"], reps=200)
    row = f"| cbp | {est.point:.3g} [{est.low:.3g}, {est.high:.3g}] (n=5) | 5/5 [0.57, 1.00] |"
    assert row in blocks["pr/paired"] and "last 2 bins (20%)" in blocks["pr/paired"]
    assert blocks["pr/bins"].splitlines()[0] == "| method | bin 1 | bin 10 | last 20% / first 20% of bins |"


def test_probe_rise_is_late_minus_early_per_seed(docs):
    blocks = study_blocks(load_study(docs / "results" / "pr"))
    per = np.asarray(json.loads((docs / "results" / "pr" / "res.json").read_text())["methods"]["cbp"]["seeds"])
    late, early = per[:, -2:].mean(axis=1), per[:, :2].mean(axis=1)  # 20 % of 10 bins at each end
    est = paired_difference(late, early, reps=200)
    rose = int(np.sum(late > early))
    row = f"| cbp | {est.point:.3g} [{est.low:.3g}, {est.high:.3g}] (n=5) | {rose}/5 ["
    assert row in blocks["pr/rise"] and "last 2 bins - first 2 bins" in blocks["pr/rise"]


def test_check_names_what_differs(docs, capsys):
    build(docs, log=lambda s: None)
    page = docs / "results.md"
    text = page.read_text()
    page.write_text(text.replace("<!-- crl-results toy/floor -->\n| env", "<!-- crl-results toy/floor -->\n| Env"))
    assert main(["results", "build", "--check", str(docs)]) == 1
    assert capsys.readouterr().err.strip() == f"{page}: toy/floor differs from what the evidence gives"
    page.write_text(text.replace("toy/late -->", "toy/nope -->"))
    assert main(["results", "build", "--check", str(docs)]) == 1
    err = capsys.readouterr().err
    assert "marker toy/nope names no study's table or figure" in err and "no marker for toy/late" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"late_fraction": 0}, "late_fraction must be a number in (0, 1]"),
        ({"colour": 1}, "unknown field(s) colour; valid: "),
        ({"tables": {"x": {"type": "nope"}}}, "unknown table type in"),
        ({"tables": {"x": {"type": "probe-bins"}}}, "type probe-bins reads probe"),
        ({"probe": "x.json"}, "either runs: FOLDER or probe: FILE.json"),
    ],
)
def test_bad_study_is_one_line(docs, change, message, capsys):
    path = docs / "results" / "toy" / "study.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()) | change))
    with pytest.raises(ConfigError, match=None) as e:
        load_study(path.parent)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert main(["results", "build", str(docs)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_no_results_page(tmp_path, capsys):
    assert main(["results", "build", str(tmp_path)]) == 2
    assert "results.md: no such file" in capsys.readouterr().err


def test_studies_are_shipped_small():
    """Evidence stays small: a study folder under 10 MB (cut run folders, probe results, figures)."""
    for study in find_studies(ROOT / "docs"):
        size = sum(p.stat().st_size for p in study.path.rglob("*") if p.is_file())
        assert size < 10e6, f"{study.path}: {size / 1e6:.1f} MB; cut long runs with crl results cut --gzip"
