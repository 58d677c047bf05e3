"""One real PPO and one real SAC run per intervention family through ``crl train``."""

from __future__ import annotations

import json

import pytest

from tests._resume import check_resumes_exactly, rows, train_args, train_here

FAST_IV = {
    "cbp": "[{cbp: {replacement_rate: 0.01, maturity: 20}}]",
    "redo": "[{redo: {tau: 0.5, every: 10}}]",
    "shrink-perturb": "[{shrink_perturb: {shrink: 0.999, sigma: 0.001}}]",
    "reset": "[{reset: {layers: 1, at_regime_change: true}}]",
    "injection": "[{injection: {at_regime_change: true}}]",
}


@pytest.mark.parametrize("family", [*sorted(FAST_IV), "layernorm", "crelu"])
def test_ppo_family_trains_on_a_drifting_env(tmp_path, family):
    """In this process (``crl train``'s entry point, without a new interpreter importing torch):
    2 rollouts of 256 steps, 16 updates, regime changes at 200 and 400."""
    from crl.cli import main

    code = main(
        [
            "train",
            "--env",
            "slippery-hopper",
            "--agent",
            f"ppo-{family}",
            "--steps",
            "512",
            "--env-kwargs",
            "change_every=200",
            "--agent-kwargs",
            "n_steps=256",
            "batch_size=64",
            "n_epochs=2",
            *([f"interventions={FAST_IV[family]}"] if family in FAST_IV else []),
            "--run-dir",
            str(tmp_path),
            "--wandb",
            "disabled",
            "--no-progress",
        ]
    )
    assert code == 0
    run = tmp_path / "default" / f"slippery-hopper__ppo-{family}__s0"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert (run / "regimes.csv").read_text().count("\n") >= 3  # crossed regime changes


def _sac_args(root, agent, interventions, steps, change_every):
    """``crl train`` on Slippery Hopper with a small SAC (learning after 100 steps)."""
    return [
        "train",
        "--env",
        "slippery-hopper",
        "--agent",
        agent,
        "--steps",
        str(steps),
        "--env-kwargs",
        f"change_every={change_every}",
        "align=exact",
        "--agent-kwargs",
        "learning_starts=100",
        "buffer_size=2000",
        "batch_size=32",
        f"interventions={interventions}",
        "--checkpoint-every",
        "200",
        "--run-dir",
        str(root),
        "--wandb",
        "disabled",
        "--no-progress",
    ]


@pytest.mark.parametrize("family", ["cbp", "redo", "reset"])
def test_sac_family_trains_and_resumes(tmp_path, family):
    from crl.cli import main  # in this process: no new interpreter importing torch

    assert main(_sac_args(tmp_path, f"sac-{family}", FAST_IV[family], 400, 150)) == 0
    run = tmp_path / "default" / f"slippery-hopper__sac-{family}__s0"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert (run / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("family", ["injection", pytest.param("reset", marks=pytest.mark.expensive)])
def test_sac_head_interventions_cross_regime_changes_and_resume_exactly(tmp_path, crl_cli, family):
    """Injection into SAC's critics injects into their target copies too (Polyak averaging pairs
    the parameters of both), resets restart them; a run killed at random resumes with the same
    rows (its losses included, logged right after the resume).
    """
    train_here(*_sac_args(tmp_path / "ref", "sac-reset", FAST_IV[family], 600, 150))
    ref = tmp_path / "ref" / "default" / "slippery-hopper__sac-reset__s0"
    assert rows(ref / "regimes.csv")[-1]["regime"] == "3"  # three regime changes, three interventions
    cmd = _sac_args(tmp_path / "killed", "sac-reset", FAST_IV[family], 600, 150)
    run = tmp_path / "killed" / "default" / "slippery-hopper__sac-reset__s0"
    check_resumes_exactly(cmd, run, ref, steps=(250, 400), resume_here=True)  # checkpoints at 200, 400


def test_ppo_cbp_killed_and_resumed_matches_uninterrupted(tmp_path, crl_cli):
    def args(root):
        iv = "interventions=[{cbp: {replacement_rate: 0.01, maturity: 20}}]"
        return train_args(root, 1536, "--wandb", "disabled", agent="ppo-cbp", seed=2, agent_kwargs=(iv,))

    train_here(*args(tmp_path / "ref"))
    run = tmp_path / "killed" / "default" / "slippery-ant__ppo-cbp__s2"
    ref = tmp_path / "ref" / "default" / "slippery-ant__ppo-cbp__s2"
    # 6 rollouts, regime changes at 700 and 1400
    check_resumes_exactly(args(tmp_path / "killed"), run, ref, steps=(600, 1280), resume_here=True)


@pytest.mark.parametrize("agent", ["ppo-trac", "sac-trac"])
def test_trac_agents_train_and_resume(tmp_path, agent):
    extra = (
        ["n_steps=256", "batch_size=64", "n_epochs=2"]
        if agent.startswith("ppo")
        else ["learning_starts=100", "buffer_size=2000", "batch_size=32"]
    )
    args = [
        "train",
        "--env",
        "level-shift-cartpole" if agent.startswith("ppo") else "slippery-hopper",
        "--agent",
        agent,
        "--steps",
        "512",
        "--env-kwargs",
        "change_every=200",
        "--agent-kwargs",
        *extra,
        "--checkpoint-every",
        "256",
        "--run-dir",
        str(tmp_path),
        "--wandb",
        "disabled",
        "--no-progress",
    ]
    from crl.cli import main  # in this process: no new interpreter importing torch

    assert main(args) == 0
    (run,) = (tmp_path / "default").iterdir()
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    from crl.checkpoint import load

    ckpt = load(run / "checkpoints" / "last.pt")
    opt_states = [
        v
        for k, v in ckpt["model"]["params"].items()
        if k in ("policy.optimizer", "actor.optimizer", "critic.optimizer")
    ]
    assert opt_states and all("trac" in s for s in opt_states)
