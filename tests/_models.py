"""Tiny SB3 models built through crl, shared by the tests of crl's methods on real models
(tests/plasticity): one builder, :func:`tiny_model`, and the task-id env those tests use,
:func:`cyclic_pendulum`.

Every argument a test leaves out keeps crl's own default (an ``AgentSpec`` without that key), so a
test states only what it needs: the algorithm, the network, the interventions, a few
hyperparameters over the small defaults of :data:`TINY_HP`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm

from crl.agents import build_model, with_tasks
from crl.drift import make_drifting
from crl.plasticity import InterventionSet
from crl.spec import AgentSpec

TINY_HP: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 1},
    "sac": {"learning_starts": 32, "buffer_size": 500, "batch_size": 16},
}
"""Hyperparameters of a tiny model, per algorithm: an update after 64 (PPO) or 32 (SAC) steps."""


def cyclic_pendulum(tasks: int = 2, change_every: int = 100) -> gym.Env:
    """Pendulum with a level shift cycling through ``tasks`` regimes every ``change_every`` steps
    (regimes 0, 1, ..., tasks - 1, 0, ...), the task id appended to the observation.

    Example:
        >>> cyclic_pendulum(3).observation_space.shape  # 3 Pendulum values and a one-hot of 3
        (6,)
    """
    schedule = {"cyclic": {"change_every": change_every, "cycle": list(range(tasks)), "align": "exact"}}
    return make_drifting("Pendulum-v1", drifts=[{"level_shift": {}}], schedule=schedule, task_id=True)


def tiny_model(
    algo: str,
    *,
    env: str | gym.Env = "Pendulum-v1",
    seed: int = 0,
    hyperparameters: dict[str, Any] | None = None,
    sizes: list[int] | None = None,
    network: dict[str, Any] | None = None,
    optimizer: dict[str, Any] | None = None,
    interventions: list[Any] | None = None,
    boundary_aware: bool = False,
    tasks: int = 0,
) -> tuple[BaseAlgorithm, InterventionSet]:
    """A small ``algo`` model (``"ppo"`` or ``"sac"``) on ``env`` (a gymnasium id or an env), built
    by :func:`crl.agents.build_model` with ``seed``, and its interventions.

    ``hyperparameters`` update :data:`TINY_HP`; ``sizes`` are the hidden layers of every network
    (``pi``, ``vf`` and ``qf``), ``network`` further network options (over ``sizes``); ``optimizer``
    and ``interventions`` are the spec's keys (crl's defaults where None); ``tasks`` > 0 makes an
    agent that observes the task id of an env with that many ids (``env`` must append it, as
    :func:`cyclic_pendulum` does).

    Example:
        >>> model, ivs = tiny_model("ppo", sizes=[8], interventions=[{"cchain": {}}])
        >>> type(model).__name__, model.n_steps, model.policy.net_arch, ivs.names
        ('FastPPO', 64, {'pi': [8], 'vf': [8]}, ['cchain'])
    """
    data: dict[str, Any] = {
        "description": f"tiny {algo} model of the tests",
        "algo": algo,
        "hyperparameters": {**TINY_HP[algo], **(hyperparameters or {})},
        "boundary_aware": boundary_aware,
        "task_id": tasks > 0,
    }
    if sizes is not None or network:
        data["network"] = {**({"pi": sizes, "vf": sizes, "qf": sizes} if sizes is not None else {}), **(network or {})}
    if optimizer is not None:
        data["optimizer"] = optimizer
    if interventions is not None:
        data["interventions"] = interventions
    spec = AgentSpec.from_dict(data, "tiny.yaml", name="tiny")
    return build_model(with_tasks(spec, tasks) if tasks else spec, gym.make(env) if isinstance(env, str) else env, seed)


def fast_cbp_run(preset: str, hyperparameters: dict[str, Any], steps: int, parallel: bool) -> tuple[Any, Any, bool]:
    """A CBP preset (``ppo-cbp``, ``sac-cbp``) with 24x24 networks and fast replacement (rate
    0.05, maturity 10, decay 0.9) trained ``steps`` on SlipperyHopper with one torch thread and
    its critic worker on or off (``parallel``): the model (its workers closed), the CBP
    intervention and whether a critic worker was built. The critic worker tests compare the two runs.
    """
    import torch

    import crl  # noqa: F401  (registers the crl/ env ids)
    from crl.catalog import resolve_agent

    spec = resolve_agent(preset)
    spec.hyperparameters.update(hyperparameters)
    critic = "qf" if spec.algo == "sac" else "vf"
    spec.network.pi = [24, 24]
    setattr(spec.network, critic, [24, 24])
    spec.interventions = [{"cbp": {"replacement_rate": 0.05, "maturity": 10, "decay": 0.9}}]
    torch.set_num_threads(1)
    model, iv = build_model(spec, gym.make("crl/SlipperyHopper-v0"), seed=1)
    model.parallel_update = parallel
    model.learn(steps)
    used = any(getattr(model, name, None) is not None for name in ("_critic_worker", "_sac_worker"))
    model.close_workers()
    (cbp,) = iv.interventions
    return model, cbp, used
