"""The Python API: make an agent, train a run, log like ``crl train`` from any SB3 script.

``import crl`` exposes these lazily (:func:`crl.make_agent`, :func:`crl.train`,
:func:`crl.callbacks`, :class:`crl.RunConfig`), so importing crl alone loads neither torch
nor stable-baselines3.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from crl.agents import build_model, with_tasks
from crl.catalog import resolve_agent
from crl.run import env_of
from crl.run.envs import task_count

__all__ = ["make_agent"]


def make_agent(
    agent: str,
    env: gym.Env | Any | str,
    seed: int = 0,
    *,
    device: str = "cpu",
    torch_threads: int | None = 1,
    overrides: dict[str, Any] | None = None,
    **hyperparameters: Any,
) -> BaseAlgorithm:
    """An SB3 model of catalog agent ``agent`` (or an agent YAML file) on ``env``.

    The model has the agent's algorithm, hyperparameters, network and optimizer, and its
    interventions attached (:func:`crl.plasticity.interventions_of` returns them;
    :func:`crl.callbacks` drives their regime and rollout hooks). Train it with
    ``model.learn(...)`` as any SB3 model.

    Args:
        agent: catalog name (``ppo-cbp``) or YAML path.
        env: a Gymnasium env, an SB3 ``VecEnv``, or an env name (catalog name, Gymnasium id,
            ``module:EnvId``), made with its defaults.
        seed: seed of the model (weights, sampling, interventions).
        device: torch device.
        torch_threads: torch intra-op threads, set here for the whole process as ``crl train``
            does (one thread is ~5x faster than torch's default for these small MLPs on a
            few cores); None leaves torch's setting alone.
        overrides: agent spec overrides with dotted keys (``{"optimizer.betas": [0.99, 0.99]}``).
        **hyperparameters: SB3 hyperparameters overriding the agent's (``learning_rate=1e-4``).

    Example:
        >>> import gymnasium as gym
        >>> model = make_agent("ppo-cbp", gym.make("Pendulum-v1"), seed=0, n_steps=64, batch_size=64)
        >>> type(model).__name__, model.n_steps
        ('FastPPO', 64)
        >>> from crl.plasticity import interventions_of
        >>> interventions_of(model).names
        ['cbp']
    """
    spec = resolve_agent(agent, {**(overrides or {}), **hyperparameters})
    if isinstance(env, str):
        env = gym.make(env_of(env).id, **({"task_id": True} if spec.task_id else {}))
    if spec.task_id:  # the network reads the one-hot task id that ends the observation
        first = env.envs[0] if hasattr(env, "envs") else env
        spec = with_tasks(spec, task_count(first) if isinstance(first, gym.Env) else 0)
    if torch_threads is not None:
        torch.set_num_threads(int(torch_threads))
    model, _ = build_model(spec, env, seed=seed, device=device)
    return model
