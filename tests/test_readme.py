"""The README's examples run, so they cannot go stale."""

from __future__ import annotations

import re

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    nxt = README.find("\n## ", start + 3)
    return README[start : nxt if nxt > 0 else None]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_python_examples_of_the_drift_section_run():
    for code in _blocks(_section("Drifting environments"), "python"):
        exec(compile(code, "README.md", "exec"), {})


def test_yaml_example_registers_and_trains_through_crl_train(tmp_path, crl_cli):
    (yaml_block,) = _blocks(_section("Drifting environments"), "yaml")
    (tmp_path / "my-catalog" / "envs").mkdir(parents=True)
    (tmp_path / "my-catalog" / "envs" / "icy-hopper.yaml").write_text(yaml_block)
    (cmd,) = [b for b in _blocks(_section("Drifting environments"), "bash") if "icy-hopper" in b]
    args = cmd.split()[1:]
    args[args.index("--steps") + 1] = "512"
    proc = crl_cli(
        *args,
        "--agent-kwargs",
        "n_steps=256",
        "batch_size=64",
        "n_epochs=1",
        "--env-kwargs",
        "change_every=200",
        "--wandb",
        "disabled",
        "--run-dir",
        str(tmp_path / "runs"),
        "--no-progress",
        cwd=tmp_path,
        check=True,
    )
    run = tmp_path / "runs" / "default" / "icy-hopper__ppo__s0"
    assert "finished" in proc.stdout and (run / "regimes.csv").read_text().count("\n") >= 2
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "regime/friction" in header and "regime/mass_scale" in header


def test_intervention_example_runs():
    (code,) = _blocks(_section("Plasticity interventions"), "python")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["interventions"].interventions[0].clipped > 0
