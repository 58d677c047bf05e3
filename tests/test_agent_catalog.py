"""Every agent of the catalog trains on a drifting env through ``crl train``, is interrupted,
and resumes from its checkpoint to the end, with no duplicated or missing metric rows."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from crl.catalog import agent_specs
from crl.checkpoint import load
from crl.cli import main

SPECS = agent_specs()  # read once: every call parses all the preset YAML files (about 1 s on a busy core)
AGENTS = sorted(SPECS)


def _param(agent: str):
    """``agent`` as a test parameter: the Kron agents need kron-torch (an optional package), and
    SAC's Kron steps (about 3 min for three 300-step runs on 2 busy cores) make ``sac-kron`` an
    expensive run."""
    marks = []
    if "kron" in agent:
        missing = importlib.util.find_spec("kron_torch") is None
        marks.append(pytest.mark.skipif(missing, reason="needs kron-torch"))
        if agent.startswith("sac"):
            marks.append(pytest.mark.expensive)
    return pytest.param(agent, marks=marks)


#: (steps, change_every, checkpoint_every) of every catalog run (td3 agents run with the sac sizes
#: and replay settings): PPO runs 5 rollouts of 128 steps, SAC 150 updates (from step 50); both
#: cross at least two regime changes and checkpoint before the interruption at :data:`STOP_AT`
SMALL = {"ppo": (640, 150, 128), "sac": (200, 70, 100)}
#: the step at which a run is interrupted (Ctrl-C), after one checkpoint and one regime change; the
#: resumed run crosses a regime change again (PPO at 600, SAC at 140), with the state it read back
STOP_AT = {"ppo": 450, "sac": 130}


def _family(agent: str) -> str:
    return "ppo" if agent.startswith("ppo") else "sac"


def _args(agent: str, root) -> list[str]:
    ppo = agent.startswith("ppo")
    steps, change, ckpt = SMALL[_family(agent)]
    hp = (
        ["n_steps=128", "batch_size=64", "n_epochs=2"]
        if ppo
        else ["learning_starts=50", "buffer_size=1000", "batch_size=32"]
    )
    if "genreplay" in agent:  # the preset's 2,000 VAE steps per regime change cost more than the run
        hp.append("interventions=[{genreplay: {vae_steps: 50}}]")
    if agent == "ppo-kron":  # Kron's 256 x 256 preconditioner factors cost more than the run
        hp += ["network.pi=[64, 64]", "network.vf=[64, 64]"]
    if "packnet" in agent:  # the preset's retraining (1,000 or 100,000 steps) costs more than the run
        hp.append("interventions=[{packnet: {retrain_steps: 20}}]")
    if "progressive" in agent:  # a column per task id, each with lateral links to the earlier ones
        hp += ["network.pi=[32, 32]", "network.vf=[32, 32]"] if ppo else ["network.pi=[32, 32]", "network.qf=[32, 32]"]
    return [
        "train",
        "--env",
        "slippery-hopper",
        "--agent",
        agent,
        "--steps",
        str(steps),
        "--env-kwargs",
        f"change_every={change}",
        "align=exact",
        # friction regimes never repeat: one task id per regime
        *([f"task_id={steps // change + 1}"] if SPECS[agent].task_id else []),
        "--agent-kwargs",
        *hp,
        "--checkpoint-every",
        str(ckpt),
        "--run-dir",
        str(root),
        "--wandb",
        "disabled",
        "--no-progress",
    ]


def test_the_catalog_has_the_published_methods():
    wanted = {
        "ppo-adamw", "ppo-l2-init", "ppo-upgd", "ppo-trac", "ppo-weight-clip", "ppo-parseval",
        "ppo-ewc", "ppo-mas", "ppo-si", "sac-trac", "sac-ewc", "sac-si", "sac-replay",
    }  # fmt: skip
    assert wanted <= set(AGENTS)


def _check_resumed_run(agent: str, run) -> None:
    """What every resumed catalog run shows: finished, no metric row twice, regimes crossed,
    its interventions saved, and the forgetting methods' consolidations at the regime changes."""
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "finished" and status["global_step"] >= SMALL[_family(agent)][0]
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    episodes = [(r["global_step"], r["charts/episodic_return"]) for r in rows if r.get("charts/episodic_return")]
    assert len(episodes) == len(set(episodes)) > 0  # nothing logged twice after the resume
    steps = [int(r["global_step"]) for r in rows]
    assert steps == sorted(steps)
    with (run / "regimes.csv").open() as f:
        assert len(list(csv.DictReader(f))) >= 3
    spec = SPECS[agent]  # progressive networks attach the intervention that freezes their columns
    assert (run / "interventions.pt").is_file() == bool(spec.interventions or spec.network.progressive)
    ckpt = load(run / "checkpoints" / "last.pt")
    for state in ckpt["interventions"]["interventions"]:
        if "consolidations" in state:  # forgetting methods consolidated at the regime changes
            assert state["consolidations"] >= 1


def _interrupted(agent: str, root, monkeypatch):
    """The run folder of ``agent`` stopped by Ctrl-C (exit 130) at :data:`STOP_AT`, after a checkpoint."""
    import crl.run

    stop_at = STOP_AT[_family(agent)]
    original = crl.run.RegimeLogger._on_step

    def interrupting(self):
        if self.num_timesteps >= stop_at:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", interrupting)
    assert main(_args(agent, root)) == 130
    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", original)
    (run,) = (root / "default").iterdir()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and 0 < status["checkpoint_step"] < stop_at
    return run


#: The agents whose resumed run must log exactly what the uninterrupted one did.
EXACT = [
    "ppo-ewc", "ppo-si", "ppo-agem", "ppo-upgd", "ppo-dropout", "sac", "sac-ewc", "sac-si", "sac-agem", "sac-replay",
    "ppo-distill", "sac-distill", "ppo-genreplay", "sac-genreplay",
    "ppo-dff", "ppo-nap", "sac-dff", "sac-nap",
    "td3", "td3-redo", "td3-cbp", "td3-reset", "td3-shrink-perturb",
    "ppo-snr", "ppo-regrama", "sac-snr", "sac-regrama",
    "ppo-hare-tortoise", "sac-hare-tortoise", "ppo-cchain", "sac-cchain", "ppo-kron", "sac-kron",
    "ppo-packnet", "sac-packnet",
]  # fmt: skip


def _rows(path):
    with path.open() as f:
        return [{k: v for k, v in r.items() if k != "time/sps"} for r in csv.DictReader(f)]


@pytest.mark.parametrize("agent", [_param(a) for a in AGENTS if a not in EXACT])
def test_agent_trains_is_interrupted_and_resumes(agent, tmp_path, monkeypatch):
    """Interrupted after a checkpoint, the run resumes to the end. Only the agents not in
    :data:`EXACT`: their test checks the same (:func:`_check_resumed_run`) on its resumed run."""
    run = _interrupted(agent, tmp_path, monkeypatch)
    assert main(_args(agent, tmp_path)) == 0
    _check_resumed_run(agent, run)


#: Exact resumes the default suite checks elsewhere, killed with SIGKILL at random: plain SAC and
#: SAC with reservoir replay in tests/run/test_replay_state.py (the Ctrl-C path of this test is the
#: same for every other SAC agent here).
COVERED = {"sac", "sac-replay"}


def _exact_param(agent: str):
    param = _param(agent)
    return pytest.param(agent, marks=[*param.marks, pytest.mark.expensive]) if agent in COVERED else param


@pytest.mark.parametrize("agent", [_exact_param(a) for a in EXACT])
def test_resumed_run_equals_the_uninterrupted_run(agent, tmp_path, monkeypatch):
    """Importances, anchors, the saved rollout, UPGD's noise and the reservoir's draws all
    come back from the checkpoint: the resumed run logs exactly what the uninterrupted one did
    (and shows everything :func:`test_agent_trains_is_interrupted_and_resumes` checks)."""
    assert main(_args(agent, tmp_path / "ref")) == 0
    cut = _interrupted(agent, tmp_path / "cut", monkeypatch)
    assert main(_args(agent, tmp_path / "cut")) == 0
    _check_resumed_run(agent, cut)
    (ref,) = (tmp_path / "ref" / "default").iterdir()
    assert _rows(cut / "metrics.csv") == _rows(ref / "metrics.csv")
    assert _rows(cut / "regimes.csv") == _rows(ref / "regimes.csv")
