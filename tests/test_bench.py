"""`crl bench throughput` runs end to end at a tiny size (it must not rot)."""

import json

import pytest
import torch

from crl.bench import measure


def test_measure_splits_time_and_counts_steps_with_the_vec_env_pinned_or_not():
    """One contender pinned to each vec env (``ppo:dummy``, ``ppo:proc``); the unpinned ``ppo``
    (``auto``) is measured by :func:`test_cli_json_tiny`, through the same :func:`measure`."""
    for contender in ("ppo:dummy", "ppo:proc"):
        r = measure(contender, 256, n_envs=4)
        assert r["steps"] == 2048  # one rollout: 2048 // 4 steps per env x 4 envs
        assert 0 < r["sim"] < r["wall"] and r["learn"] > 0
        assert r["sps"] == pytest.approx(r["steps"] / r["wall"])
        assert r["peak_rss_mb"] > 100  # this process's peak so far (under xdist, of every test it ran)


def test_cli_json_tiny(crl_cli):
    args = ("--steps", "64", "--repeats", "2", "--agent", "ppo", "--n-envs", "2", "--raw-steps", "50")
    p = crl_cli("bench", "throughput", *args, "--probe-steps", "100", "--json", timeout=180)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert set(res["results"]) == {"sb3", "ppo"}
    assert res["results"]["sb3"]["ratio"] == 1.0
    assert res["results"]["sb3"]["round_ratios"] == [1.0, 1.0]
    for r in res["results"].values():
        assert r["steps_per_s"] > 0
        assert r["sim_frac"] + r["act_frac"] + r["learn_frac"] == pytest.approx(1.0, abs=1e-6)
    ppo = res["results"]["ppo"]
    for ratio, sps, base in zip(ppo["round_ratios"], ppo["all_steps_per_s"], res["results"]["sb3"]["all_steps_per_s"]):
        assert ratio == pytest.approx(sps / base)
    assert res["raw_mujoco_steps_per_s_per_core"] > 0 and res["raw_mujoco_steps_per_s_all_cores"] > 0
    probes = res["speed_probes"]
    assert len(probes) == 3 and min(probes) > 0  # before each of the 2 rounds and after the last
    assert probes[-1] == res["raw_mujoco_steps_per_s_per_core"]  # the last one is the ceiling row's run
    assert res["speed_spread"] == pytest.approx((max(probes) - min(probes)) / max(probes))
    from crl.fast.mlp import cpu_vendor, onednn_linear_preferred

    assert res["cpu_vendor"] == (cpu_vendor() or "unknown vendor")
    assert res["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability())
    assert res["hand_products"] == ("oneDNN" if onednn_linear_preferred() else "torch")


def _result(probes):
    row = {"steps_per_s": 100.0, "ratio": 1.0, "round_ratios": [1.0, 1.0], "peak_rss_mb": 500.0}
    row.update(sim_frac=0.4, act_frac=0.3, learn_frac=0.3)
    crl = {**row, "steps_per_s": 250.0, "ratio": 2.5, "round_ratios": [2.4, 2.6]}
    return {
        "steps": 64,
        "repeats": 2,
        "n_envs": 2,
        "vec_env": "auto",
        "train_threads": 0,
        "results": {"sb3": row, "ppo": crl},
        "raw_mujoco_steps_per_s_per_core": 5000.0,
        "raw_mujoco_steps_per_s_all_cores": 10000.0,
        "cpus": 2,
        "loadavg": (0.1, 0.2, 0.3),
        "cpu_vendor": "AuthenticAMD",
        "cpu_capability": "AVX2",
        "hand_products": "torch",
        "speed_probes": probes,
        "speed_spread": (max(probes) - min(probes)) / max(probes) if probes else None,
    }


def test_table_shows_round_ratios_and_warns_when_the_machine_speed_moved(capsys):
    from crl.bench import print_table

    print_table(_result([5000.0, 5100.0, 4950.0]))
    out = capsys.readouterr().out
    assert "2.40-2.60x" in out
    assert "4950-5100 steps/s, spread 3 %" in out and "warning" not in out
    assert "cpus 2 (AuthenticAMD, AVX2; PPO's hand-written products: torch), load average 0.10 0.20 0.30" in out
    print_table(_result([5000.0, 3500.0, 4000.0]))
    out = capsys.readouterr().out
    assert "spread 30 %" in out and "warning: the machine's speed changed by more than 10 %" in out
    print_table(_result([]))
    assert "machine speed" not in capsys.readouterr().out
    old = _result([])
    del old["cpu_vendor"]  # a result saved before the vendor was recorded
    print_table(old)
    assert "cpus 2 (AVX2; PPO's hand-written products: torch)" in capsys.readouterr().out


def _refused(capsys, *args: str) -> str:
    """stderr of ``crl bench throughput ARGS`` refused (exit 2) by the command's entry point in this
    process (the real command line runs in :func:`test_cli_json_tiny` and :func:`test_cli_sac_json_tiny`)."""
    from crl.cli import main

    capsys.readouterr()
    assert main(["bench", "throughput", *args]) == 2
    return capsys.readouterr().err


def test_cli_rejects_negative_probe_steps(capsys):
    assert "--probe-steps must be >= 0, got -1" in _refused(capsys, "--probe-steps", "-1")


def test_cli_rejects_bad_n_envs(capsys):
    assert "--n-envs must divide 2048" in _refused(capsys, "--n-envs", "3")


def test_cli_rejects_unknown_vec_env(capsys):
    err = _refused(capsys, "--agent", "ppo:threads")
    assert "--agent ppo:threads: vec env must be one of auto, dummy, proc" in err


def test_cli_sac_json_tiny(crl_cli):
    """``--algo sac``: plain SB3 SAC and crl's ``sac`` side by side, the split of the gradient
    steps and the ceiling (tiny: 20 learning steps after 40 random ones)."""
    from crl.bench import SAC_SPLIT

    args = ("--algo", "sac", "--steps", "60", "--learning-starts", "40", "--repeats", "1", "--raw-steps", "50")
    p = crl_cli("bench", "throughput", *args, "--probe-steps", "50", "--json", timeout=600)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["algo"] == "sac" and res["learning_starts"] == 40 and res["ceiling_ms"] > 0
    assert set(res["results"]) == {"sb3", "sac"}
    for r in res["results"].values():
        assert r["steps_per_s"] > 0 and r["peak_rss_mb"] > 100
        parts = [r[f"{k}_frac"] for k in SAC_SPLIT]
        assert all(f > 0 for f in parts)  # every part of the gradient steps was timed
        assert sum(parts) + r["learn_other_frac"] == pytest.approx(r["learn_frac"], abs=1e-6)
        assert r["sim_frac"] + r["act_frac"] + r["learn_frac"] == pytest.approx(1.0, abs=1e-6)


def test_sac_table_prints_the_split_and_the_ceiling(capsys):
    from crl.bench import print_table

    res = _result([5000.0, 5100.0])
    res.update(algo="sac", learning_starts=1000, ceiling_ms=4.0)
    for row in res["results"].values():
        row.update(sample_frac=0.01, critic_frac=0.3, actor_frac=0.2, target_frac=0.01, learn_other_frac=0.01)
    print_table(res)
    out = capsys.readouterr().out
    assert "Slippery Hopper" in out and "critic %" in out and "2.40-2.60x" in out
    assert "ceiling: the raw matrix products of one SAC gradient step take 4.00 ms" in out and "250 steps/s" in out


def test_cli_rejects_learning_starts_past_the_steps(capsys):
    err = _refused(capsys, "--algo", "sac", "--steps", "100", "--learning-starts", "100")
    assert "--learning-starts must be >= 0 and below --steps (100), got 100" in err
