"""FastSAC's parallel update: half of the twin critics of every gradient step in a worker process
gives bitwise the parameters, losses and intervention state of the one-process step; the worker
follows interventions, stops with the run, a kill or an error, and a killed run resumes exactly.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import crl  # noqa: F401  (registers the crl/ env ids)
from crl.fast import sac as fastsac
from crl.fast.adam import local_hooks
from crl.fast.sac import PARALLEL_MIN_WORK, FastSAC
from crl.fast.sac_worker import ParallelChooser, SacWorker
from crl.run.callbacks import NanGuard
from tests._models import fast_cbp_run
from tests._procs import process_alive
from tests._resume import check_resumes_exactly, rows, train_here

KW = dict(learning_starts=100, batch_size=64, seed=3, policy_kwargs=dict(net_arch=[64, 64]))

CASES = {
    "defaults": {},
    "tanh, 3 critics, fixed entropy coefficient": dict(
        policy_kwargs=dict(net_arch=[32, 48], activation_fn=torch.nn.Tanh, n_critics=3), ent_coef=0.2
    ),
    "target update every 2 steps, 2 gradient steps per env step": dict(target_update_interval=2, gradient_steps=2),
    "a one-layer actor (its backward stays in the trainer)": dict(
        policy_kwargs=dict(net_arch=dict(pi=[48], qf=[64, 64]))
    ),
    "a three-layer actor": dict(policy_kwargs=dict(net_arch=dict(pi=[32, 40, 48], qf=[64, 64]))),
    "frozen targets (tau 0: a Polyak update that changes nothing)": dict(tau=0.0),
}


def _params(model):
    return torch.cat([p.detach().flatten() for p in [*model.policy.parameters(), model.log_ent_coef] if p is not None])


def _train(parallel, steps=260, setup=None, **kw):
    torch.set_num_threads(1)
    model = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), parallel_update=parallel, **{**KW, **kw})
    if setup is not None:
        setup(model)
    model.learn(steps)
    used = model.parallel_steps
    model.close_workers()
    return model, used


@pytest.mark.parametrize("case", list(CASES))
def test_parallel_steps_equal_one_process_bitwise(case):
    (a, used_a), (b, used_b) = _train(False, **CASES[case]), _train(True, **CASES[case])
    assert used_a == 0 and used_b == b._n_updates > 100
    assert a.fast_path is b.fast_path is True
    assert torch.equal(_params(a), _params(b))
    for key in ("train/actor_loss", "train/critic_loss", "train/ent_coef"):
        assert a.logger.name_to_value[key] == b.logger.name_to_value[key], key
    for name in ("actor", "critic"):  # the optimizers' state too
        sa, sb = (getattr(m, name).optimizer.state_dict()["state"] for m in (a, b))
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def _entropy_hook_that_draws_and_writes_the_actor(model):
    """Not local (crl.fast.adam.local_hooks): the next actions' noise is drawn after it."""
    w = model.actor.latent_pi[0].weight

    def hook(opt, args, kwargs):
        with torch.no_grad():
            w.add_(torch.rand(w.shape) * 1e-3)

    model.ent_coef_optimizer.register_step_post_hook(hook)


def _nan_guard_on_every_optimizer(model):
    """Local hooks: the worker's pass on the next observations runs beside the entropy step."""
    guard = NanGuard()
    for opt in (model.actor.optimizer, model.critic.optimizer, model.ent_coef_optimizer):
        opt.register_step_pre_hook(guard._grad_guard)


@pytest.mark.parametrize("setup", [_entropy_hook_that_draws_and_writes_the_actor, _nan_guard_on_every_optimizer])
def test_the_entropy_steps_hooks_see_the_one_process_order(setup):
    (a, _), (b, used_b) = _train(False, steps=200, setup=setup), _train(True, steps=200, setup=setup)
    assert used_b == b._n_updates == 100
    opt = b.ent_coef_optimizer
    assert opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks  # the step has hooks to run
    assert local_hooks(opt) is (setup is not _entropy_hook_that_draws_and_writes_the_actor)
    assert torch.equal(_params(a), _params(b))


def test_a_worker_started_by_spawn_gives_the_one_process_steps(monkeypatch):
    """Without fork, the shared parameters, batch, step arguments and control block still reach
    the worker (each rebuilt from shared memory in the new process)."""

    class Spawned(SacWorker):
        def __init__(self, plan, batch_size, start_method=None):
            super().__init__(plan, batch_size, "spawn")

    monkeypatch.setattr(fastsac, "SacWorker", Spawned)
    (a, _), (b, used_b) = (
        _train(False, steps=160, target_update_interval=2),
        _train(True, steps=160, target_update_interval=2),
    )
    assert used_b == b._n_updates == 60
    assert torch.equal(_params(a), _params(b))


def test_each_side_updates_its_own_critics_targets():
    torch.set_num_threads(1)
    model = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), parallel_update=True, **KW)
    model.learn(110)
    targets, critics = model._sac_worker.polyak_pairs
    model.close_workers()
    assert [id(p) for p in targets] == [id(p) for p in model.critic_target.qf0.parameters()]
    assert [id(p) for p in critics] == [id(p) for p in model.critic.qf0.parameters()]


def test_continual_backprop_sees_the_workers_critic_features_and_replaces_units():
    """sac-cbp: CBP's utilities of critic 1 come from features computed in the worker; its unit
    replacements (inside the critics' optimizer step) reach the worker's parameters."""

    hp = {"learning_starts": 50, "batch_size": 32, "buffer_size": 1000}
    (a, cbp_a, _), (b, cbp_b, _) = (fast_cbp_run("sac-cbp", hp, 150, parallel) for parallel in (False, True))
    assert (a.parallel_steps, b.parallel_steps) == (0, 100)
    assert torch.equal(_params(a), _params(b))
    assert set(cbp_a.util) == set(cbp_b.util) and len(cbp_b.util) >= 6  # actor, both critics
    for key in cbp_a.util:
        assert torch.equal(cbp_a.util[key], cbp_b.util[key]) and torch.equal(cbp_a.age[key], cbp_b.age[key]), key
    assert all(u.abs().sum() > 0 for u in cbp_b.util.values())  # every layer was fed, critic 1's from the worker
    assert cbp_a.replaced == cbp_b.replaced > 0


def test_actor_and_critic_parameters_given_new_storage_reach_the_worker():
    runs = {}
    for parallel in (False, True):
        torch.set_num_threads(1)
        model = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), parallel_update=parallel, **KW)
        model.learn(150)
        worker = model._sac_worker
        for p in [*model.critic.parameters(), *model.critic_target.parameters(), *model.actor.parameters()]:
            p.data = p.data * 1.5 + 0.25  # new storage, new values (the worker runs the actor too)
        model.learn(100, reset_num_timesteps=False)
        assert model._sac_worker is worker  # the same worker saw the new values
        runs[parallel] = _params(model)
        model.close_workers()
    assert worker is not None and torch.equal(runs[False], runs[True])


def test_automatic_mode_and_what_runs_in_one_process(monkeypatch):
    monkeypatch.setattr(fastsac, "usable_cores", lambda: 2)
    _, used = _train(None, steps=120)
    assert not used  # 64x64 critics x 64 rows is below the threshold
    monkeypatch.setattr(fastsac, "PARALLEL_MIN_WORK", 1000)
    monkeypatch.setattr(ParallelChooser, "PROBE", 4)
    monkeypatch.setattr(ParallelChooser, "KEEP", 10)
    auto, used = _train(None, steps=160)  # 60 steps: probes of 4 + 4, then 10 the faster way
    assert 12 <= used < 60 and auto._chooser.speedup is not None  # at least the probes
    assert torch.equal(_params(auto), _params(_train(False, steps=160)[0]))  # either way, the same numbers
    monkeypatch.setattr(fastsac, "usable_cores", lambda: 1)
    _, used = _train(None, steps=120)
    assert not used
    one, used = _train(True, steps=120, policy_kwargs=dict(net_arch=[16], n_critics=1))
    assert not used and SacWorker.unsupported(one._current_plan()) == "a single critic"
    critics = sum(p.numel() for p in one.critic.parameters())
    assert 64 * critics * 2 < PARALLEL_MIN_WORK


def test_the_chooser_keeps_the_faster_way_and_probes_again():
    c = ParallelChooser()
    c.PROBE, c.KEEP = 2, 3
    ways = []
    for i in range(14):  # the worker is faster in the first probe, slower in the second
        way = c.parallel()
        ways.append(way)
        c.record(way, (0.01 if i < 7 else 0.03) if way else 0.02)
    assert ways == [False, True, False, True, True, True, True, False, True, False, True, False, False, False]
    assert c.speedup == pytest.approx(2 / 3)


def test_the_chooser_compares_medians_of_alternating_steps():
    """A machine that slows down during the probe slows both ways alike; one outlier step does not decide."""
    c = ParallelChooser()
    c.PROBE, c.KEEP = 5, 10
    for i in range(10):
        way = c.parallel()
        slow = 1 + i / 10  # the machine slows down by half during the probe
        c.record(way, (0.5 if i == 1 else 0.010 * slow) if way else 0.013 * slow)
    assert c.parallel() and 1.0 < c.speedup < 1.2  # one after the other (and by sums) the worker would lose


def test_the_chooser_probes_again_when_the_kept_way_slows_down():
    """A second core taken by another job in the middle of a keep phase: the worker's steps get
    slower than the probe saw, and a new probe starts after WINDOW steps, not after KEEP."""
    c = ParallelChooser()
    c.PROBE, c.KEEP, c.WINDOW = 2, 1000, 4
    ways = []
    for i in range(14):
        way = c.parallel()
        ways.append(way)
        c.record(way, (0.03 if i >= 6 else 0.01) if way else 0.02)  # the worker 3x slower from step 6
    probe, kept = [False, True, False, True], [True] * 4  # two fast kept steps, two slow: the median doubled
    assert ways == probe + kept + probe + [False, False]
    assert c.speedup == pytest.approx(2 / 3) and not c.probing


def test_an_error_in_the_actors_step_leaves_no_polyak_half_pending():
    """A hook of the actor's optimizer raises once: the step stops before the Polyak update, in
    both ways; the worker (waiting for phase 7) is stopped, so its half does not land later."""

    def raise_once(model):
        calls = []

        def hook(opt, args, kwargs):
            calls.append(1)
            if len(calls) == 30:
                raise RuntimeError("the hook's error")

        model.actor.optimizer.register_step_pre_hook(hook)

    runs = []
    for parallel in (False, True):
        torch.set_num_threads(1)
        model = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), parallel_update=parallel, **KW)
        raise_once(model)
        with pytest.raises(RuntimeError, match="the hook's error"):
            model.learn(200)
        assert model._sac_worker is None or model._sac_worker.closed
        model.learn(60, reset_num_timesteps=False)
        runs.append(_params(model))
        model.close_workers()
    assert torch.equal(runs[0], runs[1])


def test_a_changed_critic_an_error_and_a_dead_worker():
    torch.set_num_threads(1)
    model = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), parallel_update=True, **KW)
    model.learn(110)
    first = model._sac_worker
    model.learn(5, reset_num_timesteps=False)
    assert model._sac_worker is first  # reused across steps
    model.policy.critic.qf1[0] = torch.nn.Linear(4, 64)  # a structural change: a new plan, a new worker
    model.critic.optimizer = torch.optim.Adam(model.critic.parameters(), lr=1e-3)
    model.learn(5, reset_num_timesteps=False)
    assert model._sac_worker is not first and first.closed and not first.handle.proc.is_alive()
    second = model._sac_worker

    def boom(opt):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):  # an error in the trainer mid-step stops the worker
        fastsac.parallel_gradient_step(second, model, _batch(model), True, boom)
    assert second.closed and not second.handle.proc.is_alive()
    model.learn(5, reset_num_timesteps=False)
    third = model._sac_worker
    assert third is not second
    os.kill(third.handle.proc.pid, signal.SIGKILL)
    third.handle.proc.join(5)
    with pytest.raises(RuntimeError, match="worker process died"):
        model.learn(5, reset_num_timesteps=False)
    model.close_workers()


def _batch(model):
    from crl.fast.sac_update import sample_batch

    return sample_batch(model.replay_buffer, model.batch_size, model.gamma)


def test_saved_model_has_no_worker_and_loads_with_sb3(tmp_path):
    from stable_baselines3 import SAC

    model, used = _train(True, steps=120)
    model.save(tmp_path / "m.zip")
    assert torch.equal(_params(model), _params(SAC.load(tmp_path / "m.zip")))
    again = FastSAC.load(tmp_path / "m.zip", env=gym.make("Pendulum-v1"))
    assert used and again.parallel_update is True and again._sac_worker is None


def _workers_of(run_dir: Path) -> list[int]:
    """Processes (the trainer and its forked workers) whose command line names ``run_dir``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd, stat = (d / "cmdline").read_bytes(), (d / "stat").read_text()
            except OSError:
                continue
            if str(run_dir).encode() in cmd and stat.split()[2] != "Z":
                pids.append(int(d.name))
    return pids


def _cmd(root: Path, parallel: bool) -> list[str]:
    return [
        "train",
        "--env",
        "slippery-hopper",
        "--agent",
        "sac",
        "--steps",
        "700",
        "--env-kwargs",
        "change_every=300",
        "--agent-kwargs",
        "learning_starts=100",
        "buffer_size=400",
        "batch_size=32",
        f"parallel_update={str(parallel).lower()}",
        "--checkpoint-every",
        "200",
        "--run-dir",
        str(root),
        "--wandb",
        "disabled",
        "--no-progress",
    ]


def _no_processes_left(root: Path) -> None:
    deadline = time.monotonic() + 10
    while _workers_of(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _workers_of(root)


def test_crl_train_with_the_worker_killed_at_random_resumes_with_the_one_process_rows(tmp_path):
    """A real ``crl train --agent sac`` with the worker on: killed at random (no process left
    behind), resumed, it writes the rows of an uninterrupted one-process run (that one trains in
    this process: tests._resume.train_here)."""
    train_here(*_cmd(tmp_path / "ref", False))
    ref = tmp_path / "ref" / "default" / "slippery-hopper__sac__s0"
    assert len(rows(ref / "metrics.csv")) > 3
    killed = tmp_path / "killed"
    run = killed / "default" / "slippery-hopper__sac__s0"
    check_resumes_exactly(_cmd(killed, True), run, ref, random.Random(7), steps=(250, 550))
    _no_processes_left(killed)


def test_the_worker_exits_when_the_trainer_is_killed_mid_run():
    code = (
        "import time, gymnasium as gym\n"
        "from crl.fast.sac import FastSAC\n"
        "m = FastSAC('MlpPolicy', gym.make('Pendulum-v1'), parallel_update=True, learning_starts=10,\n"
        "            batch_size=16, policy_kwargs=dict(net_arch=[16]))\n"
        "m.learn(20)\n"
        "print(m._sac_worker.handle.proc.pid, flush=True)\n"
        "m.learn(10**7)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    pid = int(p.stdout.readline())
    time.sleep(0.5)  # inside the training loop: the worker blocks on its pipe or polls inside a step
    p.kill()
    p.wait()
    deadline = time.monotonic() + 10
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(pid)
