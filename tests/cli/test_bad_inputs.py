"""Every bad input of ``crl train`` / ``crl sweep`` is refused up front: exit status 2, one line
on stderr saying what is wrong (and what is valid), no traceback, no run folder, nothing
written anywhere (not even outside the run dir).

The table runs the real command (:func:`crl.cli.main`) in this process, in a fresh folder per
case; a few cases also run as a subprocess, the way users type them. An exception other than
the command's own exit is a failure (that is the traceback a user would see).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from crl.cli import main
from tests.conftest import run_crl

TRAIN = ["train", "--env", "slippery-hopper", "--agent", "ppo", "--steps", "256", "--run-dir", "runs"]
TRAIN += ["--wandb", "disabled", "--no-progress"]
SAC = [*TRAIN[:4], "sac", *TRAIN[5:]]


def _file(name: str, text: str) -> Callable[[Path], None]:
    """A set-up step: write ``text`` to ``name`` (relative to the case's folder)."""

    def write(root: Path) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)

    return write


def _agent(yaml_text: str) -> Callable[[Path], None]:
    return _file("bad-agent.yaml", "description: a bad agent\n" + yaml_text)


def _sweep(yaml_text: str) -> Callable[[Path], None]:
    head = "description: a bad sweep\nenvs: [slippery-hopper]\nagents: [ppo]\nsteps: 256\nwandb: disabled\n"
    return _file("bad-sweep.yaml", head + yaml_text)


def _kw(*items: str) -> list[str]:
    return [*TRAIN, "--agent-kwargs", *items]


def _with(**flags: str) -> list[str]:
    out = list(TRAIN)
    for k, v in flags.items():
        flag = "--" + k.replace("_", "-")
        if flag in out:
            out[out.index(flag) + 1] = v
        else:
            out += [f"{flag}={v}"]
    return out


SWEEP = ["sweep", "bad-sweep.yaml", "--run-dir", "runs", "--no-progress"]

#: (id, argv, what the one line must say, set-up or None)
CASES: list[tuple[str, list[str], str, Callable[[Path], None] | None]] = [
    # -- names: a "did you mean" for typos -------------------------------------------------------
    ("env-typo", _with(env="slipery-hopper"), "did you mean 'slippery-hopper'?", None),
    ("agent-typo", _with(agent="ppo-cpb"), "did you mean 'ppo-cbp'?", None),
    ("env-unknown", _with(env="no-such-env"), "unknown env 'no-such-env'; valid: ", None),
    ("env-missing-yaml", _with(env="missing.yaml"), "file not found: missing.yaml", None),
    ("agent-missing-yaml", _with(agent="missing.yaml"), "file not found: missing.yaml", None),
    ("env-bad-module", _with(env="nomodule_xyz:Foo-v0"), "cannot import module 'nomodule_xyz'", None),
    ("hp-typo", _kw("lerning_rate=0.1"), "did you mean 'learning_rate'?", None),
    ("network-key-typo", _kw("network.activaton=tanh"), "did you mean 'activation'?", None),
    ("activation", _kw("network.activation=swish"), "unknown activation 'swish'", None),
    ("init", _kw("network.init=zeros"), "unknown init 'zeros'", None),
    ("optimizer-typo", _kw("optimizer.name=adamz"), "did you mean 'adam'?", None),
    ("optimizer-arg-typo", _kw("optimizer.betaz=[0.9,0.9]"), "did you mean 'betas'?", None),
    ("intervention", _kw("interventions=[cpb]"), "did you mean 'cbp'?", None),
    ("env-kwarg-unknown", [*TRAIN, "--env-kwargs", "bogus=1"], "bogus", None),
    ("env-kwarg-type", [*TRAIN, "--env-kwargs", "change_every=abc"], "change_every", None),
    ("env-kwarg-zero", [*TRAIN, "--env-kwargs", "change_every=0"], "change_every", None),
    # -- hyperparameters that only SB3 would reject (late, or never) -----------------------------
    ("lr-string", _kw("learning_rate=abc"), "learning_rate must be a number in [0, 1], got 'abc'", None),
    ("lr-negative", _kw("learning_rate=-1"), "learning_rate must be a number in [0, 1]", None),
    ("lr-big", _kw("learning_rate=2"), "learning_rate must be a number in [0, 1]", None),
    ("lr-nan", _kw("learning_rate=.nan"), "learning_rate must be a number in [0, 1]", None),
    ("lr-inf", _kw("learning_rate=.inf"), "learning_rate must be a number in [0, 1]", None),
    ("clip-string", _kw("clip_range=wide"), "clip_range must be a number in (0, 1], got 'wide'", None),
    ("clip-zero", _kw("clip_range=0"), "clip_range must be a number in (0, 1]", None),
    ("clip-vf", _kw("clip_range_vf=-1"), "clip_range_vf must be a number in (0, 1e9]", None),
    ("batch-zero", _kw("batch_size=0"), "batch_size must be an integer in [2, 100_000_000]", None),
    ("batch-one", _kw("batch_size=1"), "with normalize_advantage", None),
    ("batch-float", _kw("batch_size=2.5"), "batch_size must be an integer", None),
    ("n-steps-one", _kw("n_steps=1"), "n_steps * n_envs must be >= 2", None),
    ("n-steps-zero", _kw("n_steps=0"), "n_steps must be an integer in [1, 100_000_000]", None),
    ("n-epochs", _kw("n_epochs=0"), "n_epochs must be an integer in [1, 100_000]", None),
    ("gamma-big", _kw("gamma=5"), "gamma must be a number in (0, 1], got 5", None),
    ("gamma-zero", _kw("gamma=0"), "gamma must be a number in (0, 1]", None),
    ("gae-lambda", _kw("gae_lambda=1.5"), "gae_lambda must be a number in [0, 1]", None),
    ("ent-coef", _kw("ent_coef=-0.1"), "ent_coef must be a number in [0, 1000]", None),
    ("vf-coef", _kw("vf_coef=abc"), "vf_coef must be a number", None),
    ("max-grad-norm", _kw("max_grad_norm=0"), "max_grad_norm must be a number in (0, 1e9]", None),
    ("target-kl", _kw("target_kl=-1"), "target_kl must be a number in (0, 1000]", None),
    ("normalize-adv", _kw("normalize_advantage=maybe"), "normalize_advantage must be true or false", None),
    ("betas-short", _kw("optimizer.betas=[0.9]"), "optimizer.betas must be a list of two numbers in [0, 1)", None),
    ("betas-range", _kw("optimizer.betas=[0.9,1.5]"), "optimizer.betas must be a list of two numbers", None),
    ("optimizer-eps", _kw("optimizer.eps=-1.0"), "Invalid epsilon value", None),
    ("optimizer-lr", _kw("optimizer.lr=0.1"), "set the learning rate as hyperparameters.learning_rate", None),
    ("layer-zero", _kw("network.pi=[64,0]"), "network.pi[1] must be a positive integer, got 0", None),
    ("layers-empty", _kw("network.pi=[]"), "network.pi must be a non-empty list", None),
    ("sac-tau", [*SAC, "--agent-kwargs", "tau=0"], "tau must be a number in (0, 1]", None),
    ("sac-buffer", [*SAC, "--agent-kwargs", "buffer_size=0"], "buffer_size must be an integer in [1, ", None),
    ("sac-train-freq", [*SAC, "--agent-kwargs", "train_freq=[1,fortnight]"], "train_freq must be", None),
    ("sac-ent-coef", [*SAC, "--agent-kwargs", "ent_coef=lots"], "ent_coef must be 'auto'", None),
    ("sac-grad-steps", [*SAC, "--agent-kwargs", "gradient_steps=0"], "gradient_steps must be an integer", None),
    (
        "yaml-lr-fast",
        _with(agent="bad-agent.yaml"),
        "learning_rate must be a number in [0, 1], got 'fast'",
        _agent("hyperparameters:\n  learning_rate: fast\n"),
    ),
    ("yaml-not-mapping", _with(agent="bad-agent.yaml"), "expected a mapping", _file("bad-agent.yaml", "- a\n- b\n")),
    ("yaml-broken", _with(agent="bad-agent.yaml"), "not valid YAML", _file("bad-agent.yaml", "a: [1, 2\n")),
    ("yaml-policy", _with(agent="bad-agent.yaml"), "unknown policy 'FooPolicy'", _agent("policy: FooPolicy\n")),
    ("yaml-algo", _with(agent="bad-agent.yaml"), "'dqn' is not valid", _agent("algo: dqn\n")),
    ("yaml-key-typo", _with(agent="bad-agent.yaml"), "did you mean 'hyperparameters'?", _agent("hyperparameter: {}\n")),
    # -- the device -------------------------------------------------------------------------------
    ("device-banana", _with(device="banana"), "device must be cpu, auto, cuda, cuda:N or mps, got 'banana'", None),
    ("device-cuda-99", _with(device="cuda:99"), "device cuda:99: this machine has", None),
    ("device-empty", _with(device=""), "device must be cpu, auto, cuda, cuda:N or mps, got ''", None),
    ("device-mps", _with(device="mps"), "this machine has no MPS device", None),
    # -- the experiment name: one safe folder name ----------------------------------------------
    ("exp-escape", _with(experiment="../../x"), "experiment must be a folder name", None),
    ("exp-absolute", _with(experiment="/tmp/crl-escaped"), "experiment must be a folder name", None),
    ("exp-empty", _with(experiment=""), "experiment must be a folder name", None),
    ("exp-long", _with(experiment="x" * 65), "experiment must be a folder name", None),
    ("exp-slash", _with(experiment="a/b"), "experiment must be a folder name", None),
    ("exp-dotdot", _with(experiment=".."), "experiment must be a folder name", None),
    ("exp-dot", _with(experiment="."), "experiment must be a folder name", None),
    ("exp-dash", _with(experiment="-x"), "experiment must be a folder name", None),
    ("exp-space", _with(experiment="my run"), "experiment must be a folder name", None),
    ("exp-unicode", _with(experiment="été"), "experiment must be a folder name", None),
    # -- the run directory -------------------------------------------------------------------------
    ("run-dir-file", _with(run_dir="afile"), "afile is a file, not a folder", _file("afile", "x")),
    ("run-dir-under-file", _with(run_dir="afile/runs"), "afile is a file, not a folder", _file("afile", "x")),
    ("run-dir-empty", _with(run_dir=""), "run_dir must be a folder path", None),
    (
        "run-folder-file",
        _with(run_dir="runs"),
        "is a file, not a folder",
        _file("runs/default/slippery-hopper__ppo__s0", "x"),
    ),
    # -- numbers and their bounds -------------------------------------------------------------------
    ("steps-1e20", _with(steps="1e20"), "steps must be an integer in [1, 10_000_000_000]", None),
    ("steps-zero", _with(steps="0"), "steps must be an integer in [1, ", None),
    ("steps-negative", _with(steps="-5"), "steps must be an integer in [1, ", None),
    ("steps-word", _with(steps="abc"), "argument --steps: expected an integer", None),
    ("steps-fraction", _with(steps="1.5"), "argument --steps: expected an integer", None),
    ("seed-negative", _with(seed="-1"), "seed must be an integer in [0, 4_294_967_295]", None),
    ("seed-huge", _with(seed=str(2**32)), "seed must be an integer in [0, 4_294_967_295]", None),
    ("n-envs-zero", _with(n_envs="0"), "n_envs must be an integer in [1, 4096]", None),
    ("n-envs-huge", _with(n_envs="100000"), "n_envs must be an integer in [1, 4096]", None),
    ("checkpoint-every", _with(checkpoint_every="0"), "checkpoint_every must be an integer in [1, ", None),
    ("eval-episodes", _with(eval_episodes="0"), "eval_episodes must be an integer in [1, ", None),
    ("summary-frac", _with(summary_last_frac="2"), "summary_last_frac must be a number in (0, 1]", None),
    ("torch-threads", _with(torch_threads="0"), "torch_threads must be an integer in [1, 1024]", None),
    ("vec-env", _with(vec_env="turbo"), "argument --vec-env: invalid choice: 'turbo'", None),
    ("wandb-mode", _with(wandb="sometimes"), "argument --wandb: invalid choice: 'sometimes'", None),
    ("wandb-project", _with(wandb_project="a/b"), "wandb_project must be a string of 1 to 128 characters", None),
    # -- the command line itself ------------------------------------------------------------------------
    ("missing-env", ["train", "--agent", "ppo"], "the following arguments are required: --env", None),
    ("unknown-option", [*TRAIN, "--stepz", "5"], "unrecognized arguments: --stepz 5", None),
    ("override-no-equals", _kw("learning_rate"), "expected key=value, got 'learning_rate'", None),
    ("override-bad-yaml", _kw("network.pi=[1,"), "cannot read the value of 'network.pi'", None),
    ("catalog-missing", [*TRAIN, "--catalog", "nope"], "catalog folder not found: nope", None),
    ("resume-nothing", [*TRAIN, "--resume"], "nothing to resume", None),
    ("resume-overwrite", [*TRAIN, "--resume", "--overwrite"], "give one of them", None),
    # -- sweep files ------------------------------------------------------------------------------------
    ("sweep-escape", SWEEP, "experiment must be a folder name", _sweep("experiment: ../../escaped\n")),
    ("sweep-absolute", SWEEP, "experiment must be a folder name", _sweep("experiment: /tmp/crl-escaped\n")),
    ("sweep-checkpoints", SWEEP, "checkpoint_every must be an integer in [1, ", _sweep("checkpoint_every: 0\n")),
    ("sweep-key-typo", SWEEP, "did you mean 'seeds'?", _sweep("seedz: 2\n")),
    (
        "sweep-env-typo",
        SWEEP,
        "did you mean 'slippery-hopper'?",
        _file("bad-sweep.yaml", "description: x\nenvs: [slipery-hopper]\nagents: [ppo]\nsteps: 256\n"),
    ),
    ("sweep-hp", SWEEP, "gamma must be a number in (0, 1], got 5", _sweep("agent_kwargs: {gamma: 5}\n")),
    ("sweep-device", SWEEP, "device must be cpu, auto", _sweep("run: {device: banana}\n")),
    ("sweep-missing", ["sweep", "nope.yaml"], "file not found: nope.yaml", None),
]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = int(e.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize(("argv", "message", "setup"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    argv: list[str],
    message: str,
    setup: Callable[[Path], None] | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    if setup is not None:
        setup(work)
    monkeypatch.chdir(work)
    monkeypatch.setattr("crl.catalog._EXTRA_DIRS", [])  # --catalog of an earlier case
    before = _tree(tmp_path)
    escaped = Path("/tmp/crl-escaped")
    rc, out, err = _run_in_process(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and "error: " in lines[0], err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err and not out.strip()
    assert _tree(tmp_path) == before, "something was written"
    assert not escaped.exists()


def test_the_table_covers_every_class_of_bad_input() -> None:
    """At least 60 cases (issue 23), and every class of the issue has some."""
    ids = [c[0] for c in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)
    for prefix in (
        "env-",
        "agent-",
        "hp-",
        "lr-",
        "batch-",
        "gamma-",
        "betas-",
        "device-",
        "exp-",
        "run-dir-",
        "steps-",
        "sweep-",
        "yaml-",
        "sac-",
    ):
        assert any(i.startswith(prefix) for i in ids), prefix


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders, so crl rightly lets it")
def test_read_only_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "ro").mkdir(mode=0o555)
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run_in_process(_with(run_dir="ro"), capsys)
    assert rc == 2 and "cannot write in ro" in err and not list((tmp_path / "ro").iterdir())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (_with(experiment="../../x"), "experiment must be a folder name"),
        (_kw("learning_rate=abc"), "learning_rate must be a number in [0, 1], got 'abc'"),
        (_with(device="banana"), "device must be cpu"),
        (_with(steps="abc"), "crl train: error: argument --steps: expected an integer"),
    ],
)
def test_the_real_command_line(argv: list[str], message: str, tmp_path: Path) -> None:
    """The same through ``python -m crl``: the user's view, one line on stderr, exit 2."""
    proc = run_crl(*argv, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
