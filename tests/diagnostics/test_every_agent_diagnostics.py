"""Every agent of the catalog logs ``plasticity/*`` rows for every network and hidden layer
(ppo-crelu logged none before the walker was one), and CReLU and LayerNorm layers are measured
after their activation."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from crl import diagnostics as D
from crl.agents import build_model, with_tasks
from crl.catalog import agent_specs
from crl.drift import make_drifting

SPECS = agent_specs()  # read once: each call parses every preset file (~0.3 s); nothing here changes them
AGENTS = sorted(SPECS)


def _build(name: str):
    spec = SPECS[name]
    if spec.algo in ("sac", "td3"):  # a small replay buffer: nothing here fills it
        hp = {**spec.hyperparameters, "buffer_size": 1000, "learning_starts": 10}
        spec = dataclasses.replace(spec, hyperparameters=hp)
    env = gym.make("Pendulum-v1")
    if spec.task_id:  # the observation ends with a one-hot of 2 task ids
        schedule = {"cyclic": {"change_every": 50, "cycle": [0, 1]}}
        env = make_drifting("Pendulum-v1", drifts=[{"level_shift": {}}], schedule=schedule, task_id=True)
        spec = with_tasks(spec, 2)
    model, _ = build_model(spec, env, seed=0)
    return spec, model


def _diagnostics(model) -> D.Diagnostics:
    diag = D.Diagnostics(model, probe_size=256)
    states = np.random.default_rng(0).uniform(-1, 1, size=(300, 3))
    extra = model.observation_space.shape[0] - 3  # a one-hot task id: tasks 0 and 1 in turn
    if extra:
        states = np.concatenate([states, np.eye(extra)[np.arange(300) % extra]], axis=1)
    diag.add_states(states)
    diag.after_update()
    return diag


def test_the_catalog_has_the_architectures_this_file_checks():
    assert {"ppo", "ppo-crelu", "ppo-layernorm", "sac"} <= set(AGENTS)


@pytest.mark.parametrize("name", AGENTS)
def test_every_agent_logs_every_metric_for_every_network_and_layer(name):
    spec, model = _build(name)
    row = _diagnostics(model).compute()
    if spec.algo == "ppo":
        nets = {"policy": spec.network.pi, "value": spec.network.vf}
    else:
        nets = {"actor": spec.network.pi, **{f"critic_{k}": spec.network.qf for k in (1, 2)}}
    columns = spec.network.tasks if spec.network.progressive else 1  # a progressive net: every column's layers
    layers = {n: range(len(sizes) * columns) for n, sizes in nets.items()}
    want = {f"plasticity/{n}/{i}/{m}" for n, idx in layers.items() for i in idx for m in D.DIAGNOSTICS}
    assert set(row) == want
    assert all(np.isfinite(v) for v in row.values())


def test_crelu_rows_measure_both_halves():
    _, model = _build("ppo-crelu")
    diag = _diagnostics(model)
    row = diag.compute()
    net = model.policy.mlp_extractor.policy_net
    with torch.no_grad():
        pre = net[0](torch.as_tensor(diag.probe, dtype=torch.float32)).double().numpy()
        h = net[1](torch.as_tensor(pre)).numpy()  # [relu(x), relu(-x)]: 512 columns
    assert h.shape == (256, 512)
    assert row["plasticity/policy/0/active_fraction"] == D.active_fraction(h) == 0.5  # one half of each unit
    assert row["plasticity/policy/0/feature_norm"] == pytest.approx(D.feature_norm(h))
    assert row["plasticity/policy/0/srank"] == D.srank(h)
    # a unit is dormant only where both halves are: its activity is |x|
    assert row["plasticity/policy/0/dormant_tau"] == D.tau_dormant_fraction(np.abs(pre), 0.0) == 0.0
    with torch.no_grad():  # kill unit 3: x = 0 whatever the input
        net[0].weight[3] = 0.0
        net[0].bias[3] = 0.0
    row = diag.compute()
    assert row["plasticity/policy/0/dormant_tau"] == pytest.approx(1 / 256)
    assert row["plasticity/policy/0/dormant_dohare"] == pytest.approx(1 / 256)


def test_layernorm_rows_measure_the_activation_after_the_norm():
    _, model = _build("ppo-layernorm")
    diag = _diagnostics(model)
    row = diag.compute()
    lin, norm, act = model.policy.mlp_extractor.value_net[:3]
    assert isinstance(norm, torch.nn.LayerNorm) and isinstance(act, torch.nn.ReLU)
    with torch.no_grad():
        h = act(norm(lin(torch.as_tensor(diag.probe, dtype=torch.float32)))).double().numpy()
    assert row["plasticity/value/0/feature_norm"] == pytest.approx(D.feature_norm(h))
    assert row["plasticity/value/0/active_fraction"] == pytest.approx(D.active_fraction(h))
    assert row["plasticity/value/0/effective_rank"] == pytest.approx(D.effective_rank(h), rel=1e-6)
