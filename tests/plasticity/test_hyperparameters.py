"""Every intervention and crl optimizer refuses NaN, infinite and negative hyperparameters.

The cases are read from the registries and the constructors' signatures, so a new method
or argument is covered without editing this file.
"""

from __future__ import annotations

import inspect
import math
import re
from numbers import Real

import pytest
import torch

from crl.errors import ConfigError, check_non_negative
from crl.plasticity.base import INTERVENTIONS, build
from crl.plasticity.optimizers import OPTIMIZERS, check_optimizer_kwargs

BAD = {"nan": math.nan, "inf": math.inf, "negative": -1}
#: Constructor arguments that are not hyperparameters.
NOT_HYPERPARAMETERS = {"self", "params", "seed"}
#: crl's own optimizers (torch's are torch's business).
CRL_OPTIMIZERS = {name: cls for name, cls in OPTIMIZERS.items() if cls.__module__.startswith("crl.")}


def _is_number(v: object) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _bad_arguments(cls: type) -> list[tuple[str, object]]:
    """``(argument, bad value)`` for every numeric argument (number, or tuple of numbers:
    each element in turn) of ``cls.__init__``."""
    out: list[tuple[str, object]] = []
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in NOT_HYPERPARAMETERS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        default = p.default
        for label, bad in BAD.items():
            if _is_number(default):
                out.append((f"{name}={label}", {name: bad}))
            elif isinstance(default, tuple) and default and all(_is_number(x) for x in default):
                for i in range(len(default)):
                    out.append((f"{name}[{i}]={label}", {name: (*default[:i], bad, *default[i + 1 :])}))
    return out


INTERVENTION_CASES = [(n, label, kw) for n, cls in INTERVENTIONS.items() for label, kw in _bad_arguments(cls)]
OPTIMIZER_CASES = [(n, label, kw) for n, cls in CRL_OPTIMIZERS.items() for label, kw in _bad_arguments(cls)]


def test_the_cases_cover_every_method_with_numeric_arguments():
    covered = {(n, label.split("=")[0]) for n, label, _ in INTERVENTION_CASES + OPTIMIZER_CASES}
    expected = {
        ("l2_init", "strength"),
        ("parseval", "scale"),
        ("weight_clip", "kappa"),
        ("ewc", "strength"),
        ("mas", "decay"),
        ("l2_prev", "samples"),
        ("cbp", "replacement_rate"),
        ("cbp", "maturity"),
        ("redo", "tau"),
        ("shrink_perturb", "sigma"),
        ("reset", "every"),
        ("injection", "at_step"),
        ("upgd", "lr"),
        ("upgd", "eps"),
        ("upgd", "betas[1]"),
        ("trac", "s_init"),
        ("trac", "trac_betas[5]"),
    }
    assert expected <= covered, expected - covered
    assert set(CRL_OPTIMIZERS) == {"trac", "upgd", "kron"}


@pytest.mark.parametrize(
    ("name", "label", "kwargs"), INTERVENTION_CASES, ids=[f"{n}-{lb}" for n, lb, _ in INTERVENTION_CASES]
)
def test_intervention_refuses_nan_inf_and_negative(name, label, kwargs):
    with pytest.raises(ConfigError) as e:
        INTERVENTIONS[name](**kwargs)
    (arg,) = kwargs
    assert arg in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=f"^intervention {name!r}: "):  # what crl train reports
        build([{name: kwargs}])


@pytest.mark.parametrize(
    ("name", "label", "kwargs"), OPTIMIZER_CASES, ids=[f"{n}-{lb}" for n, lb, _ in OPTIMIZER_CASES]
)
def test_optimizer_refuses_nan_inf_and_negative(name, label, kwargs):
    w = torch.nn.Parameter(torch.zeros(2))
    kwargs = dict(kwargs)
    lr = kwargs.pop("lr", 1e-3)
    with pytest.raises(ConfigError) as e:
        CRL_OPTIMIZERS[name]([w], lr=lr, **kwargs)
    assert "\n" not in str(e.value)
    if label.startswith("lr="):
        return  # the learning rate is set through hyperparameters.learning_rate, not optimizer kwargs
    with pytest.raises(ConfigError, match=f"^optimizer {name!r}: "):
        check_optimizer_kwargs(name, kwargs)


@pytest.mark.parametrize(
    ("value", "strict", "ok"),
    [
        (0, False, True),
        (0.0, True, False),
        (2, True, True),
        (1e300, False, True),
        (-1e-300, False, False),
        (math.nan, False, False),
        (math.inf, False, False),
        (-math.inf, False, False),
        (True, False, False),
        ("1e-3", False, False),
        (None, False, False),
    ],
)
def test_check_non_negative(value, strict, ok):
    if ok:
        assert check_non_negative("x", value, strict=strict) == float(value)
        assert type(check_non_negative("x", value, strict=strict)) is float
    else:
        valid = "> 0" if strict else ">= 0"
        with pytest.raises(ConfigError, match="^" + re.escape(f"x must be {valid} and finite, got {value!r}") + "$"):
            check_non_negative("x", value, strict=strict)


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        (
            "description: x\nalgo: ppo\nboundary_aware: true\ninterventions:\n  - ewc: {strength: .inf}\n",
            "intervention 'ewc': strength must be >= 0 and finite, got inf",
        ),
        (
            "description: x\nalgo: ppo\noptimizer: {name: upgd, sigma: .nan}\n",
            "optimizer 'upgd': sigma must be >= 0 and finite, got nan",
        ),
    ],
    ids=["ewc-strength", "upgd-sigma"],
)
def test_crl_train_reports_a_bad_hyperparameter_on_one_line(tmp_path, crl_cli, capsys, agent, message):
    """The first case through the real command line, the second through its entry point here."""
    path = tmp_path / "agent.yaml"
    path.write_text(agent)
    args = ("train", "--env", "slippery-ant", "--agent", str(path), "--run-dir", str(tmp_path / "run"))
    if "ewc" in agent:
        proc = crl_cli(*args)
        code, err = proc.returncode, proc.stderr
    else:
        from crl.cli import main

        capsys.readouterr()
        code, err = main(list(args)), capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"crl: error: {path}: {message}", err  # one line


@pytest.mark.parametrize("seed", [float("inf"), float("nan"), "seven"])
def test_a_bad_seed_is_a_one_line_config_error(seed):
    with pytest.raises(ConfigError, match="intervention 'cbp'") as e:
        build([{"cbp": {"seed": seed}}])
    assert "\n" not in str(e.value)
