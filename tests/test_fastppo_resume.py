"""Resume is exact with several envs and FastPPO (the bench's crl configuration), whether the
envs run in the learner's process or in worker processes."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _rows(path):
    with path.open() as f:
        return [{k: v for k, v in r.items() if k != "time/sps"} for r in csv.DictReader(f)]


@pytest.mark.parametrize("vec_env", ["dummy", "proc"])
def test_kill_then_resume_with_two_envs(tmp_path, vec_env):
    cmd = [
        sys.executable,
        "-m",
        "crl",
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
        str(tmp_path),
        "--checkpoint-every",
        "256",
        "--no-progress",
        "--wandb",
        "disabled",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ref_cmd = [str(tmp_path / "ref") if c == str(tmp_path) else c for c in cmd]  # uninterrupted
    ref = subprocess.run(ref_cmd, cwd=ROOT, env=env, timeout=120)
    assert ref.returncode == 0
    run = tmp_path / "default" / "slippery-ant__ppo__s1"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((run / "status.json").read_text()).get("global_step", 0) >= 600:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run / "status.json").read_text())["status"] == "running"
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "finished" and status["global_step"] == 2048
    reference = tmp_path / "ref" / "default" / "slippery-ant__ppo__s1"
    assert _rows(run / "metrics.csv") == _rows(reference / "metrics.csv")
    assert _rows(run / "regimes.csv") == _rows(reference / "regimes.csv")
