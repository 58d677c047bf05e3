"""Evaluation across regimes: the mean return of a model on each regime of a drifting env."""

from __future__ import annotations

from typing import Any

from crl.seeding import derive

__all__ = ["evaluate_regimes"]


def _find_drift(env: Any) -> Any:
    """The outermost drift wrapper of ``env`` (its ``set_regime`` reaches the drifts inside)."""
    e = env
    while e is not None:
        if hasattr(e, "set_regime") and hasattr(e, "schedule"):
            return e
        e = getattr(e, "env", None)
    return None


def evaluate_regimes(model: Any, env: Any, regimes: list[int], episodes: int, seed: int) -> dict[str, float]:
    """Mean return of ``model`` (deterministic actions) on each regime id, in ``env`` (a
    drifting env, every drift of it pinned with ``set_regime``); episode ``j`` of regime ``k``
    is reset with seed ``crl.seeding.derive(seed, "evaluation", k, j)`` (``seed``: the run
    seed). Global RNG states are saved and restored around it, so the training run is not
    disturbed. Returns ``{"eval/regime_<k>/return": mean}``.
    """
    from crl.checkpoint import rng_state, set_rng_state

    drift = _find_drift(env)
    if drift is None:
        return {}
    saved = rng_state()
    row: dict[str, float] = {}
    try:
        for k in regimes:
            drift.set_regime(int(k))
            total = 0.0
            for j in range(episodes):
                obs, _ = env.reset(seed=derive(seed, "evaluation", int(k), j))
                done, ret = False, 0.0
                while not done:
                    action, _ = model.predict(obs, deterministic=True)
                    obs, r, term, trunc, _ = env.step(action)
                    ret += float(r)
                    done = term or trunc
                total += ret
            row[f"eval/regime_{int(k)}/return"] = total / max(episodes, 1)
    finally:
        set_rng_state(saved)
    return row
