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


@pytest.mark.parametrize("section", PROBES, ids=lambda s: s.split("\n", 1)[0][:40])
def test_the_probe_section_shows_the_figure_its_command_writes(section):
    command = re.search(r"crl probe --task ([\w-]+) .*--out (\S+)", section)
    assert command
    (image,) = _images(section, studies=True)
    assert image == f"{command.group(2)}/probe-{command.group(1)}.png" and (ROOT / image).is_file()
    results = json.loads((ROOT / image).with_suffix(".json").read_text())
    table = dict(re.findall(r"^\| ([\w-]+) [^|]*\|.* \| ([\d.]+) \|$", section, flags=re.M))
    from crl.probe import early_late

    assert set(table) == set(results["methods"])
    for method, ratio in table.items():  # the table's last column is computed from the saved results
        early, late = early_late(results, method)
        assert float(ratio) == pytest.approx(late / early, abs=0.006), method


def test_the_shown_commands_write_the_figures(tmp_path, crl_cli):
    """Run the CartPole reproduction's sweep file at a tiny size, then the exact report command
    of docs/results.md: it writes the two figures the page shows."""
    section = next(s for s in SECTIONS if "repro-level-shift-cartpole" in s)
    data = yaml.safe_load((ROOT / "experiments/repro-level-shift-cartpole.yaml").read_text())
    data.update(steps=1024, seeds=1, agents=data["agents"][:2], env_kwargs={"change_every": 400}, report=False)
    data["agent_kwargs"] = {"n_steps": 256, "batch_size": 64, "n_epochs": 1}
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments/repro-level-shift-cartpole.yaml").write_text(yaml.safe_dump(data))
    shutil.copytree(ROOT / "envs", tmp_path / "envs")
    shutil.copytree(ROOT / "agents", tmp_path / "agents")
    for line in re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1).strip().splitlines():
        args = line.split()[1:]
        if args[0] == "sweep":
            args += ["--wandb", "disabled", "--no-progress", "--workers", "2"]
        crl_cli(*args, cwd=tmp_path, check=True, timeout=600)
    out = tmp_path / "runs/repro-level-shift-cartpole/report"
    assert (out / "returns.png").is_file() and (out / "per_regime.png").is_file()
