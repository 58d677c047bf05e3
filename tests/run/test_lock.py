"""One process per run folder: the lock held by ``crl train`` and checked by ``crl sweep``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from crl.run.lock import LOCK_FILE, RunFolderBusy, RunLock, holder
from crl.run.status import run_state
from tests._resume import rows, train_args
from tests.conftest import ROOT

RUN = ("default", "slippery-ant__ppo__s3")


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and modification time (ns)."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def _wait_for(pred, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _status(run: Path) -> dict:
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def test_a_second_train_on_a_running_folder_names_the_holder_and_touches_nothing(tmp_path, crl_cli, capsys):
    """The plain second ``crl train`` is the real command line (one line on stderr); with
    ``--overwrite`` and ``--resume`` it calls the same entry point in this process."""
    from crl.cli import main

    args = train_args(tmp_path, 1024, "--wandb", "disabled")  # frozen after its checkpoint at 512
    run = tmp_path.joinpath(*RUN)
    first = subprocess.Popen(
        [sys.executable, "-m", "crl", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(lambda: _status(run).get("checkpoint_step", 0) >= 512 or first.poll() is not None)
        assert first.poll() is None, first.communicate()
        first.send_signal(signal.SIGSTOP)  # frozen mid-run: nothing changes in the folder but by the second
        before = _files(run)
        for extra in ((), ("--overwrite",), ("--resume",)):
            if extra:
                capsys.readouterr()
                code, err = main([*args, *extra]), capsys.readouterr().err
            else:
                second = crl_cli(*args)
                code, err = second.returncode, second.stderr
            assert code == 2, err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("crl: error: "), err
            assert f"in use by process {first.pid}" in lines[0] and str(run) in lines[0]
            assert _files(run) == before  # not a byte, not a timestamp
        assert run_state(run) == "running" and holder(run) == first.pid
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    # the first run went on undisturbed: every update row once, steps in order
    metrics = rows(run / "metrics.csv", drop=())
    steps = [int(r["global_step"]) for r in metrics]
    assert steps == sorted(steps)
    assert len([r for r in metrics if r["losses/value_loss"]]) == 1024 // 256
    assert holder(run) is None and run_state(run) == "finished"


_HOLD = """
import sys, time
from crl.run.lock import RunLock
lock = RunLock(sys.argv[1]); lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def held(tmp_path):
    """A process holding a run folder's lock (as a running ``crl train`` does); yields (folder, pid)."""
    folder = tmp_path / "runs" / "s" / "CartPole-v1__ppo__s0"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc.pid
    proc.kill()
    proc.wait()


def test_sweep_refuses_a_grid_whose_run_another_process_holds(tmp_path, crl_cli, held):
    folder, pid = held
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump({"description": "d", "envs": ["CartPole-v1"], "agents": ["ppo"], "seeds": [0, 1], "steps": 256})
    )
    before = sorted(p.name for p in folder.parent.iterdir())
    dry = crl_cli("sweep", str(sweep), "--run-dir", str(tmp_path / "runs"), "--dry-run", check=True)
    assert dry.stdout.splitlines()[0].split() == ["running", str(folder)]
    assert dry.stdout.splitlines()[-1] == "2 runs: 1 new, 0 resumable, 0 failed, 0 finished, 1 running"
    proc = crl_cli("sweep", str(sweep), "--run-dir", str(tmp_path / "runs"), "--no-progress")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{folder} is in use by process {pid}" in lines[0], proc.stderr
    assert sorted(p.name for p in folder.parent.iterdir()) == before  # no other run started, no sweep.json


def test_the_lock_goes_with_its_process_however_it_ends(tmp_path, held):
    folder, pid = held
    assert holder(folder) == pid
    with pytest.raises(RunFolderBusy, match=f"in use by process {pid}"):
        RunLock(folder, wait_s=0.1).acquire()
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: holder(folder) is None, timeout=10)
    with RunLock(folder) as lock:
        assert lock.held and (folder / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_one_process_cannot_lock_a_folder_twice_and_a_refusal_creates_nothing(tmp_path):
    folder = tmp_path / "a" / "b"
    lock = RunLock(folder)
    lock.acquire()
    assert lock.created == tmp_path / "a"
    with pytest.raises(RunFolderBusy, match=f"in use by process {os.getpid()}"):
        RunLock(folder).acquire()
    assert holder(folder) == os.getpid()  # probing from the holder's process keeps the lock
    assert holder(folder) == os.getpid()
    lock.remove_created()
    assert not (tmp_path / "a").exists() and holder(folder) is None
