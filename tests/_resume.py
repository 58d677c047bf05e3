"""Kill-and-resume checks shared by the tests of exact resume: a run killed with SIGKILL at a
random moment, then started again with the same command, must write the rows of an
uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, run_crl


def rows(path: Path, drop: tuple[str, ...] = ("time/sps",)) -> list[dict[str, str]]:
    """The rows of a CSV file, without the columns ``drop`` (wall-clock dependent ones)."""
    with path.open() as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def train_here(*args: str) -> None:
    """``crl ARGS`` in this process (:func:`crl.cli.main`, the command's entry point), for a run
    whose process is not the point: it saves the new interpreter's imports of torch, SB3 and
    MuJoCo (about 4 CPU-seconds, far more on busy cores). ``crl train`` sets torch's threads from
    the run's config, so the rows are those ``python -m crl`` writes.
    """
    from crl.cli import main

    code = main(list(args))
    assert code == 0, f"crl {' '.join(args)} exited with {code}"


def kill_at_random(cmd: list[str], run: Path, rng: random.Random, steps: tuple[int, int] = (600, 2300)) -> None:
    """Start ``crl CMD`` and SIGKILL it at a random moment after its run folder ``run`` reached
    a random step in ``steps`` (somewhere inside a rollout or an update).

    ``status.json`` only advances at checkpoints, so the window must end at or before the run's
    last checkpoint step: a target past it is first seen when the run has already finished. Even
    then, a fast machine can finish the run in the random wait (up to 0.3 s) after the target is
    seen: :func:`check_resumes_exactly` then tries again.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "crl", *cmd], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    target = rng.randint(*steps)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((run / "status.json").read_text()).get("global_step", 0) >= target:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.3))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def check_resumes_exactly(
    cmd: list[str],
    run: Path,
    reference: Path,
    rng: random.Random | None = None,
    steps: tuple[int, int] = (600, 2300),
    resume_here: bool = False,
) -> None:
    """Kill ``crl CMD`` at random (:func:`kill_at_random`), check that the killed run is not
    marked finished, run the same command again (it resumes from its last checkpoint; in this
    process with ``resume_here``, :func:`train_here`) and compare its ``metrics.csv`` and
    ``regimes.csv`` row for row with those of the uninterrupted run folder ``reference``.
    """
    rng = rng or random.Random()
    for _ in range(3):
        kill_at_random(cmd, run, rng, steps)
        status = json.loads((run / "status.json").read_text())
        if status["status"] != "finished":
            break
        # the run finished in the random wait before the kill (a fast machine runs the last
        # checkpoint interval in well under its 0.3 s): start again, at another random step
        shutil.rmtree(run)
    assert status["status"] == "running", (status, f"3 runs ended before the kill: is the window {steps} too late?")
    if resume_here:  # the same command resumes
        train_here(*cmd)
    else:
        run_crl(*cmd, check=True)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert rows(run / "regimes.csv") == rows(reference / "regimes.csv")
    assert rows(run / "metrics.csv") == rows(reference / "metrics.csv")


#: Small PPO hyperparameters of the resume tests.
SMALL = ["--agent-kwargs", "n_steps=256", "batch_size=64", "n_epochs=2"]


def train_args(
    run_dir: Path, steps: int, *extra: str, agent: str = "ppo", seed: int = 3, agent_kwargs: tuple[str, ...] = ()
) -> list[str]:
    """``crl train`` of a small PPO agent on Slippery Ant (friction redrawn every 700 steps)."""
    return [
        "train",
        "--env",
        "slippery-ant",
        "--agent",
        agent,
        "--steps",
        str(steps),
        "--seed",
        str(seed),
        "--env-kwargs",
        "change_every=700",
        "episode_steps=200",
        *SMALL,
        *agent_kwargs,
        "--run-dir",
        str(run_dir),
        "--checkpoint-every",
        "256",
        "--no-progress",
        *extra,
    ]
