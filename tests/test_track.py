"""wandb as the dashboard: options, groups, config, the offline history of resumed runs."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import random
import shlex
import shutil
from pathlib import Path

import pytest
import wandb

from crl.cli import build_parser
from crl.cli.train import config_of
from crl.dashboard import summary_scores
from crl.errors import ConfigError
from crl.report import build_report
from crl.spec import RunConfig, check_run_config
from crl.sweep import expand, load_sweep, train_command
from crl.track import Tracker, default_group, wandb_config
from crl.wandb_offline import OfflineRun, offline_runs, read_offline_run
from tests._resume import kill_at_random, train_args
from tests.conftest import run_crl


def test_train_options_reach_the_run_config():
    a = build_parser().parse_args(
        shlex.split(
            "train --env slippery-ant --agent ppo --wandb-project lab --wandb-entity me"
            " --wandb-group ablation --tags long-run 'friction 2'"
        )
    )
    cfg = config_of(a)
    assert (cfg.wandb_project, cfg.wandb_entity, cfg.wandb_group) == ("lab", "me", "ablation")
    assert cfg.tags == ["long-run", "friction 2"]
    check_run_config(cfg)
    plain = config_of(build_parser().parse_args(["train", "--env", "x", "--agent", "ppo"]))
    assert (plain.wandb_group, plain.tags) == (None, [])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("tags", [""], "tags: each tag must be a string of 1 to 64 characters"),
        ("tags", ["x" * 65], "tags: each tag must be a string of 1 to 64 characters"),
        ("tags", "a,b", "tags must be a list of strings"),
        ("wandb_project", "a/b", "wandb_project must be a string of 1 to 128 characters without /"),
        ("wandb_project", "", "wandb_project must be a string"),
        ("wandb_entity", "team?", "wandb_entity must be a string"),
        ("wandb_group", " ", "wandb_group must be a string of 1 to 128 characters, got ' '"),
    ],
)
def test_bad_wandb_names_are_one_line_errors(field, value, message):
    with pytest.raises(ConfigError, match="^" + message.replace("?", r"\?")) as e:
        check_run_config(RunConfig(env="x", agent="ppo", **{field: value}))
    assert "\n" not in str(e.value)


def test_sweep_file_sets_project_group_and_tags(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text(
        "description: d\nenvs: [CartPole-v1]\nagents: [ppo]\nseeds: 2\nsteps: 100\n"
        "run: {wandb_project: lab, wandb_group: g1, tags: [a, b]}\n"
    )
    runs = expand(load_sweep(f), str(tmp_path / "runs"))
    assert [(c.wandb_project, c.wandb_group, c.tags) for c in runs] == [("lab", "g1", ["a", "b"])] * 2
    # the recorded command gives the same run again
    again = config_of(build_parser().parse_args(shlex.split(train_command(runs[1]))[1:]))
    assert again == runs[1].__class__(**{**runs[1].__dict__, "command": ""})


def test_default_group_holds_the_experiment():
    assert default_group("quickstart", "slippery-ant", "ppo") != default_group("paper", "slippery-ant", "ppo")


def test_wandb_config_has_every_drift_and_intervention_setting():
    cfg = wandb_config(
        {
            "agent": {"interventions": [{"cbp": {"maturity": 100}}], "network": {"pi": [64, 64]}},
            "env": {"make_kwargs": {"drifts": [{"gravity": {"scale": 2}}, {"mass": {}}], "schedule": {"cyclic": {}}}},
        }
    )
    assert cfg["agent.interventions"] == ["cbp"]
    assert cfg["agent.interventions.cbp.maturity"] == 100
    assert cfg["agent.network.pi"] == [64, 64]
    assert cfg["env.make_kwargs.drifts"] == ["gravity", "mass"]
    assert cfg["env.make_kwargs.drifts.gravity.scale"] == 2
    assert cfg["env.make_kwargs.schedule.cyclic"] == {}


# -- the offline history of a resumed run -------------------------------------------------------


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def same_value(cell: str, value: object) -> bool:
    x = float(cell)
    return (math.isnan(x) and math.isnan(float(value))) or x == float(value)


def assert_history_is_the_csv(run_dir: Path) -> OfflineRun:
    """One offline run whose history is metrics.csv row for row (step i = row i, every value equal)."""
    folders = offline_runs(run_dir)
    assert len(folders) == 1, folders
    run = read_offline_run(folders[0])
    rows = csv_rows(run_dir / "metrics.csv")
    assert len(run.history) == len(rows) > 0
    for i, (row, logged) in enumerate(zip(rows, run.history, strict=True)):
        assert logged["_step"] == i
        cells = {k: v for k, v in row.items() if v != ""}
        assert set(cells) == {k for k in logged if not k.startswith("_")}, i
        assert all(same_value(v, logged[k]) for k, v in cells.items()), (i, cells, logged)
    return run


def test_tracker_resume_replaces_the_discarded_rows_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    init = {"project": "crl-test", "id": "resume0test", "group": "g"}
    first = Tracker(tmp_path, wandb_mode="offline", wandb_init=init)
    first.restore({"columns": ["global_step"], "rows": 0})
    for step in range(5):
        first.log(10 * step, {"charts/episodic_return": step + 0.5})
        if step == 2:
            checkpoint = first.state()  # rows 3 and 4 come after it: the resume discards them
    first.log(50, {"losses/value_loss": float("nan")})
    first.close("interrupted")
    wandb.teardown()  # wandb-core writes the .wandb file asynchronously: its shutdown flushes it
    (old,) = offline_runs(tmp_path)
    assert len(read_offline_run(old).history) == 6

    second = Tracker(tmp_path, wandb_mode="offline", wandb_init=init)
    second.restore(checkpoint)
    second.log(30, {"charts/episodic_return": 7.0})
    second.log(40, {"losses/value_loss": 0.25})
    second.close("finished")
    wandb.teardown()
    run = assert_history_is_the_csv(tmp_path)
    assert [r["global_step"] for r in run.history] == [0, 10, 20, 30, 40]
    assert run.run_id == "resume0test" and run.exit_code == 0
    assert not old.exists()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """An experiment ``kill`` with one offline run killed at random (SIGKILL) and resumed to the end."""
    root = tmp_path_factory.mktemp("wandb")
    extra = ("--wandb", "offline", "--experiment", "kill", "--tags", "resume-test", "--diagnostics-every", "1024")
    cmd = train_args(root, 2048, *extra, "--eval-every", "1024", "--eval-episodes", "1")
    run_dir = root / "kill" / "slippery-ant__ppo__s3"
    rng = random.Random(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WANDB_MODE", raising=False)  # the child processes inherit it
        for _ in range(3):
            kill_at_random(cmd, run_dir, rng, steps=(600, 1500))
            if json.loads((run_dir / "status.json").read_text())["status"] == "running":
                break
            shutil.rmtree(run_dir)  # finished before the kill: try again
        assert json.loads((run_dir / "status.json").read_text())["status"] == "running"
        (killed,) = offline_runs(run_dir)  # its .wandb file may end anywhere: wandb writes it asynchronously
        run_crl(*cmd, check=True)
    return root, run_dir, killed


def test_killed_run_resumed_offline_gives_one_history_with_the_csv_rows(resumed):
    _, run_dir, killed = resumed
    run = assert_history_is_the_csv(run_dir)
    assert killed.name.endswith(f"-{run.run_id}") and not killed.exists()
    assert run.group == "kill__slippery-ant__ppo" and "resume-test" in run.tags and run.job_type == "train"
    assert run.config["env.make_kwargs.schedule.every_n_steps.change_every"] == 700
    assert run.config["agent.hyperparameters.n_steps"] == 256
    assert run.config["env.make_kwargs.drifts"] == ["friction"] and run.config["env.base"] == "Ant-v5"


def test_run_summary_holds_the_regimes_table_and_the_scores(resumed):
    _, run_dir, _ = resumed
    (folder,) = offline_runs(run_dir)
    run = read_offline_run(folder)
    assert run.summary["status"] == "finished" and run.exit_code == 0
    regimes = csv_rows(run_dir / "regimes.csv")
    assert run.summary["regimes"]["_type"] == "table-file" and run.summary["regimes"]["nrows"] == len(regimes)
    table = json.loads((folder / "files" / run.summary["regimes"]["path"]).read_text())
    assert table["columns"] == list(regimes[0])
    assert [str(r[0]) for r in table["data"]] == [r["segment"] for r in regimes]
    scores = summary_scores(run_dir)
    assert "scores/average_performance" in scores and scores.items() <= run.summary.items()


def test_report_run_is_grouped_tagged_and_configured(resumed, tmp_path):
    root, _, _ = resumed
    build_report(root / "kill", tmp_path / "report", wandb=True, wandb_mode="offline", reps=50)
    wandb.teardown()  # flushes the offline file (written asynchronously)
    (folder,) = offline_runs(tmp_path / "report")
    report = read_offline_run(folder)
    assert (report.group, report.job_type) == ("kill", "report")
    assert report.tags == ["report", "kill", "slippery-ant", "ppo"]
    assert report.config["seeds"] == [3] and report.config["runs"] == 1 and report.config["agents"] == ["ppo"]


def test_dashboard_spec_has_the_regime_aware_panels(resumed, tmp_path, crl_cli):
    root, _, _ = resumed
    out = tmp_path / "spec.json"
    proc = crl_cli("dashboard", str(root / "kill"), "--spec", str(out), check=True)
    assert str(out) in proc.stdout
    spec = json.loads(out.read_text())
    assert spec["runset"] == {"experiment": ["kill"], "job_type": "train", "groupby": "wandb.group"}
    sections = {s["name"]: s["panels"] for s in spec["sections"]}
    returns = sections["Return across regime changes"]
    assert returns[0]["y"] == ["charts/episodic_return"] and returns[1]["y"] == ["regime/index", "regime/friction"]
    assert all(p["x"] == "global_step" for p in returns)
    assert sections["Evaluation on every regime"][0]["y"][0] == "eval/regime_0/return"
    for net in ("policy", "value"):
        panels = {p["title"]: p["y"] for p in sections[f"Diagnostics: {net}"]}
        assert panels[f"{net}: effective_rank"] == [
            f"plasticity/{net}/0/effective_rank",
            f"plasticity/{net}/1/effective_rank",
        ]
    assert {"scores/average_performance"} <= {m for p in sections["Continual-learning scores"] for m in p["metrics"]}


@pytest.mark.parametrize(
    "env, message",
    [
        ({"WANDB_MODE": "offline"}, "crl dashboard needs wandb online, but WANDB_MODE=offline"),
        ({"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": "/nonexistent"}, "crl dashboard needs a wandb login"),
        ({"WANDB_MODE": None, "WANDB_API_KEY": "x" * 40}, "crl dashboard needs the wandb-workspaces package"),
    ],
)
def test_dashboard_refuses_in_one_line_when_it_cannot_reach_wandb(resumed, crl_cli, env, message):
    if "package" in message and importlib.util.find_spec("wandb_workspaces"):
        pytest.skip("wandb-workspaces is installed here (it is not a crl dependency)")
    root, _, _ = resumed
    proc = crl_cli("dashboard", str(root / "kill"), env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"crl: error: {message}") and proc.stderr.count("\n") == 1, proc.stderr


def test_dashboard_of_no_runs_is_one_line(tmp_path, crl_cli):
    (tmp_path / "report").mkdir()
    proc = crl_cli("dashboard", str(tmp_path), "--spec", str(tmp_path / "s.json"))
    assert proc.returncode == 2 and "no run folders" in proc.stderr and not (tmp_path / "s.json").exists()
