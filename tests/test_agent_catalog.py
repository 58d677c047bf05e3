"""Every agent of the catalog trains on a drifting env through ``crl train``, is interrupted,
and resumes from its checkpoint to the end, with no duplicated or missing metric rows."""

from __future__ import annotations

import csv
import json

import pytest

from crl.catalog import agent_specs
from crl.checkpoint import load
from crl.cli import main

AGENTS = sorted(agent_specs())


#: (steps, change_every, checkpoint_every) of the catalog runs and of the smaller exact-resume runs
#: (td3 agents run with the sac sizes and replay settings)
SIZES = {"ppo": (2048, 500, 256), "sac": (500, 125, 125)}
SMALL = {"ppo": (640, 150, 128), "sac": (300, 100, 100)}


def _args(agent: str, root, sizes: dict = SIZES) -> list[str]:
    ppo = agent.startswith("ppo")
    steps, change, ckpt = sizes["ppo" if ppo else "sac"]
    hp = (
        ["n_steps=128", "batch_size=64", "n_epochs=2"]
        if ppo
        else ["learning_starts=50", "buffer_size=1000", "batch_size=32"]
    )
    env_kwargs = [f"change_every={change}", "align=exact"]
    if agent_specs()[agent].task_id:  # regimes that never repeat: one task id per regime of the run
        env_kwargs.append("task_id=8")
    if "genreplay" in agent:  # the preset's 2,000 VAE steps per regime change cost more than the run
        hp.append("interventions=[{genreplay: {vae_steps: 50}}]")
    return [
        "train",
        "--env",
        "slippery-hopper",
        "--agent",
        agent,
        "--steps",
        str(steps),
        "--env-kwargs",
        *env_kwargs,
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


@pytest.mark.parametrize("agent", AGENTS)
def test_agent_trains_is_interrupted_and_resumes(agent, tmp_path, monkeypatch):
    import crl.run

    steps = SIZES["ppo" if agent.startswith("ppo") else "sac"][0]
    stop_at = int(steps * 0.6)
    original = crl.run.RegimeLogger._on_step

    def interrupting(self):
        if self.num_timesteps >= stop_at:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", interrupting)
    assert main(_args(agent, tmp_path)) == 130
    (run,) = (tmp_path / "default").iterdir()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["checkpoint_step"] < stop_at

    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", original)
    assert main(_args(agent, tmp_path)) == 0
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "finished" and status["global_step"] >= steps
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    episodes = [(r["global_step"], r["charts/episodic_return"]) for r in rows if r.get("charts/episodic_return")]
    assert len(episodes) == len(set(episodes)) > 0  # nothing logged twice after the resume
    steps = [int(r["global_step"]) for r in rows]
    assert steps == sorted(steps)
    with (run / "regimes.csv").open() as f:
        assert len(list(csv.DictReader(f))) >= 3
    assert (run / "interventions.pt").is_file() == bool(agent_specs()[agent].interventions)
    ckpt = load(run / "checkpoints" / "last.pt")
    for state in ckpt["interventions"]["interventions"]:
        if "consolidations" in state:  # forgetting methods consolidated at the regime changes
            assert state["consolidations"] >= 1


#: The agents whose resumed run must log exactly what the uninterrupted one did.
#: Agents whose resumed run is checked row for row against an uninterrupted one.
EXACT = [
    "ppo-ewc", "ppo-si", "ppo-agem", "ppo-upgd", "ppo-dropout", "sac", "sac-ewc", "sac-si", "sac-agem", "sac-replay",
    "ppo-distill", "sac-distill", "ppo-genreplay", "sac-genreplay",
    "ppo-dff", "ppo-nap", "sac-dff", "sac-nap",
    "td3", "td3-redo", "td3-cbp", "td3-reset", "td3-shrink-perturb",
    "ppo-snr", "ppo-regrama", "sac-snr", "sac-regrama",
    "ppo-hare-tortoise", "sac-hare-tortoise", "ppo-cchain", "sac-cchain",
]  # fmt: skip


def _rows(path):
    with path.open() as f:
        return [{k: v for k, v in r.items() if k != "time/sps"} for r in csv.DictReader(f)]


@pytest.mark.parametrize(
    "agent",
    EXACT,
)
def test_resumed_run_equals_the_uninterrupted_run(agent, tmp_path, monkeypatch):
    """Importances, anchors, the saved rollout, UPGD's noise and the reservoir's draws all
    come back from the checkpoint: the resumed run logs exactly what the uninterrupted one did."""
    import crl.run

    assert main(_args(agent, tmp_path / "ref", SMALL)) == 0
    original = crl.run.RegimeLogger._on_step

    def interrupting(self):
        if self.num_timesteps >= (450 if agent.startswith("ppo") else 250):
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", interrupting)
    assert main(_args(agent, tmp_path / "cut", SMALL)) == 130
    monkeypatch.setattr(crl.run.RegimeLogger, "_on_step", original)
    assert main(_args(agent, tmp_path / "cut", SMALL)) == 0
    (ref,) = (tmp_path / "ref" / "default").iterdir()
    (cut,) = (tmp_path / "cut" / "default").iterdir()
    assert _rows(cut / "metrics.csv") == _rows(ref / "metrics.csv")
    assert _rows(cut / "regimes.csv") == _rows(ref / "regimes.csv")
