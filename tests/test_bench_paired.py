"""`crl bench throughput --paired`: gates, blocks in turn, the median ratio and its interval."""

import io
import json
import os

import gymnasium as gym
import pytest
from stable_baselines3 import SAC

from crl.bench import print_table
from crl.bench_paired import Gate, paired
from crl.cli import main


def _gated_sac(gate: Gate, steps: int) -> None:
    model = SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=5, batch_size=16, seed=0)
    model.learn(steps, callback=gate)
    assert model.num_timesteps == steps


def test_gate_reports_each_block_and_runs_free_once_its_input_ends():
    out = io.StringIO()
    gate = Gate(first=10, block=7, inp=io.StringIO("go\ngo\n"), out=out)
    _gated_sac(gate, 30)
    lines = out.getvalue().splitlines()
    assert [ln.split()[:2] for ln in lines] == [["@@gate", "0"], ["@@gate", "7"], ["@@gate", "7"]]  # at 10, 17, 24
    assert all(float(ln.split()[2]) > 0 for ln in lines[1:])
    assert gate.waited >= 0 and gate.positions(3) == [10, 17, 24]


def test_gate_keeps_crl_fast_loops_on_their_fast_path():
    from stable_baselines3.common.callbacks import CallbackList

    from crl.fast import is_rollout_safe

    assert is_rollout_safe(Gate(first=1, block=1)) and is_rollout_safe(CallbackList([Gate(first=1, block=1)]))


def test_gate_rejects_empty_blocks():
    with pytest.raises(ValueError, match="must be >= 1 step"):
        Gate(first=5, block=0)


def _live_children() -> set[int]:
    """The pids of this process's live (not zombie) children."""
    me, out = str(os.getpid()), set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            out.add(int(pid))
    return out


def test_a_contender_that_fails_names_itself_and_no_process_is_left():
    before = _live_children()  # under xdist, earlier tests may have left workers of their own
    with pytest.raises(RuntimeError, match=r"bench child 'nosuch' failed \(exit 1\).*unknown agent 'nosuch'"):
        paired(2, ["sb3", "nosuch"], block=5, warmup=1, algo="sac", learning_starts=1, raw_steps=50)
    assert _live_children() <= before  # the sb3 contender, waiting at its first gate, was stopped


def test_cli_sac_paired_json_tiny(capsys):
    """Six blocks of 10 SAC steps of plain SB3 and crl's ``sac``, in turn, after 20 random steps and 10 more
    (the command line's entry point in this process; the contenders are processes of their own)."""
    args = ["--algo", "sac", "--paired", "--blocks", "6", "--block-steps", "10", "--warmup-steps", "10"]
    assert main(["bench", "throughput", *args, "--learning-starts", "20", "--raw-steps", "50", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mode"] == "paired" and res["blocks"] == 6 and res["block_steps"] == 10
    assert res["steps"] == 20 + 10 + 6 * 10
    sb3, sac = res["results"]["sb3"], res["results"]["sac"]
    assert sb3["ratio"] == 1.0 and sb3["round_ratios"] == [1.0] * 6
    ratios = sac["round_ratios"]
    assert ratios == pytest.approx([s / b for s, b in zip(sac["all_steps_per_s"], sb3["all_steps_per_s"])])
    assert sorted(ratios)[2] <= sac["ratio"] <= sorted(ratios)[3]  # the median of six
    assert (sac["ratio_low"], sac["ratio_high"]) == (min(ratios), max(ratios))  # n=6: x(1), x(6) cover 96.9 %
    for r in (sb3, sac):
        assert r["peak_rss_mb"] > 100
        assert r["sim_frac"] + r["act_frac"] + r["learn_frac"] == pytest.approx(1.0, abs=1e-6)
        assert r["act_frac"] < 0.9  # the waits at the gates are not counted as acting
    assert 0 <= res["base_spread"] < 1 and res["ceiling_ms"] > 0


@pytest.mark.parametrize(
    "args, error",
    [
        (["--steps", "100"], "--steps does not apply with --paired"),
        (["--probe-steps", "10"], "--probe-steps does not apply with --paired"),
        (["--block-steps", "1000"], "--block-steps must be a multiple of 2048 (the rollout) with --algo ppo, got 1000"),
        (["--algo", "sac", "--warmup-steps", "0"], "--warmup-steps must be >= 1, got 0"),
        (["--blocks", "0"], "--blocks and --block-steps must be >= 1, got 0 and 2048"),
        (["--algo", "sac", "--block-steps", "0"], "--blocks and --block-steps must be >= 1, got 20 and 0"),
        (
            ["--warmup-steps", "3000"],
            "--warmup-steps must be a positive multiple of 2048 (the rollout) with --algo ppo",
        ),
        (["--agent", "nosuch"], "unknown agent 'nosuch'"),
    ],
)
def test_cli_paired_rejects_bad_arguments_before_any_run(args, error, capsys):
    assert main(["bench", "throughput", "--paired", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crl: error: ") and error in err and len(err.strip().splitlines()) == 1


def test_paired_table_shows_block_ratios_their_interval_and_the_drift(capsys):
    row = {"steps_per_s": 60.0, "all_steps_per_s": [50.0, 70.0], "ratio": 1.0, "round_ratios": [1.0, 1.0]}
    row.update(peak_rss_mb=600.0, sim_frac=0.1, act_frac=0.1, learn_frac=0.8)
    crl = {**row, "steps_per_s": 120.0, "ratio": 2.0, "round_ratios": [1.9, 2.1], "ratio_low": 1.9, "ratio_high": 2.1}
    res = {
        "mode": "paired",
        "blocks": 2,
        "block_steps": 2048,
        "n_envs": 16,
        "vec_env": "auto",
        "train_threads": 0,
        "results": {"sb3": row, "ppo": crl},
        "raw_mujoco_steps_per_s_per_core": 5000.0,
        "raw_mujoco_steps_per_s_all_cores": 9000.0,
        "cpus": 2,
        "loadavg": (0.1, 0.2, 0.3),
        "cpu_vendor": "AuthenticAMD",
        "cpu_capability": "AVX2",
        "hand_products": "torch",
        "speed_probes": [],
        "speed_spread": None,
        "base_spread": 20 / 70,
    }
    print_table(res)
    out = capsys.readouterr().out
    assert "2 paired blocks of 2048 steps" in out and "1.90-2.10x" in out
    assert "moved over 50-70 steps/s (spread 29 %)" in out and "machine speed" not in out
    crl.update(ratio_low=None, ratio_high=None)
    print_table(res)
    assert "n/a (<= 5 blocks)" in capsys.readouterr().out
