"""Replay buffers in checkpoints: only the stored transitions, restored bit for bit.

The buffers are SB3's (and crl's reservoir), filled with data that a careless copy would get
wrong (``-0.0``, NaN, episode ends where the next observation is not the next row's), saved
through the real checkpoint writer (:func:`crl.checkpoint.atomic_save`) and compared byte for
byte; real SAC runs check the size and the exact resume end to end.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.buffers import ReplayBuffer

from crl.checkpoint import atomic_save, load
from crl.plasticity.replay import ReservoirReplayBuffer
from crl.run.replay_state import buffer_state, restore_buffer_state, stored_rows
from crl.run.status import read_status, write_status
from tests._resume import check_resumes_exactly, rows, train_here

OBS = gym.spaces.Box(-np.inf, np.inf, (5,), dtype=np.float64)
ACT = gym.spaces.Box(-1, 1, (2,), dtype=np.float32)


def _make(kind: str, size: int, n_envs: int = 1) -> ReplayBuffer:
    if kind == "reservoir":
        return ReservoirReplayBuffer(size, OBS, ACT, device="cpu", n_envs=n_envs, seed=7)
    if kind == "optimize_memory":
        return ReplayBuffer(
            size, OBS, ACT, device="cpu", n_envs=n_envs, optimize_memory_usage=True, handle_timeout_termination=False
        )
    return ReplayBuffer(size, OBS, ACT, device="cpu", n_envs=n_envs)


def _fill(buf: ReplayBuffer, steps: int, rng: np.random.Generator, n_envs: int = 1) -> None:
    """Episodes of random length: next observation = the following obs, except at episode ends."""
    obs = rng.normal(size=(n_envs, 5))
    for _ in range(steps):
        nxt = rng.normal(size=(n_envs, 5))
        nxt[rng.random(n_envs) < 0.1] = -0.0  # -0.0 == 0.0, but not the same bytes
        nxt[rng.random(n_envs) < 0.05, 0] = np.nan
        done = rng.random(n_envs) < 0.05
        infos = [{"TimeLimit.truncated": bool(rng.random() < 0.5)} for _ in range(n_envs)]
        buf.add(obs, nxt, rng.uniform(-1, 1, (n_envs, 2)), rng.normal(size=n_envs), done.astype(float), infos)
        obs = np.where(done[:, None], rng.normal(size=(n_envs, 5)), nxt)


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _assert_equal(a: ReplayBuffer, b: ReplayBuffer) -> None:
    for k, v in vars(a).items():
        if isinstance(v, np.ndarray):
            assert _same_bytes(v, getattr(b, k)), k
        elif isinstance(v, np.random.Generator):
            assert v.bit_generator.state == getattr(b, k).bit_generator.state, k
        elif k not in ("observation_space", "action_space"):
            assert v == getattr(b, k), k


CASES = [
    ("fifo", 1000, 300, 1),  # not full
    ("fifo", 100, 350, 1),  # wrapped 3.5 times: the newest row sits before the oldest
    ("fifo", 100, 100, 1),  # exactly full, pos back at 0
    ("fifo", 50, 80, 3),  # three envs per row
    ("reservoir", 60, 400, 1),  # full, rows replaced at random by the seeded generator
    ("reservoir", 500, 120, 2),
    ("optimize_memory", 100, 60, 1),  # the row after pos holds the last next observation
    ("optimize_memory", 40, 90, 1),
]


@pytest.mark.parametrize(("kind", "size", "steps", "n_envs"), CASES)
def test_a_restored_buffer_is_the_saved_one_bit_for_bit_and_continues_alike(tmp_path, kind, size, steps, n_envs):
    rng = np.random.default_rng(size + steps)
    saved = _make(kind, size, n_envs)
    _fill(saved, steps, rng, n_envs)
    atomic_save({"replay_buffer": buffer_state(saved)}, tmp_path / "last.pt")
    restored = _make(kind, size, n_envs)
    restore_buffer_state(restored, load(tmp_path / "last.pt")["replay_buffer"])
    _assert_equal(saved, restored)
    # both go on alike: the same additions land in the same rows, the same draws sample the same
    _fill(saved, 70, np.random.default_rng(1), n_envs)
    _fill(restored, 70, np.random.default_rng(1), n_envs)
    _assert_equal(saved, restored)
    np.random.seed(3)
    a = saved.sample(16)
    np.random.seed(3)
    b = restored.sample(16)
    assert all(x is y is None or _same_bytes(x.numpy(), y.numpy()) for x, y in zip(a, b))


def test_the_checkpoint_grows_with_the_transitions_stored_not_the_capacity(tmp_path):
    """A 1M-row buffer holding n transitions: about n * (obs + action + 3 floats) bytes; the
    next observations cost nothing where they are the following row's observation."""
    per_row = 5 * 8 + 2 * 4 + 3 * 4
    sizes = {}
    for n in (1000, 4000):
        buf = ReplayBuffer(1_000_000, OBS, ACT, device="cpu")
        obs = np.zeros((1, 5))
        for t in range(n):  # one long episode: each next observation is the next row's
            nxt = np.full((1, 5), t + 1.0)
            buf.add(obs, nxt, np.zeros((1, 2)), np.zeros(1), np.zeros(1), [{}])
            obs = nxt
        atomic_save(buffer_state(buf), tmp_path / f"{n}.pt")
        sizes[n] = (tmp_path / f"{n}.pt").stat().st_size
        assert n * per_row < sizes[n] < n * per_row + 20_000, (n, sizes[n])
    assert sizes[4000] - sizes[1000] == pytest.approx(3000 * per_row, rel=0.01)


def test_a_checkpoint_of_another_buffer_is_refused_in_one_line():
    saved = _make("fifo", 100, 1)
    _fill(saved, 10, np.random.default_rng(0))
    state = buffer_state(saved)
    with pytest.raises(ValueError, match=r"^the checkpoint's replay buffer \(ReplayBuffer, 100 rows\) does not match"):
        restore_buffer_state(_make("fifo", 200, 1), state)
    with pytest.raises(ValueError, match="ReservoirReplayBuffer"):
        restore_buffer_state(_make("reservoir", 100, 1), state)
    other = ReplayBuffer(100, gym.spaces.Box(-1, 1, (4,)), ACT, device="cpu")
    with pytest.raises(ValueError, match="array 'observations' does not match"):
        restore_buffer_state(other, state)


def test_stored_rows():
    buf = _make("fifo", 10, 1)
    assert stored_rows(buf) == 1
    _fill(buf, 4, np.random.default_rng(0))
    assert stored_rows(buf) == 5
    _fill(buf, 20, np.random.default_rng(0))
    assert stored_rows(buf) == 10


def _sac(root, agent: str, steps: int, *hp: str, every: int = 200) -> list[str]:
    return [
        "train",
        "--env",
        "slippery-hopper",
        "--agent",
        agent,
        "--steps",
        str(steps),
        "--env-kwargs",
        "change_every=300",
        "--agent-kwargs",
        *hp,
        "--checkpoint-every",
        str(every),
        "--run-dir",
        str(root),
        "--wandb",
        "disabled",
        "--no-progress",
    ]


def test_a_6k_step_sac_checkpoint_with_the_default_1m_buffer_is_a_few_megabytes(tmp_path, crl_cli):
    """Issue 23 item 14: it was ~200 MB (the whole preallocated buffer pickled). Random warm-up
    only (learning_starts >= steps) keeps the run short; the buffer fills the same way."""
    train_here(*_sac(tmp_path, "sac", 6010, "learning_starts=6010", every=6000))
    run = tmp_path / "default" / "slippery-hopper__sac__s0"
    ckpt = run / "checkpoints" / "last.pt"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert ckpt.stat().st_size < 8_000_000, ckpt.stat().st_size  # nets, optimizers, diagnostics: ~4 MB
    state = load(ckpt)["model"]["replay_buffer"]
    # last.pt is the checkpoint crl keeps at a run's end (step 6010): 6010 rows and the next one
    assert state["rows"] == 6011 and state["attrs"]["buffer_size"] == 1_000_000
    atomic_save(state, tmp_path / "buffer.pt")
    per_row = 11 * 8 + 3 * 4 + 3 * 4  # Hopper: 11 float64 observations, 3 float32 actions
    assert (tmp_path / "buffer.pt").stat().st_size < 6011 * per_row * 1.2


@pytest.mark.parametrize(
    ("agent", "hp"),
    [
        ("sac", ("learning_starts=100", "buffer_size=150", "batch_size=32")),  # FIFO wrapped at every checkpoint
        ("sac-replay", ("learning_starts=100", "buffer_size=150", "batch_size=32")),  # reservoir full
    ],
)
def test_sac_killed_at_random_resumes_with_the_rows_of_the_uninterrupted_run(tmp_path, crl_cli, agent, hp):
    train_here(*_sac(tmp_path / "ref", agent, 600, *hp))
    ref = tmp_path / "ref" / "default" / f"slippery-hopper__{agent}__s0"
    assert len(rows(ref / "metrics.csv")) > 3
    run = tmp_path / "killed" / "default" / f"slippery-hopper__{agent}__s0"
    # checkpoints at 200 and 400, a regime change at 300
    check_resumes_exactly(_sac(tmp_path / "killed", agent, 600, *hp), run, ref, steps=(250, 400), resume_here=True)


def test_sac_killed_after_its_final_checkpoint_writes_its_last_rows_when_resumed(tmp_path):
    """The off-policy case of the runner's test: a kill after the checkpoint of the run's end,
    before the rows written after it; the resumed run trains no step and writes them once."""
    hp = ("learning_starts=100", "batch_size=32")
    train_here(*_sac(tmp_path / "ref", "sac", 350, *hp))
    ref = tmp_path / "ref" / "default" / "slippery-hopper__sac__s0"
    cut = _sac(tmp_path / "cut", "sac", 350, *hp)
    train_here(*cut)
    run = tmp_path / "cut" / "default" / "slippery-hopper__sac__s0"
    write_status(run, status="running")  # the kill came before the run was marked finished
    train_here(*cut)
    assert read_status(run)["status"] == "finished"
    assert rows(run / "metrics.csv") == rows(ref / "metrics.csv")
    assert rows(run / "regimes.csv") == rows(ref / "regimes.csv")


@pytest.mark.parametrize("agent", ["sac", "sac-replay"])
def test_model_state_round_trip_and_a_crl_0_2_checkpoint_still_resumes(agent):
    """``model_state`` of a real SAC model restores bit for bit into a fresh one; the pickled
    whole buffer of crl 0.2.0 checkpoints is still read."""
    import pickle

    import crl
    from crl.run.state import model_state, restore_model_state

    def fresh():
        return crl.make_agent(agent, "slippery-hopper", seed=1, buffer_size=500, learning_starts=50, batch_size=16)

    model = fresh()
    model.learn(120)
    state = model_state(model)
    assert state["replay_buffer"]["rows"] == 121
    for saved in (state["replay_buffer"], pickle.dumps(model.replay_buffer)):
        other = fresh()
        restore_model_state(other, {**state, "replay_buffer": saved})
        _assert_equal(model.replay_buffer, other.replay_buffer)
