"""Resume works with several in-process envs and FastPPO (the bench's crl configuration)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kill_then_resume_with_two_envs(tmp_path):
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
