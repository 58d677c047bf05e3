"""Resume is exact with several envs and FastPPO (the bench's crl configuration), whether the
envs run in the learner's process or in worker processes."""

import pytest

from tests._resume import check_resumes_exactly


@pytest.mark.parametrize("vec_env", ["dummy", "proc"])
def test_kill_then_resume_with_two_envs(tmp_path, crl_cli, vec_env):
    def args(root):
        return [
            "train",
            "--env",
            "slippery-ant",
            "--agent",
            "ppo",
            "--steps",
            "2048",
            "--seed",
            "1",
            "--n-envs",
            "2",
            "--vec-env",
            vec_env,
            "--agent-kwargs",
            "n_steps=128",
            "batch_size=64",
            "n_epochs=1",
            "--run-dir",
            str(root),
            "--checkpoint-every",
            "256",
            "--no-progress",
            "--wandb",
            "disabled",
        ]

    crl_cli(*args(tmp_path / "ref"), check=True)  # uninterrupted
    run, ref = (tmp_path / d / "default" / "slippery-ant__ppo__s1" for d in ("killed", "ref"))
    check_resumes_exactly(args(tmp_path / "killed"), run, ref, steps=(600, 1400))
