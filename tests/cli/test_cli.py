"""The catalog listings and the argument handling of the ``crl`` command."""

from __future__ import annotations

import yaml


def test_envs_lists_catalog_with_descriptions(crl_cli):
    out = crl_cli("envs", check=True).stdout
    assert "slippery-ant" in out and "crl/SlipperyAnt-v0" in out and "Ant-v5" in out and "friction" in out


def test_envs_name_shows_one(crl_cli):
    shown = yaml.safe_load(crl_cli("envs", "slippery-ant", check=True).stdout)
    assert shown["id"] == "crl/SlipperyAnt-v0"
    assert shown["drifts"] == [{"friction": {"low": 0.02, "high": 2.0}}]


def test_agents_lists_catalog(crl_cli):
    out = crl_cli("agents", check=True).stdout
    for name in ("ppo", "ppo-proper-adam", "ppo-l2"):
        assert name in out
    shown = yaml.safe_load(crl_cli("agents", "ppo-l2", check=True).stdout)
    assert shown["optimizer"]["weight_decay"] == 1e-3 and shown["optimizer"]["betas"] == [0.99, 0.99]


def test_unknown_names_in_listings(crl_cli):
    proc = crl_cli("agents", "nope")
    assert proc.returncode == 2 and proc.stderr.startswith("crl: error: unknown agent 'nope'; valid: ")


def test_user_catalog_folder(tmp_path, crl_cli):
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "my-ppo.yaml").write_text("description: my PPO\nalgo: ppo\n")
    out = crl_cli("agents", "--catalog", str(tmp_path), check=True).stdout
    assert "my-ppo" in out
    out = crl_cli("agents", check=True, env={"CRL_CATALOG": str(tmp_path)}).stdout
    assert "my-ppo" in out


def test_missing_catalog_folder(tmp_path, crl_cli):
    proc = crl_cli("agents", "--catalog", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "catalog folder not found" in proc.stderr


def test_version_and_help(crl_cli):
    assert crl_cli("--version", check=True).stdout.strip() == "0.2.0"
    assert crl_cli().returncode == 2


def test_a_sweeps_train_command_parses_back_to_the_same_run():
    """``train_command`` writes every RunConfig field as ``crl train`` reads it."""
    from crl.cli import build_parser
    from crl.cli.train import config_of
    from crl.spec import RunConfig
    from crl.sweep import train_command

    cfg = RunConfig(
        env="slippery-ant",
        agent="ppo-cbp",
        seed=4,
        steps=5000,
        experiment="x",
        env_kwargs={"change_every": 500, "frictions": [0.1, 1.0]},
        agent_kwargs={"optimizer.betas": [0.99, 0.99], "learning_rate": 1e-4},
        n_envs=4,
        vec_env="dummy",
        wandb="offline",
        wandb_project="p",
        wandb_entity="me",
        train_threads=2,
        loss_log_every=500,
        eval_every=2000,
        summary_last_frac=0.2,
    )
    import shlex

    argv = shlex.split(train_command(cfg))[1:]
    assert config_of(build_parser().parse_args(argv), command=cfg.command) == cfg
