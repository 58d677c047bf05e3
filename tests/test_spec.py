"""The pure specs (crl.spec), the one ``{name: args}`` parser (crl.named) and the one integer check."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import numpy as np
import pytest

from crl.catalog import agent_specs, env_specs, resolve_agent
from crl.errors import ConfigError, UnknownNameError, check_int
from crl.spec import (
    ACTIVATION_NAMES,
    ALGORITHMS,
    INIT_NAMES,
    AgentSpec,
    EnvSpec,
    NetworkSpec,
    parse_named,
    parse_named_list,
)


# -- the {name: args} parser ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("cbp", ("cbp", {})),
        ({"cbp": None}, ("cbp", {})),
        ({"cbp": {}}, ("cbp", {})),
        ({"cbp": {"maturity": 3}}, ("cbp", {"maturity": 3})),
    ],
)
def test_parse_named_reads_the_three_spellings(item, expected):
    assert parse_named(item, "intervention") == expected


def test_parse_named_returns_a_copy_of_the_arguments():
    item = {"friction": {"low": 0.1}}
    _, args = parse_named(item, "drift")
    args["low"] = 5.0
    assert item == {"friction": {"low": 0.1}}


@pytest.mark.parametrize(
    ("item", "what", "message"),
    [
        ({"a": {}, "b": {}}, "drift", "a drift is written {name: {arguments}}, got {'a': {}, 'b': {}}"),
        ({}, "drift", "a drift is written {name: {arguments}}, got {}"),
        (3, "schedule", "a schedule is written {name: {arguments}}, got 3"),
        ({1: {}}, "intervention", "an intervention is written {name: {arguments}}, got {1: {}}"),
        ({"ewc": [1]}, "intervention", "intervention 'ewc': arguments must be a mapping, got [1]"),
        ({"every_n_steps": 5}, "schedule", "schedule 'every_n_steps': arguments must be a mapping, got 5"),
    ],
)
def test_parse_named_refuses_other_shapes_on_one_line(item, what, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        parse_named(item, what)


def test_parse_named_checks_names_when_given_the_valid_ones():
    with pytest.raises(UnknownNameError, match=r"^unknown drift 'slippery'; valid: friction, gravity$"):
        parse_named("slippery", "drift", valid=["gravity", "friction"])


def test_parse_named_list():
    assert parse_named_list(None, "drift") == []
    assert parse_named_list(["gravity", {"friction": {"low": 1}}], "drift") == [
        ("gravity", {}),
        ("friction", {"low": 1}),
    ]
    with pytest.raises(ConfigError, match=re.escape("drifts must be a list of {name: {arguments}}, got 'friction'")):
        parse_named_list("friction", "drift")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("drift", "a drift is written {name: {arguments}}, got {'friction': {}, 'gravity': {}}"),
        ("schedule", "a schedule is written {name: {arguments}}, got {'friction': {}, 'gravity': {}}"),
        ("intervention", "an intervention is written {name: {arguments}}, got {'friction': {}, 'gravity': {}}"),
    ],
)
def test_drifts_schedules_and_interventions_share_the_parser(call, message):
    from crl.drift import register_drifting
    from crl.drift.schedules import make_schedule
    from crl.plasticity.base import build

    two = {"friction": {}, "gravity": {}}
    run = {
        "drift": lambda: register_drifting("test/Two-v0", base="Hopper-v5", drifts=[two]),
        "schedule": lambda: make_schedule(two),
        "intervention": lambda: build([two]),
    }[call]
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        run()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("drift", "drift 'friction': unknown argument 'heavy'; valid: low, high"),
        ("schedule", "schedule 'every_n_steps': unknown argument 'heavy'; valid: change_every, align"),
        ("intervention", "intervention 'l2_init': unknown argument 'heavy'; valid: strength"),
    ],
)
def test_unknown_arguments_are_refused_alike(call, message):
    from crl.drift import register_drifting
    from crl.drift.schedules import make_schedule
    from crl.plasticity.base import build

    run = {
        "drift": lambda: register_drifting("test/Heavy-v0", base="Hopper-v5", drifts=[{"friction": {"heavy": 1}}]),
        "schedule": lambda: make_schedule({"every_n_steps": {"heavy": 1}}),
        "intervention": lambda: build([{"l2_init": {"heavy": 1}}]),
    }[call]
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        run()


# -- the integer check ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "minimum", "maximum"),
    [(0, 0, None), (5, 1, None), (np.int64(3), 0, None), (-4, None, None), (200, 1, 200), (-3, -5, None)],
)
def test_check_int_accepts(value, minimum, maximum):
    out = check_int("n", value, minimum=minimum, maximum=maximum)
    assert out == value and type(out) is int


@pytest.mark.parametrize(
    ("value", "minimum", "maximum", "message"),
    [
        (True, 0, None, "n must be a non-negative integer, got True"),
        (1.0, 0, None, "n must be a non-negative integer, got 1.0"),
        ("3", 0, None, "n must be a non-negative integer, got '3'"),
        (None, 0, None, "n must be a non-negative integer, got None"),
        (-1, 0, None, "n must be a non-negative integer, got -1"),
        (0, 1, None, "n must be a positive integer, got 0"),
        (2, 3, None, "n must be an integer >= 3, got 2"),
        (201, 1, 200, "n must be an integer in [1, 200], got 201"),
        (7, None, 5, "n must be an integer <= 5, got 7"),
        (0.5, None, None, "n must be an integer, got 0.5"),
    ],
)
def test_check_int_refuses_on_one_line(value, minimum, maximum, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        check_int("n", value, minimum=minimum, maximum=maximum)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("every_n_steps", "schedule 'every_n_steps': change_every must be a positive integer, got 0"),
        ("gradual", "schedule 'gradual': window must be an integer in [1, 10], got 20"),
        ("cyclic", "schedule 'cyclic': cycle[1] must be a non-negative integer, got -1"),
        ("explicit", "schedule 'explicit': changes[0] step must be a non-negative integer, got 1.5"),
    ],
)
def test_schedules_check_integers_with_check_int(make, message):
    from crl.drift.schedules import make_schedule

    args = {
        "every_n_steps": {"change_every": 0},
        "gradual": {"change_every": 10, "window": 20},
        "cyclic": {"cycle": [0, -1]},
        "explicit": {"changes": [[1.5, 1]]},
    }[make]
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        make_schedule({make: args})


# -- the specs ------------------------------------------------------------------------------
#: The catalog's agent specs, read once (each call parses every preset file, ~0.3 s).
AGENT_SPECS = agent_specs()


@pytest.mark.parametrize("name", sorted(AGENT_SPECS))
def test_every_catalog_agent_round_trips(name):
    spec = AGENT_SPECS[name]
    assert AgentSpec.from_dict(spec.to_dict(), "again") == spec


@pytest.mark.parametrize("name", sorted(env_specs()))
def test_every_catalog_env_round_trips(name):
    spec = env_specs()[name]
    assert EnvSpec.from_dict(dataclasses.asdict(spec), "again") == spec


def test_network_spec_defaults_round_trip():
    spec = AgentSpec.from_dict({"description": "x", "network": {}}, "a.yaml")
    assert spec.network == NetworkSpec()
    assert AgentSpec.from_dict(spec.to_dict(), "again") == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"network": {"pi": []}}, "a.yaml: network.pi must be a non-empty list of layer sizes, got []"),
        ({"network": {"vf": [64, 0]}}, "a.yaml: network.vf[1] must be a positive integer, got 0"),
        ({"network": {"activation": "swish"}}, "a.yaml: unknown activation 'swish'; valid: crelu, dff, elu, gelu"),
        ({"network": {"init": "zeros"}}, "a.yaml: unknown init 'zeros'; valid: kaiming_uniform, lecun_uniform"),
        ({"algo": "sac", "network": {"dropout": 0.1}}, "a.yaml: network: dropout is available for ppo only"),
        ({"hyperparameters": {"gamma": -1}}, "a.yaml: hyperparameters: gamma must be a number in (0, 1], got -1"),
        ({"optimizer": {"name": "adam", "betas": [1.5, 0.9]}}, "a.yaml: optimizer.betas must be a list of two numbers"),
        ({"replay_buffer": "reservoir"}, "a.yaml: replay_buffer: 'reservoir' is for sac and td3 agents only"),
        ({"optimizer": {"betas": [0.9, 0.9]}}, "a.yaml: optimizer: needs a 'name'"),
        ({"interventions": [{"ewc": {}, "mas": {}}]}, "a.yaml: an intervention is written {name: {arguments}}"),
        ({"interventions": "ewc"}, "a.yaml: interventions: expected a list, got 'ewc'"),
    ],
)
def test_agent_spec_checks_what_the_spec_alone_decides(data, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        AgentSpec.from_dict({"description": "x", **data}, "a.yaml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"hyperparameters": {"n_stepz": 3}}, "a.yaml: hyperparameters: unknown key 'n_stepz' for ppo; valid: "),
        ({"optimizer": {"name": "adamz"}}, "a.yaml: unknown optimizer 'adamz'; valid: "),
        ({"optimizer": {"name": "adam", "eps": -1.0}}, "a.yaml: optimizer 'adam': Invalid epsilon value"),
        ({"interventions": ["nope"]}, "a.yaml: unknown intervention 'nope'; valid: "),
        ({"interventions": ["ewc"]}, "a.yaml: intervention 'ewc' acts at regime changes; it needs boundary_aware"),
    ],
)
def test_the_builder_checks_what_needs_the_classes(data, message):
    from crl.agents import check

    spec = AgentSpec.from_dict({"description": "x", **data}, "a.yaml")  # the spec alone cannot tell
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check(spec, "a.yaml")


def test_the_name_tables_of_the_spec_are_the_builders():
    from crl import agents

    assert set(ALGORITHMS) == set(agents.ALGOS)
    assert set(ACTIVATION_NAMES) == set(agents.ACTIVATIONS)
    assert set(INIT_NAMES) == set(agents.INITS)


def test_resolving_and_building_an_agent_build_its_interventions_once_each(monkeypatch):
    import gymnasium as gym

    from crl import agents

    calls = []
    original = agents.build
    monkeypatch.setattr(agents, "build", lambda specs: calls.append(specs) or original(specs))
    spec = resolve_agent("ppo-cbp", {"n_steps": 64, "batch_size": 32})
    assert len(calls) == 1 and spec.hyperparameters["n_steps"] == 64
    _, interventions = agents.build_model(spec, gym.make("Pendulum-v1"), seed=0)
    assert len(calls) == 2 and interventions.names == ["cbp"]


def test_resolve_agent_overrides_are_checked_in_full():
    with pytest.raises(ConfigError, match="with overrides: hyperparameters: unknown key 'n_stepz' for ppo"):
        resolve_agent("ppo", {"n_stepz": 3})
    with pytest.raises(ConfigError, match=r"with overrides: network\.pi\[0\] must be a positive integer, got 0"):
        resolve_agent("ppo", {"network.pi": [0]})


def test_specs_and_the_catalog_import_neither_torch_nor_sb3():
    code = (
        "import sys, crl.spec, crl.catalog\n"
        "assert crl.catalog.agent_specs() and crl.catalog.env_specs()\n"
        "print('torch' in sys.modules, 'stable_baselines3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr
