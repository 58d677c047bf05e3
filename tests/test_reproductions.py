"""The reproduction sweep files expand to what they claim, and the figures of docs/results.md
are what the commands shown beside them produce."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from crl.sweep import expand, load_sweep

ROOT = Path(__file__).resolve().parents[1]
RESULTS = (ROOT / "docs" / "results.md").read_text()
SECTIONS = [s for s in RESULTS.split("\n## ")[1:] if "```bash" in s and "crl sweep" in s]
PROBES = [s for s in RESULTS.split("\n## ")[1:] if "```bash\ncrl probe" in s]


def _images(section: str, studies: bool = False) -> list[str]:
    """The section's figures, as paths from the repository root (the page links them from docs/);
    with ``studies``, also those a study draws in its folder (docs/results/<study>/, crl results build)."""
    folder = r"(?:[\w.-]+/)?" if studies else ""
    return [f"docs/{image}" for image in re.findall(rf"\]\((results/{folder}[\w.-]+\.png)\)", section)]


#: File stem -> (agents, envs, seeds, runs) each file claims in its description.
CLAIMS = {
    "repro-slippery-ant-1m": ({"ppo", "ppo-l2", "ppo-cbp", "ppo-proper-adam"}, {"slippery-ant"}),
    "repro-level-shift-cartpole": ({"ppo", "ppo-cbp", "ppo-proper-adam", "ppo-trac"}, {"level-shift-cartpole"}),
    "slippery-ant-paper": ({"ppo", "ppo-proper-adam", "ppo-l2", "ppo-cbp"}, {"slippery-ant"}),
    "level-shift-classic": ({"ppo", "ppo-trac", "ppo-cbp"}, {"level-shift-cartpole", "level-shift-acrobot"}),
}
_WORDS = {"one": 1, "two": 2}


@pytest.mark.parametrize("stem", sorted(CLAIMS))
def test_sweep_file_expands_to_the_runs_it_claims(stem):
    path = ROOT / "experiments" / f"{stem}.yaml"
    spec = load_sweep(path)
    runs = expand(spec, run_dir="/tmp/x")
    agents, envs = CLAIMS[stem]
    assert {r.agent for r in runs} == agents and {r.env for r in runs} == envs
    assert len(runs) == len(agents) * len(envs) * len(spec.seed_list)
    text = " ".join(spec.description.split())
    seeds = re.search(r"(\d+|one|two) seeds?", text)
    assert seeds, "the description says how many seeds"
    n = _WORDS.get(seeds.group(1)) or int(seeds.group(1))
    assert n == len(spec.seed_list)
    said = {f"{spec.steps / 1e6:g}M steps", f"{spec.steps / 1e3:g}k steps"}
    assert any(s in text for s in said), f"the description gives the run length ({' or '.join(sorted(said))})"
    assert "Measured cost" in text


def test_every_results_section_shows_its_commands_and_figures():
    assert len(SECTIONS) >= 2
    for section in SECTIONS:
        if "<!-- crl-results " in section and "crl results build" in section:
            continue  # a study's section: crl results build --check (tests/test_studies.py) checks it
        sweep = re.search(r"crl sweep experiments/([\w-]+)\.yaml", section)
        report = re.search(r"crl report runs/([\w-]+)( --bin-steps \d+)?", section)
        assert sweep and report
        assert report.group(1) == load_sweep(ROOT / f"experiments/{sweep.group(1)}.yaml").experiment
        for image in _images(section):
            assert (ROOT / image).is_file(), image
            stem = Path(image).stem
            assert stem.startswith(sweep.group(1).removeprefix("repro-")), image
            assert stem.rsplit("-", 1)[-1] in ("returns", "regime", "diagnostics"), image
        table = re.findall(r"^\| (ppo[\w-]*|sac[\w-]*) \|", section, flags=re.M)
        assert set(table) <= set(load_sweep(ROOT / f"experiments/{sweep.group(1)}.yaml").agents)


def test_the_results_have_probe_sections():
    assert len(PROBES) >= 2  # bit-flipping and permuted digits


PROBE_COMMANDS = re.findall(r"^crl probe --task ([\w-]+) .*--out (\S+)$", RESULTS, flags=re.M)


@pytest.mark.parametrize(("task", "out"), PROBE_COMMANDS, ids=[o for _, o in PROBE_COMMANDS])
def test_each_probe_command_has_its_figure_and_results_on_the_page(task, out):
    """The figure and results.json the shown ``crl probe`` command writes are committed and linked
    (their tables: ``crl results build --check``, tests/test_studies.py)."""
    figure, results = f"{out}/probe-{task}.png", f"{out}/probe-{task}.json"
    assert (ROOT / figure).is_file() and (ROOT / results).is_file()
    assert f"]({figure.removeprefix('docs/')})" in RESULTS and f"]({results.removeprefix('docs/')})" in RESULTS
    assert json.loads((ROOT / results).read_text())["task"] == task


def test_the_shown_commands_write_the_study(tmp_path, crl_cli, monkeypatch):
    """The TRAC study's commands, as docs/results.md shows them, at a tiny size (one seed per
    agent): the sweep (the real command line, its runs in processes of their own), the evidence
    cut and ``crl results build`` (their entry point in this process, from the same folder) write
    the study's tables and figures."""
    from crl.cli import main

    study = yaml.safe_load((ROOT / "docs/results/trac-paper/study.yaml").read_text())
    data = yaml.safe_load((ROOT / "experiments/trac-paper-cartpole-small.yaml").read_text())
    data.update(steps=1536, seeds=1, env_kwargs={"change_every": 512, "episode_steps": 100}, report=False)
    data["agent_kwargs"] = {"n_steps": 256, "batch_size": 64, "n_epochs": 1}
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments/trac-paper-cartpole-small.yaml").write_text(yaml.safe_dump(data))
    for folder in ("envs", "agents"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "docs/results/trac-paper").mkdir(parents=True)
    markers = [f"<!-- crl-results trac-paper/{name} -->\n<!-- /crl-results -->" for name in ("late", "optimizer")]
    (tmp_path / "docs/results.md").write_text("# Results\n\n" + "\n\n".join(markers) + "\n")
    study["tables"] = {"late": study["tables"]["late"]}
    study["figures"] = {"optimizer": study["figures"]["optimizer"]}
    (tmp_path / "docs/results/trac-paper/study.yaml").write_text(yaml.safe_dump(study))
    monkeypatch.chdir(tmp_path)
    for line in study["commands"].strip().splitlines():
        args = line.replace("'", "").split()[1:]
        if args[0] == "sweep":
            crl_cli(*args, "--no-progress", cwd=tmp_path, check=True, timeout=600)
        else:
            assert main(args) == 0, args
    page = (tmp_path / "docs/results.md").read_text()
    assert "| level-shift-cartpole | PPO + TRAC" in page
    assert (tmp_path / "docs/results/trac-paper/optimizer.png").is_file()
