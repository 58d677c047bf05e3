"""Files of a run folder are verified, not trusted: each one damaged in turn, then resumed.

An interrupted run (checkpoints at 768 and 1024 steps, rows logged up to 1100) is copied for
every case; after the damage the same command either resumes and ends with exactly the rows
of an uninterrupted run, or stops with one line (exit 2) and leaves the run marked
``failed``, never "running".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crl.checkpoint import checkpoint_header, read_checkpoint
from crl.cli import main
from crl.errors import NonFiniteLossError
from crl.run import RunConfig, Runner, run_state, train
from crl.run.callbacks.base import CrlCallback
from tests._resume import rows

NAME = "level-shift-cartpole__ppo__s1"
CFG = dict(
    env="level-shift-cartpole",
    agent="ppo",
    seed=1,
    steps=1536,
    env_kwargs={"change_every": 300},
    agent_kwargs={"n_steps": 256, "batch_size": 64, "n_epochs": 1},
    checkpoint_every=256,
    wandb="disabled",
    progress=False,
)


def argv(run_dir: Path) -> list[str]:
    """``crl train`` of :data:`CFG`."""
    return [
        "train",
        *("--env", "level-shift-cartpole", "--agent", "ppo", "--steps", "1536", "--seed", "1"),
        *("--env-kwargs", "change_every=300", "--agent-kwargs", "n_steps=256", "batch_size=64", "n_epochs=1"),
        *("--checkpoint-every", "256", "--wandb", "disabled", "--no-progress", "--run-dir", str(run_dir)),
    ]


class _StopAt(CrlCallback):
    """Ctrl-C at step ``at``."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.at:
            raise KeyboardInterrupt
        return True


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(uninterrupted run folder, interrupted run folder)."""
    root = tmp_path_factory.mktemp("integrity")
    ref = train(RunConfig(**CFG, run_dir=str(root / "ref"))).run_dir
    with pytest.raises(KeyboardInterrupt):
        train(RunConfig(**CFG, run_dir=str(root / "cut")), callbacks=[_StopAt(1100)])
    return ref, root / "cut" / "default" / NAME


@pytest.fixture
def cut(made, tmp_path):
    """A fresh copy of the interrupted run: (run_dir, run folder, reference run folder)."""
    ref, template = made
    run = tmp_path / "default" / NAME
    shutil.copytree(template, run)
    return tmp_path, run, ref


def _resume(run_dir: Path, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(argv(run_dir))
    return code, capsys.readouterr().err.strip().splitlines()


def _status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def _same_as_reference(run: Path, ref: Path) -> None:
    assert _status(run)["status"] == "finished"
    assert rows(run / "metrics.csv") == rows(ref / "metrics.csv")
    assert rows(run / "regimes.csv") == rows(ref / "regimes.csv")


def test_the_interrupted_run_has_two_framed_checkpoints(made):
    _, run = made
    assert _status(run)["status"] == "interrupted" and run_state(run) == "resumable"
    assert checkpoint_header(run / "checkpoints" / "last.pt")["step"] == 1024
    assert checkpoint_header(run / "checkpoints" / "previous.pt")["step"] == 768
    state, step = read_checkpoint(run / "checkpoints" / "last.pt")
    assert step == state["model"]["num_timesteps"] == 1024 and set(state["rows"]) == {"metrics.csv", "regimes.csv"}


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_truncate, "bytes"),
        (_flip, "checksum mismatch"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"garbage" * 100), "no checkpoint header"),
    ],
)
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(cut, capsys, damage, why):
    run_dir, run, ref = cut
    damage(run / "checkpoints" / "last.pt")
    code, err = _resume(run_dir, capsys)
    assert code == 0
    warnings = [ln for ln in err if ln.startswith("crl: warning: ")]
    assert len(warnings) == 1 and "last.pt is damaged" in warnings[0] and why in warnings[0], err
    assert "resuming from previous.pt at step 768" in warnings[0]
    _same_as_reference(run, ref)
    assert (run / "checkpoints" / "damaged.pt").exists()


def test_status_after_a_resume_holds_the_checkpoint_it_resumed_from(cut):
    run_dir, run, ref = cut
    _truncate(run / "checkpoints" / "last.pt")
    assert _status(run)["checkpoint_step"] == 1024
    runner = Runner(RunConfig(**CFG, run_dir=str(run_dir)))
    assert runner.start(None, False) is None
    st = _status(run)
    assert st["status"] == "running" and st["checkpoint_step"] == st["global_step"] == 768
    runner.learn()
    _same_as_reference(run, ref)


@pytest.mark.parametrize("keep_previous", [False, True])
def test_no_good_checkpoint_left_is_one_line_and_a_failed_run(cut, capsys, keep_previous):
    run_dir, run, _ = cut
    _truncate(run / "checkpoints" / "last.pt")
    previous = run / "checkpoints" / "previous.pt"
    if keep_previous:
        _flip(previous)
    else:
        previous.unlink()
    code, err = _resume(run_dir, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("crl: error: "), err
    assert "no good checkpoint is left, start again with --overwrite" in err[0]
    assert _status(run)["status"] == "failed" and run_state(run) == "failed"
    assert main([*argv(run_dir), "--overwrite"]) == 0  # the way out it names
    assert _status(run)["status"] == "finished"


@pytest.mark.parametrize(
    ("name", "damage", "why"),
    [
        ("metrics.csv", lambda p: p.write_bytes(p.read_bytes()[:300]), "rows"),
        ("metrics.csv", lambda p: p.unlink(), "is missing"),
        ("metrics.csv", lambda p: p.write_bytes(b"\x00\xff\xfe binary \x80" * 50), "is not text"),
        ("metrics.csv", lambda p: p.write_text(p.read_text().replace("0.", "9.", 3)), "was altered"),
        ("regimes.csv", lambda p: p.unlink(), "is missing"),
        ("regimes.csv", lambda p: p.write_bytes(b"\xff" * 10), "is not text"),
    ],
)
def test_lost_or_damaged_rows_are_restored_from_the_checkpoint(cut, capsys, name, damage, why):
    run_dir, run, ref = cut
    damage(run / name)
    code, err = _resume(run_dir, capsys)
    assert code == 0
    assert any(name in ln and why in ln and "restored its rows up to the checkpoint at step 1,024" in ln for ln in err)
    _same_as_reference(run, ref)


def test_rows_after_the_checkpoint_go_without_a_warning(cut, capsys):
    run_dir, run, ref = cut
    code, err = _resume(run_dir, capsys)
    assert code == 0 and not [ln for ln in err if "warning" in ln], err
    _same_as_reference(run, ref)


@pytest.mark.parametrize("junk", [b"seed: [1, 2\n", b"\xff\xfe\x00", b"- a list\n- not a mapping\n"])
def test_a_damaged_config_yaml_is_one_line_and_changes_nothing(cut, capsys, junk):
    run_dir, run, _ = cut
    (run / "config.yaml").write_bytes(junk)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    code, err = _resume(run_dir, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"crl: error: {run / 'config.yaml'} is damaged (") and "--overwrite" in err[0]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before


@pytest.mark.parametrize("name", ["status.json", ".lock"])
def test_a_damaged_status_or_lock_file_does_not_stop_a_resume(cut, capsys, name):
    run_dir, run, ref = cut
    (run / name).write_bytes(b"\x00{not json")
    code, _ = _resume(run_dir, capsys)
    assert code == 0
    _same_as_reference(run, ref)


class _NaNAt(CrlCallback):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.at:
            raise NonFiniteLossError(self.num_timesteps, "loss")
        return True


@pytest.mark.parametrize(("at", "says"), [(100, "no checkpoint was written yet"), (600, "(step 512) was kept")])
def test_the_nan_message_says_what_was_kept(tmp_path, at, says):
    with pytest.raises(NonFiniteLossError) as e:
        train(RunConfig(**CFG, run_dir=str(tmp_path)), callbacks=[_NaNAt(at)])
    assert says in str(e.value)
    assert says in _status(tmp_path / "default" / NAME)["error"]
