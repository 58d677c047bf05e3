"""What crl's fast algorithms add to SB3's training loop, and how callbacks declare they allow it.

A training loop (crl's runner, or a user's own) talks to a fast algorithm through
:class:`FastLoop` instead of probing it with ``getattr``; a callback tells a fast algorithm it
may defer work inside a rollout by declaring ``rollout_safe = True`` as a class attribute
(:data:`ROLLOUT_SAFE_ATTR`, read by :func:`is_rollout_safe`).

Importing this module imports neither torch nor stable-baselines3.

Example:
    >>> class Loop:
    ...     def policy_will_change(self) -> None: ...
    ...     def close_workers(self) -> None: ...
    >>> isinstance(Loop(), FastLoop), isinstance(object(), FastLoop)
    (True, False)
"""

from __future__ import annotations

import functools
from typing import Any, Protocol, runtime_checkable

__all__ = ["FastLoop", "ROLLOUT_SAFE_ATTR", "is_rollout_safe"]


@runtime_checkable
class FastLoop(Protocol):
    """What crl's fast algorithms add to SB3's training loop."""

    def policy_will_change(self) -> None:
        """A callback is about to change the policy's weights inside a rollout: work deferred
        so far (the values and log-probabilities of the steps taken) is done now, with the
        weights that acted.
        """

    def close_workers(self) -> None:
        """Stop helper processes (the critic worker); a later update starts new ones."""


#: The class attribute by which a callback declares itself rollout-safe: its ``on_step`` does
#: not change the policy's weights, or calls :meth:`FastLoop.policy_will_change` first.
ROLLOUT_SAFE_ATTR = "rollout_safe"


@functools.cache
def _sb3_callbacks() -> tuple[type, type, tuple[type, ...]]:
    """SB3's ``CallbackList``, ``ConvertCallback`` and its callbacks known not to change the
    policy's weights in ``on_step`` (imported on first use: this module stays free of SB3).
    """
    from stable_baselines3.common.callbacks import (
        CallbackList,
        CheckpointCallback,
        ConvertCallback,
        ProgressBarCallback,
        StopTrainingOnMaxEpisodes,
    )

    return CallbackList, ConvertCallback, (CheckpointCallback, ProgressBarCallback, StopTrainingOnMaxEpisodes)


def is_rollout_safe(callback: Any) -> bool:
    """Whether no callback in ``callback`` (an SB3 callback, or a ``CallbackList`` of them)
    changes the policy's weights inside a rollout without calling
    :meth:`FastLoop.policy_will_change` first: each declares :data:`ROLLOUT_SAFE_ATTR`, or is
    one of SB3's checkpoint, progress-bar and max-episodes callbacks, or is what SB3 makes of
    ``callback=None``.

    Example:
        >>> from stable_baselines3.common.callbacks import BaseCallback, CallbackList
        >>> class Logs(BaseCallback):
        ...     rollout_safe = True
        ...     def _on_step(self) -> bool:
        ...         return True
        >>> class Edits(Logs):
        ...     rollout_safe = False
        >>> is_rollout_safe(Logs()), is_rollout_safe(CallbackList([Logs(), Edits()]))
        (True, False)
    """
    callback_list, convert, safe = _sb3_callbacks()
    if isinstance(callback, callback_list):  # a subclass must declare itself safe too
        own = type(callback) is callback_list or getattr(type(callback), ROLLOUT_SAFE_ATTR, False) is True
        return own and all(is_rollout_safe(c) for c in callback.callbacks)
    if type(callback) is convert:  # what SB3 makes of ``callback=None`` (or of a function)
        return callback.callback is None
    return type(callback) in safe or getattr(type(callback), ROLLOUT_SAFE_ATTR, False) is True
