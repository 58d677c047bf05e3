"""``sweep.json`` keeps one entry per invocation of a sweep."""

from __future__ import annotations

import json

import yaml


def test_each_invocation_is_kept_and_a_damaged_file_starts_a_new_history(tmp_path, crl_cli):
    sweep = tmp_path / "h.yaml"
    spec = {"description": "d", "envs": ["CartPole-v1"], "agents": ["ppo"], "seeds": [0], "steps": 256}
    sweep.write_text(yaml.safe_dump({**spec, "wandb": "disabled", "agent_kwargs": {"n_steps": 128, "batch_size": 64}}))
    args = ("sweep", str(sweep), "--run-dir", str(tmp_path / "runs"), "--no-progress")
    out = tmp_path / "runs" / "h" / "sweep.json"
    crl_cli(*args, check=True)
    crl_cli(*args, check=True)
    summary = json.loads(out.read_text())
    history = summary["history"]
    assert len(history) == 2 and [h["counts"] for h in history] == [{"finished": 1}, {"finished": 1}]
    assert history[0]["started"] <= history[1]["started"] and history[1]["ended"] == summary["ended"]
    assert summary["runs"][0]["skipped"] is True  # the top level is the last invocation
    out.write_bytes(b"\xff{ torn")
    third = crl_cli(*args, check=True)
    assert f"[sweep] warning: {out} is damaged" in third.stderr
    assert len(json.loads(out.read_text())["history"]) == 1
