"""`crl bench throughput` runs end to end at a tiny size (it must not rot)."""

import json

import pytest

from crl.bench import measure


def test_measure_splits_time_and_counts_steps():
    r = measure("ppo", 256, n_envs=4)
    assert r["steps"] == 2048  # one rollout: 2048 // 4 steps per env x 4 envs
    assert 0 < r["sim"] < r["wall"] and r["learn"] > 0
    assert r["sps"] == pytest.approx(r["steps"] / r["wall"])
    assert 100 < r["peak_rss_mb"] < 2048


def test_cli_json_tiny(crl_cli):
    args = ("--steps", "64", "--repeats", "1", "--agent", "ppo", "--n-envs", "2", "--raw-steps", "50", "--json")
    p = crl_cli("bench", "throughput", *args, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert set(res["results"]) == {"sb3", "ppo"}
    assert res["results"]["sb3"]["ratio"] == 1.0
    for r in res["results"].values():
        assert r["steps_per_s"] > 0
        assert r["sim_frac"] + r["act_frac"] + r["learn_frac"] == pytest.approx(1.0, abs=1e-6)
    assert res["raw_mujoco_steps_per_s_per_core"] > 0 and res["raw_mujoco_steps_per_s_all_cores"] > 0


def test_cli_rejects_bad_n_envs(crl_cli):
    p = crl_cli("bench", "throughput", "--n-envs", "3", timeout=60)
    assert p.returncode != 0 and "--n-envs must divide 2048" in p.stderr


def test_contender_can_pin_its_vec_env():
    for contender in ("ppo:dummy", "ppo:proc"):
        r = measure(contender, 256, n_envs=4)
        assert r["steps"] == 2048
        assert 0 < r["sim"] < r["wall"] and r["learn"] > 0


def test_cli_rejects_unknown_vec_env(crl_cli):
    p = crl_cli("bench", "throughput", "--agent", "ppo:threads", timeout=60)
    assert p.returncode != 0 and "--agent ppo:threads: vec env must be one of auto, dummy, proc" in p.stderr
