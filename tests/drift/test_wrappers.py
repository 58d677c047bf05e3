"""Drift wrappers: exact seeded behaviour on an echo env and real MuJoCo, errors, state."""

from __future__ import annotations

import copy

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import crl
from crl.checkpoint import get_env_state, set_env_state
from crl.drift import (
    DRIFTS,
    ActionPermutation,
    ActuatorDrift,
    DampingDrift,
    FrictionDrift,
    GravityDrift,
    LevelShift,
    MassDrift,
    ObservationPermutation,
    TargetVelocity,
    TaskSequence,
)
from crl.errors import ConfigError
from tests.drift.echo_env import EchoEnv

EVERY2 = {"every_n_steps": {"change_every": 2, "align": "exact"}}


def test_level_shift_exact_offsets_on_echo_env():
    env = LevelShift(EchoEnv(length=100), scale=2.0, schedule=EVERY2, drift_seed=5)
    env.reset(seed=0)
    a = np.array([0.1, -0.2, 0.3])
    outs = [env.step(a) for _ in range(6)]
    offsets = [env.regime_params(k)["offset"] for k in range(4)]
    assert np.all(offsets[0] == 0) and not np.allclose(offsets[1], 0)
    # the step after which regime k starts returns an observation shifted by regime k's offset
    np.testing.assert_allclose(outs[0][0], a)  # regime 0
    np.testing.assert_allclose(outs[1][0], a + offsets[1])
    np.testing.assert_allclose(outs[3][0], a + offsets[2])
    assert [o[-1]["regime"] for o in outs] == [0, 0, 1, 1, 2, 2]
    assert env.observation_space.contains(outs[3][0].astype(np.float64))
    # scale: offsets ~ N(0, scale^2)
    big = np.concatenate([env.regime_params(k)["offset"] for k in range(1, 400)])
    assert abs(big.std() - 2.0) < 0.15 and abs(big.mean()) < 0.15


def test_observation_permutation_on_echo_env():
    env = ObservationPermutation(EchoEnv(length=100), flip_signs=True, schedule=EVERY2, drift_seed=1)
    env.reset(seed=0)
    a = np.array([0.1, 0.2, 0.3])
    outs = [env.step(a)[0] for _ in range(2)]
    np.testing.assert_allclose(outs[0], a)
    p = env.regime_params(1)
    np.testing.assert_allclose(outs[1], a[p["perm"]] * p["signs"])


def test_action_permutation_on_echo_env():
    env = ActionPermutation(EchoEnv(length=100), flip_signs=True, schedule=EVERY2, drift_seed=2)
    env.reset(seed=0)
    a = np.array([0.1, 0.2, 0.3])
    env.step(a)
    env.step(a)  # regime 1 from now on
    obs = env.step(a)[0]  # echo env returns the action it received
    p = env.regime_params(1)
    expected = np.empty(3)
    expected[p["perm"]] = a * p["signs"]
    np.testing.assert_allclose(obs, expected)


def test_target_velocity_direction_and_velocity_on_echo_env():
    env = TargetVelocity(EchoEnv(length=100), schedule=EVERY2)
    env.reset(seed=0)
    a = np.array([0.5, 0.0, 0.0])
    rewards = [env.step(a)[1] for _ in range(4)]
    assert rewards == [0.5, 0.5, -0.5, -0.5]
    env = TargetVelocity(EchoEnv(length=100), mode="velocity", low=1.0, high=2.0, weight=2.0, schedule=EVERY2)
    env.reset(seed=0)
    _, r, *_, info = env.step(a)
    v = env.regime_params(0)["target_velocity"]
    assert 1.0 <= v <= 2.0 and r == pytest.approx(0.5 - 0.5 - 2.0 * abs(0.5 - v))
    assert info["reward_task"] == pytest.approx(-2.0 * abs(0.5 - v))


def test_gravity_mass_actuator_damping_apply_to_mujoco():
    env = GravityDrift(gym.make("Hopper-v5"), low=5.0, high=6.0, max_tilt=20.0, drift_seed=3)
    env.reset(seed=0)
    g = env.unwrapped.model.opt.gravity
    assert 5.0 <= np.linalg.norm(g) <= 6.0
    assert np.degrees(np.arccos(-g[2] / np.linalg.norm(g))) == pytest.approx(env.params["gravity_tilt"])
    base = gym.make("Hopper-v5")
    m0, d0 = base.unwrapped.model.body_mass.copy(), base.unwrapped.model.dof_damping.copy()
    env = DampingDrift(MassDrift(base, per_body=True), low=3.0, high=3.0, offset=0.5)
    env.reset(seed=0)
    s = env.env.params["scales"]
    np.testing.assert_allclose(env.unwrapped.model.body_mass, m0 * s)
    np.testing.assert_allclose(env.unwrapped.model.dof_damping[3:], d0[3:] * 3.0 + 0.5)
    env = ActuatorDrift(gym.make("Hopper-v5"), mode="control", low=0.5, high=0.5)
    env.reset(seed=0)
    np.testing.assert_allclose(env.transform_action(np.ones(3, np.float32)), 0.5)


# Regime factors of the log-uniform drifts (drift seed 7, regimes 0, 1 and 5), recorded with
# the code that drew them inline (before crl.drift.base.log_uniform): a refactor of the draw
# must reproduce them exactly, or every stored run's regimes would change.
LOG_UNIFORM_REGIMES = {
    "actuator": (
        lambda: ActuatorDrift(gym.make("HalfCheetah-v5"), low=0.3, high=3.0, drift_seed=7),
        "scales",
        [[0.31960226222569055], [0.5833943829268379], [1.057301715591094]],
    ),
    "actuator_per": (
        lambda: ActuatorDrift(
            gym.make("HalfCheetah-v5"), low=0.3, high=3.0, per_actuator=True, mode="control", drift_seed=7
        ),
        "scales",
        [
            [
                0.31960226222569055,
                2.806416971490511,
                2.059114969071786,
                0.31430757668344206,
                0.39956475454216134,
                0.38066431797956174,
            ],
            [
                0.5833943829268379,
                1.48942621649521,
                0.515779689223539,
                0.673297648420558,
                1.6705398956639002,
                2.325475405586215,
            ],
            [
                1.057301715591094,
                1.5887272406368442,
                1.9879182509742344,
                0.4023069298069889,
                2.4993659865849027,
                2.589095192992755,
            ],
        ],
    ),
    "damping": (
        lambda: DampingDrift(gym.make("HalfCheetah-v5"), low=0.3, high=3.0, drift_seed=7),
        "damping_scale",
        [0.7280129453456187, 0.6030989279910253, 0.7733809263942868],
    ),
    "friction": (
        lambda: FrictionDrift(gym.make("Hopper-v5"), drift_seed=7),
        "friction",
        [0.11532353107002791, 0.6733801227642533, 0.7111874217625592],
    ),
    "mass": (
        lambda: MassDrift(gym.make("Hopper-v5"), low=0.3, high=3.0, drift_seed=7),
        "scales",
        [[1.3851486924401628], [0.5471767613744569], [1.1879670641007414]],
    ),
    "mass_per": (
        lambda: MassDrift(gym.make("Hopper-v5"), low=0.3, high=3.0, per_body=True, drift_seed=7),
        "scales",
        [
            [1.3851486924401628, 0.6943156950423689, 0.44643607985064643, 1.0524643226865067, 1.861048914630393],
            [0.5471767613744569, 2.6501532237017726, 2.507838132901663, 0.3717686636195096, 0.3971355060365217],
            [1.1879670641007414, 1.7024696405763415, 0.3627867398397326, 2.934638290327957, 2.560837308780672],
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(LOG_UNIFORM_REGIMES))
def test_log_uniform_regime_factors_are_unchanged_for_a_fixed_seed(case):
    make, key, expected = LOG_UNIFORM_REGIMES[case]
    env = make()
    got = [env.regime_params(k)[key] for k in (0, 1, 5)]
    for g, e in zip(got, expected, strict=True):
        assert np.ndim(g) == np.ndim(e)
        assert np.asarray(g).tolist() == e  # exact, draw for draw


def test_mass_change_does_not_disturb_the_state():
    env = MassDrift(gym.make("Hopper-v5"), schedule=EVERY2, drift_seed=0)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    d = env.unwrapped.data
    before = {k: getattr(d, k).copy() for k in ("qpos", "qvel", "qacc_warmstart", "xpos", "act")}
    t0 = d.time
    env._applied_key = None
    env.apply_params(env.regime_params(1))  # what a change does
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(d, k), v, err_msg=k)
    assert d.time == t0
    # and mj_setConst did run: the masses' derived constants follow
    fresh = mujoco.MjData(env.unwrapped.model)
    mujoco.mj_forward(env.unwrapped.model, fresh)


def test_task_sequence_switches_at_reset():
    env = TaskSequence(
        gym.make("CartPole-v1", max_episode_steps=3),
        tasks=["CartPole-v0"],
        schedule={"cyclic": {"change_every": 3, "cycle": [0, 1]}},
    )
    env.reset(seed=0)
    used = []
    for _ in range(4):
        done = False
        while not done:
            done = any(env.step(0)[2:4])
        _, info = env.reset()
        used.append((info["regime"], env.env.spec.id))
    assert used == [(1, "CartPole-v0"), (0, "CartPole-v1"), (1, "CartPole-v0"), (0, "CartPole-v1")]


def _cartpoles():
    return TaskSequence(
        gym.make("CartPole-v1", max_episode_steps=8),
        tasks=["CartPole-v0"],
        schedule={"cyclic": {"change_every": 8, "cycle": [0, 1]}},
    )


def _steps(env, n):
    out = []
    for t in range(n):
        obs, r, term, trunc, info = env.step(t % 3 % 2)
        out.append((obs.tolist(), r, info["drift/task"]))
        if term or trunc:
            out.append((env.reset()[0].tolist(), 0.0, -1.0))
    return out


def test_task_sequence_seeds_and_checkpoints_every_task():
    """Task 1 gets task 0's episode limit; a seeded reset seeds it too (its episodes repeat
    with the seed); a checkpoint taken on task 1 restores into a new env (on task 0) exactly."""
    env = _cartpoles()
    assert env.task_envs()[1].spec.max_episode_steps == 8
    runs = []
    for seed in (3, 3, 4):
        e = _cartpoles()
        e.reset(seed=seed)
        runs.append(_steps(e, 14))  # 8 steps of task 0, then 6 of task 1
    assert runs[0] == runs[1] and runs[0][-1][2] == 1.0 and runs[0][-1] != runs[2][-1]
    env.reset(seed=5)
    _steps(env, 11)
    state = get_env_state(env)
    first = _steps(env, 30)
    fresh = _cartpoles()
    fresh.reset(seed=6)
    set_env_state(fresh, state)
    assert _steps(fresh, 30) == first and {t for _, _, t in first} >= {0.0, 1.0}


def test_a_task_sequence_is_seeded_and_its_checkpoint_restores_the_task_in_use():
    """Every task's episodes come from the reset's seed (not only the first task's), and a
    snapshot taken while a later task runs restores into a fresh env (whose stack starts on
    task 0) and continues exactly."""

    def make() -> gym.Env:
        schedule = {"every_n_steps": {"change_every": 30, "align": "episode_end"}}
        return TaskSequence(gym.make("HalfCheetah-v5", max_episode_steps=20), tasks=["Walker2d-v5"], schedule=schedule)

    def run(env, steps: int) -> list[np.ndarray]:
        out = []
        for _ in range(steps):
            obs, _, term, trunc, _ = env.step(np.full(6, 0.3))
            out.append(obs)
            if term or trunc:
                out.append(env.reset()[0])
        return out

    a, b = make(), make()
    a.reset(seed=5), b.reset(seed=5)
    np.testing.assert_array_equal(run(a, 75), run(b, 75))  # Walker2d's resets seeded alike
    assert a.env.spec.id == "Walker2d-v5"
    state, fresh = get_env_state(a), make()
    fresh.reset(seed=1)
    set_env_state(fresh, state)
    assert fresh.env.spec.id == "Walker2d-v5"
    np.testing.assert_array_equal(run(a, 60), run(fresh, 60))  # back to HalfCheetah and on


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: LevelShift(EchoEnv(), scale=-1.0), "scale must be >= 0 and finite"),
        (lambda: LevelShift(gym.make("FrozenLake-v1")), "Box observation space"),
        (lambda: GravityDrift(gym.make("Hopper-v5"), low=2.0, high=1.0), "must be >= low"),
        (lambda: GravityDrift(gym.make("Hopper-v5"), max_tilt=100.0), "at most 90"),
        (lambda: GravityDrift(EchoEnv()), "needs a MuJoCo env"),
        (lambda: MassDrift(gym.make("Hopper-v5"), low=0.0), "low must be > 0 and finite"),
        (lambda: ActuatorDrift(gym.make("Hopper-v5"), mode="turbo"), "mode must be 'gear' or 'control'"),
        (lambda: DampingDrift(gym.make("Hopper-v5"), offset=-1.0), "offset must be >= 0"),
        (lambda: ObservationPermutation(EchoEnv(), permute=False), "permute and/or flip_signs"),
        (lambda: TargetVelocity(EchoEnv(), mode="sideways"), "mode must be 'direction' or 'velocity'"),
        (lambda: TaskSequence(gym.make("CartPole-v1"), tasks=["Acrobot-v1"]), "differs"),
        (lambda: TaskSequence(gym.make("CartPole-v1"), tasks=[]), "non-empty list"),
        (lambda: LevelShift(EchoEnv(), drift_seed=-1), "drift_seed"),
        (lambda: LevelShift(EchoEnv(), num_envs=0), "num_envs"),
    ],
)
def test_invalid_arguments(make, error):
    with pytest.raises(ConfigError, match=error):
        make()


CRL_IDS = sorted(i for i in gym.registry if i.startswith("crl/"))


def test_every_drift_is_in_the_catalog_or_registry():
    assert len(DRIFTS) >= 10 and len(CRL_IDS) >= 12


@pytest.mark.parametrize(
    "env_id",
    # DMC's dog is slow to build (about 3 s a task) and to step: its ids run with the expensive tests
    [pytest.param(i, marks=pytest.mark.expensive) if "dog" in i.lower() else i for i in CRL_IDS],
)
def test_check_env_on_every_registered_id(env_id):
    """Every crl id passes Gymnasium's checker, with short regimes where its schedule has a
    length (not the per-episode ``uniform`` schedule, nor a base env such as Meta-World's)."""
    from crl.drift.dmc import dmc_missing
    from crl.drift.metaworld import metaworld_missing

    if ("ContinualWorld" in env_id or "CW" in env_id) and metaworld_missing():
        pytest.skip(metaworld_missing())
    if "dmc" in env_id.lower() and dmc_missing():
        pytest.skip(dmc_missing())
    try:
        env = gym.make(env_id, change_every=20)
    except (TypeError, crl.ConfigError) as e:
        if "change_every" not in str(e):
            raise
        env = gym.make(env_id)
    check_env(env, skip_render_check=True)


def _rollout(env, n, seed):
    env.reset(seed=seed)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        obs, r, te, tr, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        out.append((obs.copy(), r, info["regime"]))
        if te or tr:
            env.reset()
    return out


@pytest.mark.parametrize("env_id", ["crl/LevelShiftHopper-v0", "crl/MassHopper-v0", "crl/CyclicHalfCheetah-v0"])
def test_two_seeded_rollouts_with_drift_are_identical(env_id):
    a = _rollout(gym.make(env_id, change_every=30, align="exact", drift_seed=1), 150, seed=3)
    b = _rollout(gym.make(env_id, change_every=30, align="exact", drift_seed=1), 150, seed=3)
    assert len({r for *_, r in a}) >= 2
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]


def test_cyclic_revisit_has_exactly_the_same_parameters():
    env = gym.make(
        "crl/SlipperyHopper-v0",
        schedule={"cyclic": {"change_every": 10, "cycle": [0, 1, 2]}},
        change_every=10,
        align="exact",
        drift_seed=4,
    )
    env.reset(seed=0)
    seen: dict[int, list[float]] = {}
    for _ in range(100):
        info = env.step(env.action_space.sample())[-1]
        seen.setdefault(info["regime"], []).append(info["drift/friction"])
        if env.unwrapped.data.time > 1e9:
            break
    assert set(seen) == {0, 1, 2}
    assert all(len(set(v)) == 1 for v in seen.values())


@pytest.mark.parametrize("env_id", ["crl/SlipperyHopper-v0", "crl/LevelShiftCartPole-v0", "crl/GravityHalfCheetah-v0"])
def test_set_state_restores_an_interrupted_drift_exactly(env_id):
    kwargs = {"change_every": 25, "drift_seed": 2}
    a = gym.make(env_id, **kwargs)
    a.reset(seed=0)
    rng = np.random.default_rng(1)
    acts = [a.action_space.sample() for _ in range(200)]
    for t in range(60):
        if any(a.step(acts[t])[2:4]):
            a.reset()
    state = copy.deepcopy(get_env_state(a))
    b = gym.make(env_id, **kwargs)
    b.reset(seed=99)
    set_env_state(b, state)
    for t in range(60, 200):
        ra, rb = a.step(acts[t]), b.step(acts[t])
        np.testing.assert_array_equal(ra[0], rb[0])
        assert ra[1:4] == rb[1:4] and ra[4]["regime"] == rb[4]["regime"]
        if ra[2] or ra[3]:
            np.testing.assert_array_equal(a.reset()[0], b.reset()[0])
    del rng


def test_set_regime_pins_and_release_resumes():
    env = gym.make("crl/LevelShiftCartPole-v0", change_every=5, align="exact")
    env.reset(seed=0)
    env.set_regime(3)
    infos = [env.step(0)[-1]["regime"] for _ in range(8) if not env.reset() or True]
    assert set(infos) == {3}
    env.release()
    assert env.regime == 0


@pytest.mark.parametrize(
    ("name", "schedule", "target", "segment", "refused"),
    [
        ("every", {"every_n_steps": {"change_every": 5, "align": "exact"}}, 3, 3, None),
        ("cyclic", {"cyclic": {"change_every": 5, "align": "exact", "cycle": [0, 4, 2]}}, 2, 2, 9),
        ("explicit", {"explicit": {"changes": [[10, 7], [20, 1]]}}, 1, 2, 9),
    ],
)
def test_set_regime_without_hold_moves_the_schedule_to_that_regime(name, schedule, target, segment, refused):
    """Not pinned: the schedule continues from a segment whose regime is the one asked for."""
    crl.register_drifting(f"test/Shift{name}-v0", base="CartPole-v1", drifts=[{"level_shift": {}}], schedule=schedule)
    env = gym.make(f"test/Shift{name}-v0")
    env.reset(seed=0)
    env.set_regime(target, hold=False)
    assert env.regime == target and env.schedule.segment == segment
    if refused is not None:  # a regime the schedule never visits
        with pytest.raises(ConfigError, match=f"regime {refused}"):
            env.set_regime(refused, hold=False)


def test_custom_registration_from_python():
    crl.register_drifting("test/HeavyHopper-v0", base="Hopper-v5", drifts=[{"mass": {"low": 2.0, "high": 2.0}}])
    env = gym.make("test/HeavyHopper-v0")
    _, info = env.reset(seed=0)
    assert info["drift/mass_scale"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="unknown argument 'heavy'; valid: low, high, per_body"):
        crl.register_drifting("test/Bad-v0", base="Hopper-v5", drifts=[{"mass": {"heavy": 1}}])
