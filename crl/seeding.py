"""The random streams of a run, each derived from the run seed by one function.

A run of seed ``s`` draws from several independent random streams. Each is named, and its
seed is ``derive(s, name, *index)``: numpy's :class:`~numpy.random.SeedSequence` of the
entropy ``[s, crc32(name), *index]``, so streams of one run are statistically independent,
two run seeds give different streams, and the same seed gives the same streams, in any
process and on any machine.

The streams of a run of seed ``s``, and where their state is kept for an exact resume:

* **agent** (SB3's torch and numpy global generators, the action space): ``s`` itself, through
  SB3's ``set_random_seed``; the global states are in the checkpoint.
* **interventions**: intervention ``i`` of the agent's list (cbp, redo, reset, ...) draws from
  ``derive(s, "intervention", i)``; a ``seed:`` written in the agent spec is used instead
  (every run seed then shares it). The generator's state is in the intervention's state.
* **evaluation**: episode ``j`` on regime ``k`` is reset with ``derive(s, "evaluation", k, j)``;
  no state (one seed per episode).
* **replay**: the reservoir buffer's draws, ``derive(s, "replay")``; the generator is saved
  with the buffer.
* **drift**: regime ``k``'s parameters come from ``generator(drift_seed, <drift class name>, k)``,
  a random-walk schedule's moves from ``generator(drift_seed, "random_walk")`` and a uniform
  schedule's regime of segment ``k`` from ``generator(drift_seed, "uniform", k)``, where
  ``drift_seed`` is ``s`` unless set, so every agent of seed ``s`` faces the same regimes. The
  parameters are a pure function of the seed; the walk's state is in the schedule's state.

:mod:`crl.seeding` depends on numpy only, so :mod:`crl.drift` can use it and stay usable from
any RL code.

Example:
    >>> derive(0, "intervention", 0) == derive(0, "intervention", 0)
    True
    >>> len({derive(0, "intervention", 0), derive(1, "intervention", 0), derive(0, "intervention", 1),
    ...      derive(0, "evaluation", 0, 0)})
    4
    >>> 0 <= derive(2**40, "replay") < 2**63
    True
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["derive", "generator", "sequence"]


def sequence(seed: int, stream: str, *index: int) -> np.random.SeedSequence:
    """The :class:`~numpy.random.SeedSequence` of ``stream`` (and ``index``) in a run of ``seed``.

    Its entropy is ``[seed, crc32(stream), *index]``; ``np.random.default_rng(sequence(...))``
    is the same generator as ``np.random.default_rng([seed, crc32(stream), *index])``.

    Args:
        seed: the run seed (a non-negative integer).
        stream: the stream's name (``"intervention"``, ``"evaluation"``, ...).
        *index: non-negative integers that tell apart the streams of one name (the
            intervention's place, the regime and episode, ...).

    Example:
        >>> sequence(3, "replay").entropy[0], len(sequence(3, "evaluation", 2, 1).entropy)
        (3, 4)
    """
    if int(seed) < 0 or any(int(i) < 0 for i in index):
        raise ValueError(f"seed and index must be non-negative integers, got {seed!r} and {index!r}")
    return np.random.SeedSequence([int(seed), zlib.crc32(stream.encode()), *(int(i) for i in index)])


def derive(seed: int, stream: str, *index: int) -> int:
    """An integer seed (``0 <= x < 2**63``) for ``stream`` in a run of ``seed``: for APIs that
    take an int (``torch.Generator.manual_seed``, ``env.reset(seed=...)``, a constructor's
    ``seed=``). See :func:`sequence` for the arguments and the module docstring for the streams.

    Example:
        >>> derive(0, "evaluation", 3, 0) != derive(0, "evaluation", 0, 3)
        True
    """
    return int(sequence(seed, stream, *index).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generator(seed: int, stream: str, *index: int) -> np.random.Generator:
    """A numpy generator of ``stream`` in a run of ``seed`` (see :func:`sequence`).

    Example:
        >>> float(generator(0, "replay").random()) == float(generator(0, "replay").random())
        True
    """
    return np.random.default_rng(sequence(seed, stream, *index))
