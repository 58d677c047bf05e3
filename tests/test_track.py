"""wandb as the dashboard: options, groups, config, the offline history of resumed runs."""

from __future__ import annotations

import shlex

import pytest

from crl.cli import build_parser
from crl.cli.train import config_of
from crl.errors import ConfigError
from crl.spec import RunConfig, check_run_config
from crl.sweep import expand, load_sweep, train_command
from crl.track import default_group, wandb_config


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
