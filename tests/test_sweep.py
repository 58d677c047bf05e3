"""Sweeps through the real ``crl sweep`` command: grid, states, crashes, Ctrl-C/kill + resume, Ray."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from crl.errors import ConfigError
from crl.sweep import RUN_STATES, SweepSpec, expand, load_sweep, run_state
from tests.conftest import ROOT

TINY = {"n_steps": 256, "batch_size": 64, "n_epochs": 2}


def _sweep_file(tmp_path: Path, name: str = "s", **fields) -> Path:
    data = {
        "description": "test sweep",
        "agents": ["ppo"],
        "seeds": 1,
        "steps": 1024,
        "agent_kwargs": TINY,
        "checkpoint_every": 256,
        "wandb": "disabled",
        **fields,
    }
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _main(capsys, *args: str) -> int:
    """``crl ARGS`` through :func:`crl.cli.main` in this process, with captured output cleared first."""
    from crl.cli import main

    capsys.readouterr()
    return main(list(args))


def _status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return [{k: v for k, v in r.items() if k != "time/sps"} for r in csv.DictReader(f)]


# -- the file ---------------------------------------------------------------------------------
def test_shipped_experiments_load_and_state_their_measured_cost():
    files = sorted((ROOT / "experiments").glob("*.yaml"))
    assert {f.stem for f in files} >= {
        "quickstart",
        "slippery-ant-small",
        "slippery-ant-paper",
        "level-shift-classic",
        "forgetting-cyclic",
    }
    for f in files:
        spec = load_sweep(f)
        assert "CPU-hours" in spec.description and "measured" in spec.description.lower(), f
    paper = load_sweep(ROOT / "experiments" / "slippery-ant-paper.yaml")
    assert paper.steps == 20_000_000 and paper.env_kwargs["change_every"] == 2_000_000
    assert len(paper.seed_list) == 100 and paper.agents == ["ppo", "ppo-proper-adam", "ppo-l2", "ppo-cbp"]


def test_run_key_sets_runconfig_fields_and_rejects_others(tmp_path):
    spec = load_sweep(_sweep_file(tmp_path, envs=["CartPole-v1"], run={"loss_log_every": 77}))
    assert [c.loss_log_every for c in expand(spec)] == [77]
    with pytest.raises(ConfigError, match=r"unknown RunConfig field 'bogus'; valid: .*loss_log_every"):
        load_sweep(_sweep_file(tmp_path, envs=["CartPole-v1"], run={"bogus": 1}))
    with pytest.raises(ConfigError, match="'seed' is set by the sweep's own key"):
        load_sweep(_sweep_file(tmp_path, envs=["CartPole-v1"], run={"seed": 1}))
    with pytest.raises(ConfigError, match="loss_log_every: expected an integer"):
        load_sweep(_sweep_file(tmp_path, envs=["CartPole-v1"], run={"loss_log_every": "often"}))


def test_grid_order_is_envs_then_agents_then_seeds():
    spec = SweepSpec("d", envs=["a", "b"], agents=["x", "y"], seeds=[3, 1])
    assert [(c.env, c.agent, c.seed) for c in expand(spec)] == [
        ("a", "x", 3),
        ("a", "x", 1),
        ("a", "y", 3),
        ("a", "y", 1),
        ("b", "x", 3),
        ("b", "x", 1),
        ("b", "y", 3),
        ("b", "y", 1),
    ]


def test_dry_run_lists_exactly_the_grid_with_states(tmp_path, crl_cli, capsys):
    f = _sweep_file(tmp_path, envs=["CartPole-v1", "Acrobot-v1"], agents=["ppo", "ppo-l2"], seeds=[0, 2])
    out = tmp_path / "runs" / "s"
    names = [f"{e}__{a}__s{s}" for e in ("CartPole-v1", "Acrobot-v1") for a in ("ppo", "ppo-l2") for s in (0, 2)]
    # fake the states the dry run must read: finished, failed, resumable (checkpoint), started w/o checkpoint
    for name, status in zip(names[:4], ("finished", "failed", "interrupted", "running"), strict=True):
        (out / name).mkdir(parents=True)
        (out / name / "status.json").write_text(json.dumps({"status": status}))
    (out / names[2] / "checkpoints").mkdir()
    (out / names[2] / "checkpoints" / "last.pt").write_bytes(b"x")
    proc = crl_cli("sweep", str(f), "--dry-run", "--run-dir", str(tmp_path / "runs"), check=True)
    lines = proc.stdout.splitlines()
    expected = ["finished", "failed", "resumable", "new", "new", "new", "new", "new"]
    assert [ln.split()[0] for ln in lines[:-1]] == expected
    assert [ln.split()[1] for ln in lines[:-1]] == [str(out / n) for n in names]
    assert lines[-1] == "8 runs: 5 new, 1 resumable, 1 failed, 1 finished"
    assert set(expected) <= set(RUN_STATES)
    assert not (out / names[4]).exists()  # a dry run creates nothing
    # the refusal through the command's entry point in this process (no interpreter start-up)
    assert _main(capsys, "sweep", str(_sweep_file(tmp_path, "bad", envs=["no-such-env"])), "--dry-run") == 2
    assert "unknown env 'no-such-env'" in capsys.readouterr().err


# -- local pool: crashes ------------------------------------------------------------------------
def _crash_catalog(tmp_path: Path) -> Path:
    cat = tmp_path / "cat"
    (cat / "envs").mkdir(parents=True)
    (cat / "envs" / "crash.yaml").write_text(
        'description: CartPole raising at step 300\nid: "tests._sweep_envs:CrashCartPole-v0"\n'
    )
    (cat / "envs" / "kill.yaml").write_text(
        'description: CartPole SIGKILLing its process at step 300\nid: "tests._sweep_envs:KillCartPole-v0"\n'
    )
    return cat


def test_crashed_and_killed_runs_are_marked_failed_and_the_others_finish(tmp_path, crl_cli):
    """Two workers: the crashing and the killed run start first, the healthy one takes the place of
    the first to fail and finishes (one seed each: a second seed repeated the same three runs)."""
    f = _sweep_file(tmp_path, envs=["crash", "kill", "CartPole-v1"], seeds=[0])
    runs = tmp_path / "runs" / "s"
    proc = crl_cli(
        "sweep",
        str(f),
        "--catalog",
        str(_crash_catalog(tmp_path)),
        "--run-dir",
        str(tmp_path / "runs"),
        "--workers",
        "2",
    )
    assert proc.returncode == 1, proc.stderr
    ok = _status(runs / "CartPole-v1__ppo__s0")
    assert ok["status"] == "finished" and ok["global_step"] == 1024
    assert (runs / "CartPole-v1__ppo__s0" / "model.zip").is_file()
    crash = _status(runs / "crash__ppo__s0")
    assert crash["status"] == "failed" and crash["error"] == "RuntimeError: boom at step 300"
    kill = _status(runs / "kill__ppo__s0")
    assert kill["status"] == "failed" and "killed by SIGKILL" in kill["error"]
    summary = json.loads((runs / "sweep.json").read_text())
    assert summary["counts"] == {"failed": 2, "finished": 1} and not summary["interrupted"]
    by_name = {r["name"]: r for r in summary["runs"]}
    assert by_name["crash__ppo__s0"]["error"] == "RuntimeError: boom at step 300"
    assert by_name["kill__ppo__s0"]["global_step"] == 256  # the checkpoint before the kill
    assert all(r["attempts"] == 1 for r in summary["runs"])
    assert "1/3 runs finished" in proc.stdout


def test_each_local_run_gets_its_share_of_the_cores(tmp_path, crl_cli, monkeypatch):
    """With 2 runs at a time on this machine a run may use cores // 2 (no worker processes for the
    cores the other run holds); the cap travels in CRL_CORES, read by usable_cores().
    """
    from crl.system import usable_cores

    record = tmp_path / "cores.txt"
    monkeypatch.setenv("CRL_TEST_CORES_FILE", str(record))
    cat = tmp_path / "cat"
    (cat / "envs").mkdir(parents=True)
    (cat / "envs" / "cores.yaml").write_text('description: CartPole\nid: "tests._sweep_envs:CoresCartPole-v0"\n')
    f = _sweep_file(tmp_path, envs=["cores"], seeds=[0, 1])
    args = ("sweep", str(f), "--catalog", str(cat), "--run-dir", str(tmp_path / "runs"), "--workers", "2")
    crl_cli(*args, check=True)
    seen = {int(x) for x in record.read_text().split()}
    assert seen == {max(1, usable_cores() // 2)}


# -- local pool: Ctrl-C / kill and resume -------------------------------------------------------
@pytest.mark.parametrize(
    ("sig", "group"),
    [
        pytest.param(signal.SIGINT, True, id="ctrl-c"),
        pytest.param(signal.SIGKILL, True, id="sigkill-all", marks=pytest.mark.expensive),
        pytest.param(signal.SIGTERM, False, id="sigterm-sweep", marks=pytest.mark.expensive),
        pytest.param(signal.SIGKILL, False, id="sigkill-sweep", marks=pytest.mark.expensive),
    ],
)
def test_sweep_stopped_half_way_resumes_every_run_without_restarting(tmp_path, capsys, sig, group):
    """Ctrl-C (SIGINT to the process group), a kill of everything, a scheduler's SIGTERM to the
    sweep, or a kill of the sweep alone (its workers notice and stop): the next run resumes. The
    stopped sweep and the one that resumes are real processes; the dry run and the third sweep,
    which only read the folders, call crl.cli.main here."""
    steps = 4096  # stopped after the checkpoint at 1024, a quarter of the way
    f = _sweep_file(tmp_path, envs=["CartPole-v1"], seeds=[0, 1], steps=steps)
    runs = [tmp_path / "runs" / "s" / f"CartPole-v1__ppo__s{s}" for s in (0, 1)]
    cmd = [
        sys.executable,
        "-m",
        "crl",
        "sweep",
        str(f),
        "--run-dir",
        str(tmp_path / "runs"),
        "--workers",
        "2",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # as typed in a terminal: a test suite started in the background inherits SIGINT ignored,
        # and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        sts = [json.loads((r / "status.json").read_text()) if (r / "status.json").is_file() else {} for r in runs]
        if all(s.get("status") == "running" and s.get("checkpoint_step", 0) >= 1024 for s in sts):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    else:
        pytest.fail("the runs never reached a checkpoint")
    (os.killpg if group else os.kill)(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGKILL and not group:  # orphaned workers stop themselves within seconds
        t_end = time.time() + 60
        while time.time() < t_end and any(_status(r)["status"] == "running" for r in runs):
            time.sleep(0.2)
    before = [_status(r) for r in runs]
    assert all(0 < b["global_step"] < steps for b in before), before
    if sig != signal.SIGKILL:
        assert proc.returncode == 130, err
        summary = json.loads((tmp_path / "runs" / "s" / "sweep.json").read_text())
        assert summary["interrupted"] and summary["counts"] == {"interrupted": 2}
    if (sig, group) != (signal.SIGKILL, True):
        assert [b["status"] for b in before] == ["interrupted", "interrupted"]
    ckpt = [b["checkpoint_step"] for b in before]
    kept = [[row for row in _rows(r / "metrics.csv") if int(row["global_step"]) <= c] for r, c in zip(runs, ckpt)]
    assert _main(capsys, *cmd[3:], "--dry-run") == 0
    assert [ln.split()[0] for ln in capsys.readouterr().out.splitlines()[:2]] == ["resumable", "resumable"]

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    for r, b, k in zip(runs, before, kept):
        after = _status(r)
        assert after["status"] == "finished" and after["global_step"] == steps
        assert after["started"] == b["started"]  # the same run, not a new one
        rows = _rows(r / "metrics.csv")
        # rows up to the checkpoint untouched (resumed, not redone); columns that appear later
        # (plasticity diagnostics, every 10k steps) widen the file with empty cells
        assert [{key: row[key] for key in old} for row, old in zip(rows, k, strict=False)] == k
        assert all(row[key] == "" for row, old in zip(rows, k, strict=False) for key in set(row) - set(old))
        losses = [row for row in rows if row["losses/value_loss"]]
        assert len(losses) == steps // 256  # no update logged twice or missing
    summary = json.loads((tmp_path / "runs" / "s" / "sweep.json").read_text())
    assert [r["state_before"] for r in summary["runs"]] == ["resumable", "resumable"]
    # a third run of the sweep skips everything
    assert _main(capsys, *cmd[3:]) == 0
    assert "2/2 runs finished" in capsys.readouterr().out
    assert all(r["skipped"] for r in json.loads((tmp_path / "runs" / "s" / "sweep.json").read_text())["runs"])


def test_run_state_of_folders(tmp_path):
    assert run_state(tmp_path / "none") == "new"
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r" / "status.json").write_text('{"status": "running"}')
    assert run_state(tmp_path / "r") == "new"
    (tmp_path / "r" / "checkpoints" / "last.pt").write_bytes(b"")
    assert run_state(tmp_path / "r") == "resumable"
    (tmp_path / "r" / "status.json").write_text('{"status": "failed"}')
    assert run_state(tmp_path / "r") == "failed"


# -- Ray ------------------------------------------------------------------------------------------
def _namespaces_available() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip not found"
    try:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare failed: {e}"
    return None if probe.returncode == 0 else f"no private network namespace: {probe.stderr.decode().strip()}"


def test_ray_backend_runs_the_sweep_on_a_loopback_only_cluster(tmp_path):
    pytest.importorskip("ray")
    why = _namespaces_available()
    if why is not None:
        pytest.skip(f"the Ray test runs in a loopback-only network namespace ({why})")
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.is_file():
        pytest.skip(f"no ray script next to {sys.executable}")
    # one seed: each Ray task starts a process that imports torch, the retries as many again
    f = _sweep_file(tmp_path, envs=["CartPole-v1", "crash", "kill"], seeds=1, steps=512)
    cat = _crash_catalog(tmp_path)
    run_dir = tmp_path / "runs"
    temp = tempfile.mkdtemp(prefix="crlray", dir="/tmp")  # short: Ray's socket paths are length-limited
    q = shlex.quote
    # the cluster is stopped whatever happens (trap), and the sweep gets a deadline of its own
    script = (
        "set -u; ip link set lo up; "
        f"trap '{q(str(ray_bin))} stop --force > /dev/null 2>&1' EXIT; "
        f"{q(str(ray_bin))} start --head --node-ip-address=127.0.0.1 --port=6390 --num-cpus=2 "
        f"--include-dashboard=false --disable-usage-stats --temp-dir={q(temp)} > {q(temp)}/start.log 2>&1 "
        f"|| {{ cat {q(temp)}/start.log; exit 3; }}; "
        f"timeout -s INT 420 {q(sys.executable)} -m crl sweep {q(str(f))} --backend ray --address 127.0.0.1:6390 "
        f"--retries 1 --catalog {q(str(cat))} --run-dir {q(str(run_dir))} --no-progress"
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        proc = subprocess.run(
            ["unshare", "-n", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=540, env=env
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the crashing runs failed
    assert "1/3 runs finished" in proc.stdout
    summary = json.loads((run_dir / "s" / "sweep.json").read_text())
    assert summary["backend"] == "ray" and summary["counts"] == {"finished": 1, "failed": 2}
    by_name = {r["name"]: r for r in summary["runs"]}
    run = run_dir / "s" / "CartPole-v1__ppo__s0"
    st = _status(run)
    assert st["status"] == "finished" and st["global_step"] == 512 and st["error"] is None
    for name in ("config.yaml", "metrics.csv", "model.zip", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert len([r for r in _rows(run / "metrics.csv") if r["losses/value_loss"]]) == 2
    assert by_name["CartPole-v1__ppo__s0"]["attempts"] == 1
    # a failed task is retried once (--retries 1), then marked failed with its error
    crash, kill = by_name["crash__ppo__s0"], by_name["kill__ppo__s0"]
    assert crash["attempts"] == 2 and crash["error"] == "RuntimeError: boom at step 300"
    assert _status(run_dir / "s" / "crash__ppo__s0")["status"] == "failed"
    assert kill["attempts"] == 2 and kill["error"].startswith("ray task failed")
    assert _status(run_dir / "s" / "kill__ppo__s0")["status"] == "failed"


def test_catalog_experiment_by_name_dry_run(tmp_path, crl_cli, capsys):
    proc = crl_cli("sweep", "quickstart", "--dry-run", "--run-dir", str(tmp_path), check=True)
    out = tmp_path / "quickstart"
    assert proc.stdout.splitlines() == [
        *(f"new        {out / f'level-shift-cartpole__{a}__s{s}'}" for a in ("ppo", "ppo-redo") for s in range(3)),
        "6 runs: 6 new, 0 resumable, 0 failed, 0 finished",
    ]
    assert _main(capsys, "sweep", "no-such-sweep", "--dry-run") == 2  # in this process, as above
    err = capsys.readouterr().err
    assert "catalog experiments: " in err and "quickstart" in err
