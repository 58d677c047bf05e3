"""Resume is exact with several envs and FastPPO (the bench's crl configuration), whether the
envs run in the learner's process or in worker processes."""

import pytest

from tests._resume import check_resumes_exactly, train_args, train_here


@pytest.mark.parametrize(
    "vec_env",
    [
        "dummy",
        # the same run with envs in worker processes, killed at random and resumed, is checked in the
        # default suite by tests/run/test_runner.py (test_sigkill_then_resume_with_worker_processes_...)
        pytest.param("proc", marks=pytest.mark.expensive),
    ],
)
def test_kill_then_resume_with_two_envs(tmp_path, crl_cli, vec_env):
    extra = ("--n-envs", "2", "--vec-env", vec_env, "--wandb", "disabled")
    train_here(*train_args(tmp_path / "ref", 2048, *extra))  # uninterrupted
    run, ref = (tmp_path / d / "default" / "slippery-ant__ppo__s3" for d in ("killed", "ref"))
    check_resumes_exactly(train_args(tmp_path / "killed", 2048, *extra), run, ref, steps=(600, 1400), resume_here=True)
