"""Resets triggered by a unit's own statistics: Self-Normalized Resets and ReGraMa.

* :class:`SelfNormalizedResets` (``snr``; Farias & Jozefiak, ICLR 2025): a unit is reset when
  it has been silent for longer than its own firing rate makes plausible.
* :class:`ReGraMa` (``regrama``; Liu et al., NeurIPS 2025, "Measure gradients, not
  activations!"): ReDo's recycling with the gradient-magnitude score (GraMa) in place of the
  activation score.

Both re-initialise units with :meth:`crl.plasticity.units.UnitIntervention.reset_units`
(fresh incoming weights from the seeded generator, bias 0, outgoing weights 0, Adam moments of
those weights 0) after optimizer steps, and keep their counters and generator in
``state_dict()``, so a resumed run continues exactly.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from crl.plasticity import attach
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> net.optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    >>> snr, regrama = attach(net, ["snr", {"regrama": {"every": 1}}]).interventions
    >>> net(torch.randn(4, 2)).sum().backward(); net.optimizer.step()
    >>> snr.seen["net/0"].tolist(), regrama.steps
    ([4, 4, 4], 1)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from crl.errors import check_number
from crl.plasticity.base import register_intervention
from crl.plasticity.nets import HiddenLayer, MLPView
from crl.plasticity.units import ReDo, UnitIntervention

__all__ = ["ReGraMa", "SelfNormalizedResets"]


@register_intervention
class SelfNormalizedResets(UnitIntervention):
    """Self-Normalized Resets (Farias & Jozefiak, ICLR 2025): reset a unit when the time since it
    last fired exceeds the ``percentile`` quantile of its inter-firing time.

    A unit *fires* on an input when its output is positive (the authors' ``activation > 0``;
    CReLU: either half). After every optimizer step of a network, for each hidden unit ``i``
    and the ``B`` inputs of the minibatch:

    1. ``k_i += #inputs it fired on``, ``n_i += B``; its age ``a_i`` (inputs since it last
       fired) becomes 0 if it fired on any of them, else ``a_i + B``;
    2. its firing rate is ``p_i = (k_i + 1) / (n_i + 2)`` (counts since its last
       (re)initialisation, Laplace's rule: no division by zero, no certainty from few inputs);
    3. if the unit fired independently with probability ``p_i`` per input, its silence would
       last ``a`` inputs or more with probability ``(1 - p_i) ** a``; the threshold is the
       ``percentile`` quantile of that geometric inter-firing time,
       ``t_i = max(1, ceil(log(1 - percentile) / log(1 - p_i)))``;
    4. units with ``a_i >= t_i`` are reset (fresh incoming weights, bias 0, outgoing weights 0,
       Adam moments 0), and their ``k_i, n_i, a_i`` go back to 0.

    This is the hypothesis test of the paper's Algorithm 1 (reject "the unit still fires at its
    usual rate" in favour of "its rate dropped to zero" at level ``1 - percentile``). The
    authors' released code estimates each unit's threshold differently: from a histogram (MLP)
    or the mean (transformer) of its recent inter-firing times, re-estimated periodically
    (every ``threshold_reset_freq = 16`` tasks in its MLP code; thresholds expanded x2 when the
    quantile exceeds them, floored at one batch, capped).
    crl keeps the paper's single hyperparameter and estimates the rate over the unit's life.
    With ``percentile >= 1 - 1/e`` (about 0.63), a unit that has never fired since its
    (re)initialisation is never reset (no evidence that its rate dropped). Meant for
    ReLU-like activations: tanh or ELU units "fire" on about half their inputs.

    Args:
        percentile: the rejection percentile (0.99: ``threshold_percentile``'s default in the
            authors' code, ``src/models/MLP.py`` of ajozefiak/SelfNormalizedResets; the paper's
            robustness claim and RL settings: not verified).
        init: distribution of fresh incoming weights (see ``crl.plasticity.nets.INIT_FNS``).
        seed: seed of the fresh weights (crl derives it from the run seed, see :mod:`crl.seeding`).

    Example:
        >>> SelfNormalizedResets.thresholds(torch.tensor([20, 1, 0]), torch.tensor([40, 100, 500]), 0.99).tolist()
        [7, 233, 2310]
    """

    name = "snr"
    batched = False

    def __init__(self, percentile: float = 0.99, init: str = "lecun_uniform", seed: int = 0) -> None:
        percentile = check_number("percentile", percentile, 0.0, 1.0, low_open=True, high_open=True)
        super().__init__(seed=seed, init=init)
        self.percentile = percentile
        self.fired: dict[str, torch.Tensor] = {}
        """k_i: inputs each unit fired on since its (re)initialisation."""
        self.seen: dict[str, torch.Tensor] = {}
        """n_i: inputs seen since its (re)initialisation."""
        self.age: dict[str, torch.Tensor] = {}
        """a_i: inputs since it last fired."""
        self.resets = 0

    def _setup(self) -> None:
        for view in self.views:
            for layer in view.layers:
                key = f"{view.name}/{layer.name}"
                for counts in (self.fired, self.seen, self.age):
                    counts[key] = torch.zeros(layer.width, dtype=torch.long)

    @staticmethod
    def thresholds(fired: torch.Tensor, seen: torch.Tensor, percentile: float) -> torch.Tensor:
        """``t_i = max(1, ceil(log(1 - percentile) / log(1 - p_i)))`` with
        ``p_i = (fired_i + 1) / (seen_i + 2)``: the silence (in inputs) after which a unit is reset.
        """
        p = (fired.double() + 1.0) / (seen.double() + 2.0)
        t = torch.ceil(math.log1p(-percentile) / torch.log1p(-p))
        return t.clamp(min=1).long()

    def _after_step(self, view: MLPView) -> None:
        for layer in view.layers:
            h = layer.features
            if h is None:
                continue
            key, b = f"{view.name}/{layer.name}", h.numel() // h.shape[-1]
            h = h.reshape(b, h.shape[-1])
            on = (layer.units(h) > 0 if layer.doubled else h > 0).sum(0)
            self.fired[key] += on
            self.seen[key] += b
            silent = torch.nonzero(on == 0).flatten()
            self.age[key][on > 0] = 0
            if silent.numel() == 0:  # every unit fired: nothing to test
                continue
            self.age[key][silent] += b
            t = self.thresholds(self.fired[key][silent], self.seen[key][silent], self.percentile)
            reset = silent[self.age[key][silent] >= t]
            if reset.numel():
                self._reset(view, layer, key, reset)

    def _reset(self, view: MLPView, layer: HiddenLayer, key: str, idx: torch.Tensor) -> None:
        self.reset_units(view, layer, idx, reset_optimizer=True)
        for counts in (self.fired, self.seen, self.age):
            counts[key][idx] = 0
        self.resets += int(idx.numel())

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "resets": self.resets,
            **{name: {k: v.clone() for k, v in getattr(self, name).items()} for name in ("fired", "seen", "age")},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.resets = int(state["resets"])
        for name in ("fired", "seen", "age"):
            for k, v in state[name].items():
                getattr(self, name)[k] = v.clone()


@register_intervention
class ReGraMa(ReDo):
    """ReGraMa (Liu et al., NeurIPS 2025): ReDo's recycling guided by GraMa, the gradient
    magnitude of each unit, instead of its activation.

    Every ``every`` optimizer steps of a network, for each hidden layer with incoming weights
    ``W`` (units x inputs) and their gradient ``G = dL/dW`` of that step (what the optimizer
    just used, penalties added by other interventions included):

    ``s_i = mean_j |G[i, j]| / mean_k mean_j |G[k, j]|``

    and units with ``s_i <= tau`` are recycled as ReDo recycles them (fresh incoming weights,
    bias 0, outgoing weights 0, Adam moments 0); output layers never. The score is the authors'
    (``weight.grad.abs().mean(dim=1)`` normalised by its layer mean, their ``GradientReDo``); a
    dead ReLU unit has ``G[i] = 0`` and is always caught, and so is a unit whose outgoing weights
    are all 0. Unlike the authors' SAC code (critics only, outgoing weights kept, output layer
    included), crl recycles every hidden layer of every network (actor and critics, policy and
    value nets) with ReDo's surgery. Networks without a gradient at that step are skipped.

    Args:
        tau: GraMa threshold (the authors' SAC runs: 0.1).
        every: optimizer steps between checks (the authors: 1000).
        init: distribution of fresh incoming weights.
        seed: seed of the fresh weights (crl derives it from the run seed, see :mod:`crl.seeding`).

    Example:
        >>> ReGraMa.grama(torch.tensor([[0.0, 0.0], [1.0, -3.0]])).tolist()
        [0.0, 2.0]
    """

    name = "regrama"
    needs_features = False

    def __init__(self, tau: float = 0.1, every: int = 1000, init: str = "lecun_uniform", seed: int = 0) -> None:
        super().__init__(tau=tau, every=every, init=init, seed=seed)

    @staticmethod
    def grama(grad: torch.Tensor) -> torch.Tensor:
        """GraMa scores from the gradient of a layer's incoming weights (units x inputs)."""
        g = grad.abs().mean(1)
        return g / g.mean().clamp(min=1e-12)

    def _after_step(self, view: MLPView) -> None:
        if self.optimizer_steps(view) % self.every != 0:
            return
        for layer in view.layers:
            grad = layer.inp.weight.grad
            if grad is None:
                continue
            idx = torch.nonzero(self.grama(grad) <= self.tau).flatten()
            self.reset_units(view, layer, idx, reset_optimizer=True)
            self.recycled += int(idx.numel())
