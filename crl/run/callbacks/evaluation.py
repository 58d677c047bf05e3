"""``eval/regime_<k>/return`` rows: the policy evaluated on every regime seen so far."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from crl.diagnostics import evaluate_regimes
from crl.run.callbacks.base import CrlCallback, Sink

__all__ = ["RegimeEvalCallback"]


class RegimeEvalCallback(CrlCallback):
    """Every ``every`` steps, evaluate the policy (deterministic actions) on each regime seen.

    The evaluation env is a separate copy (``make_env()``), pinned to each regime in turn
    with its drift's ``set_regime`` (which pins every drift of a stacked env); the global
    random states are restored afterwards, so training continues as without evaluation.

    Args:
        sink: where rows go.
        make_env: builds the evaluation env (one env, not vectorised); None: a copy of the
            training env made from its Gymnasium spec.
        regimes: returns the regime ids seen so far (e.g. :attr:`RegimeLogger.seen_regimes`).
        every: steps between evaluations.
        episodes: episodes per regime.
        seed: the run seed; episode ``j`` on regime ``k`` is reset with
            ``crl.seeding.derive(seed, "evaluation", k, j)``. None: the model's ``seed`` (0 if
            it has none).
    """

    def __init__(
        self,
        sink: Sink,
        make_env: Callable[[], gym.Env] | None,
        regimes: Callable[[], list[int]],
        every: int,
        episodes: int = 3,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.sink, self.make_env, self.regimes = sink, make_env, regimes
        self.every, self.episodes = int(every), int(episodes)
        self.seed = None if seed is None else int(seed)
        self.env: gym.Env | None = None
        self.last = 0

    def _on_step(self) -> bool:
        if isinstance(self.model, OffPolicyAlgorithm):
            self.maybe_evaluate(self.num_timesteps)
        return True

    def _on_rollout_start(self) -> None:
        if not isinstance(self.model, OffPolicyAlgorithm) and self.num_timesteps > 0:
            self.maybe_evaluate(self.num_timesteps)

    def maybe_evaluate(self, step: int) -> None:
        """Evaluate if ``every`` steps have passed since the last evaluation."""
        if step - self.last < self.every:
            return
        regimes = sorted(self.regimes())
        if not regimes:
            return
        if self.env is None:
            self.env = self.make_env() if self.make_env is not None else self._copy_of_training_env()
        seed = self.seed if self.seed is not None else int(getattr(self.model, "seed", None) or 0)
        row = evaluate_regimes(self.model, self.env, regimes, self.episodes, seed)
        if row:
            self.sink.log(step, row)
        self.last = step

    def _copy_of_training_env(self) -> gym.Env:
        spec = self.training_env.get_attr("spec", [0])[0]
        if spec is None:
            raise ValueError("the training env has no Gymnasium spec; pass make_env")
        kwargs = dict(spec.kwargs)
        if "num_envs" in kwargs:
            kwargs["num_envs"] = 1
        # the registered env alone: not the wrappers added around it (SB3's Monitor cannot be remade)
        return gym.make(dataclasses.replace(spec, kwargs=kwargs, additional_wrappers=()))

    def _on_training_end(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    def get_state(self) -> dict[str, Any]:
        return {"last": self.last}

    def set_state(self, state: dict[str, Any]) -> None:
        self.last = int(state["last"])
