"""A finished run trains on with a larger ``--steps`` and ``--resume``, exactly as if it had been
given the larger budget from the start; without ``--resume`` it is refused with one line
saying how."""

from __future__ import annotations

from pathlib import Path

from crl.cli import main
from tests._resume import rows, train_args, train_here


def test_extend_a_finished_run_exactly(tmp_path: Path, crl_cli, capsys) -> None:
    """The refusal goes through the real command line (one line on stderr); the runs call the
    same entry point in this process (no interpreter start-up and imports per run)."""
    ext = [*train_args(tmp_path / "ext", 512, "--wandb", "disabled")]  # the extension crosses the change at 700
    train_here(*ext)
    longer = [a if a != "512" else "1024" for a in ext]
    refused = crl_cli(*longer)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "finished at step 512; to train it on to 1,024 steps add --resume" in refused.stderr
    capsys.readouterr()
    train_here(*longer, "--resume")
    assert "finished at step 1,024" in capsys.readouterr().out
    train_here(*train_args(tmp_path / "ref", 1024, "--wandb", "disabled"))
    run, ref = (tmp_path / d / "default" / "slippery-ant__ppo__s3" for d in ("ext", "ref"))
    assert rows(run / "metrics.csv") == rows(ref / "metrics.csv")
    assert rows(run / "regimes.csv") == rows(ref / "regimes.csv")
    capsys.readouterr()
    assert main([*longer, "--resume"]) == 0  # nothing left to train
    assert "already finished" in capsys.readouterr().out
