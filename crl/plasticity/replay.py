"""Replay buffers by name: SB3's FIFO buffer and a reservoir that keeps past regimes.

A FIFO buffer smaller than the run forgets the oldest regimes first; the reservoir
(reservoir sampling, Vitter's algorithm R) keeps a uniform sample of *every* transition seen
so far, so the agent keeps training on earlier regimes (Continual World's reservoir replay).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer

from crl.errors import UnknownNameError

__all__ = ["ReservoirReplayBuffer", "REPLAY_BUFFERS", "make_replay_buffer_class"]


class ReservoirReplayBuffer(ReplayBuffer):
    """A replay buffer filled by reservoir sampling.

    Until it is full it fills like SB3's buffer. Afterwards the ``n``-th addition (one row:
    one transition per env) replaces a uniformly chosen row with probability
    ``buffer_size / n`` and is dropped otherwise, so every row seen so far is in the buffer
    with the same probability. The generator is seeded and pickled with the buffer, so
    checkpoints resume exactly.

    Args:
        seed: seed of the replacement draws (crl passes ``crl.seeding.derive(run seed, "replay")``).
        Other arguments: as SB3's ``ReplayBuffer`` (``optimize_memory_usage`` is refused:
        it relies on rows being stored in time order).

    Example:
        >>> import gymnasium as gym
        >>> space = gym.spaces.Box(-1, 1, (1,))
        >>> buf = ReservoirReplayBuffer(10, space, space, seed=0)
        >>> for t in range(1000):
        ...     x = np.array([[t]], dtype=np.float32)
        ...     buf.add(x, x, np.zeros((1, 1)), np.zeros(1), np.zeros(1), [{}])
        >>> buf.seen, bool(buf.observations.min() < 500 < buf.observations.max())  # old and new kept
        (1000, True)
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: Any,
        action_space: Any,
        device: Any = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        seed: int = 0,
    ) -> None:
        if optimize_memory_usage:
            raise ValueError("the reservoir buffer does not support optimize_memory_usage")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=False,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add(self, obs: Any, next_obs: Any, action: Any, reward: Any, done: Any, infos: Any) -> None:  # type: ignore[override]
        self.seen += 1
        if not self.full:
            super().add(obs, next_obs, action, reward, done, infos)
            return
        slot = int(self.rng.integers(self.seen))
        if slot < self.buffer_size:
            self.pos = slot
            super().add(obs, next_obs, action, reward, done, infos)
            self.pos, self.full = 0, True


#: Replay buffer classes by name (agent YAML: ``replay_buffer: reservoir``).
REPLAY_BUFFERS: dict[str, type[ReplayBuffer]] = {"fifo": ReplayBuffer, "reservoir": ReservoirReplayBuffer}


def make_replay_buffer_class(name: str) -> type[ReplayBuffer]:
    """The replay buffer class registered as ``name``."""
    if name not in REPLAY_BUFFERS:
        raise UnknownNameError("replay buffer", name, list(REPLAY_BUFFERS))
    return REPLAY_BUFFERS[name]
