"""Speed code: the same training math as stable-baselines3, with less overhead per step.

Nothing here changes what an agent learns (the equivalence tests hold FastPPO to SB3's PPO);
it only makes rollouts and updates cheaper. One line per module:

- :mod:`crl.fast.ppo`: :class:`FastPPO`, SB3's ``PPO`` with a leaner rollout loop and update.
- :mod:`crl.fast.sac`: :class:`FastSAC`, SB3's ``SAC`` with hand-written gradient steps and leaner acting.
- :mod:`crl.fast.sac_update`: one SAC gradient step by hand (actor, entropy coefficient, critics, targets).
- :mod:`crl.fast.sac_worker`: half of a SAC gradient step's large products in a second process.
- :mod:`crl.fast.update`: one update; each minibatch half's strategy (by hand, autograd, worker), chosen once.
- :mod:`crl.fast.gaussian`: SB3's diagonal-Gaussian terms op for op, and PPO's Gaussian loss by hand.
- :mod:`crl.fast.rollout`: a rollout's values and log-probabilities, computed in batches after its steps.
- :mod:`crl.fast.critic_worker`: the critic's half of every minibatch in a second process.
- :mod:`crl.fast.mlp`: hand-written forward and backward passes of plain MLPs.
- :mod:`crl.fast.adam`: a lean step of torch's fused Adam/AdamW.
- :mod:`crl.fast.vecenv`: :class:`ProcVecEnv`, envs stepped in worker processes.
- :mod:`crl.fast.protocol`: :class:`FastLoop` and :func:`is_rollout_safe`, for training loops and callbacks.
- :mod:`crl.fast.probe`: :class:`~crl.fast.probe.ProbeBatch`, the supervised probe's methods x seeds as one learner.

``import crl.fast`` loads torch and SB3 only when :class:`FastPPO`, :class:`FastSAC` or :class:`ProcVecEnv` is
first used; :mod:`crl.fast.protocol` needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crl.fast.protocol import FastLoop, is_rollout_safe

if TYPE_CHECKING:
    from crl.fast.ppo import FastPPO
    from crl.fast.sac import FastSAC
    from crl.fast.vecenv import ProcVecEnv

__all__ = ["FastLoop", "FastPPO", "FastSAC", "ProcVecEnv", "is_rollout_safe"]


def __getattr__(name: str) -> Any:  # FastPPO, FastSAC and ProcVecEnv on first use (PEP 562)
    if name == "FastPPO":
        from crl.fast.ppo import FastPPO

        return FastPPO
    if name == "FastSAC":
        from crl.fast.sac import FastSAC

        return FastSAC
    if name == "ProcVecEnv":
        from crl.fast.vecenv import ProcVecEnv

        return ProcVecEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
