"""`crl bench throughput` runs end to end at a tiny size (it must not rot)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crl.bench import measure

ROOT = Path(__file__).resolve().parents[1]


def test_measure_splits_time_and_counts_steps():
    r = measure("ppo", 256, n_envs=4)
    assert r["steps"] == 2048  # one rollout: 2048 // 4 steps per env x 4 envs
    assert 0 < r["sim"] < r["wall"] and r["learn"] > 0
    assert r["sps"] == pytest.approx(r["steps"] / r["wall"])
    assert 100 < r["peak_rss_mb"] < 2048


def test_cli_json_tiny():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "crl",
            "bench",
            "throughput",
            "--steps",
            "64",
            "--repeats",
            "1",
            "--agent",
            "ppo",
            "--n-envs",
            "2",
            "--raw-steps",
            "50",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert set(res["results"]) == {"sb3", "ppo"}
    assert res["results"]["sb3"]["ratio"] == 1.0
    for r in res["results"].values():
        assert r["steps_per_s"] > 0
        assert r["sim_frac"] + r["act_frac"] + r["learn_frac"] == pytest.approx(1.0, abs=1e-6)
    assert res["raw_mujoco_steps_per_s_per_core"] > 0 and res["raw_mujoco_steps_per_s_all_cores"] > 0


def test_cli_rejects_bad_n_envs():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, "-m", "crl", "bench", "throughput", "--n-envs", "3"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert p.returncode != 0 and "--n-envs must divide 2048" in p.stderr


def test_contender_can_pin_its_vec_env():
    for contender in ("ppo:dummy", "ppo:proc"):
        r = measure(contender, 256, n_envs=4)
        assert r["steps"] == 2048
        assert 0 < r["sim"] < r["wall"] and r["learn"] > 0


def test_cli_rejects_unknown_vec_env():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, "-m", "crl", "bench", "throughput", "--agent", "ppo:threads"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert p.returncode != 0 and "--agent ppo:threads: vec env must be one of auto, dummy, proc" in p.stderr
