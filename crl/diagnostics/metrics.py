"""The diagnostic metrics: pure functions on features, weights and gradients, and the rows
they fill.

Definitions follow ``REFERENCE.md`` section 4. The functions take a feature matrix ``h``
(batch x width, post-activation) or parameter tensors and return floats:

* :func:`tau_dormant_fraction` (ReDo): share of units with ``s_i <= tau``,
  ``s_i = mean|h_i| / mean_j mean|h_j|``.
* :func:`active_fraction`: mean over batch and units of ``[h > 0]``.
* :func:`srank` (Kumar et al. 2021), :func:`effective_rank` (Roy & Vetterli 2007),
  :func:`stable_rank` from the singular values of ``h``.
* :func:`feature_norm`, :func:`mean_abs_weight`, :func:`param_distance`, :func:`grad_norm`.
* :class:`DormantRecord`: Dohare's dormant units (active in <= 1% of the last 1000 steps),
  a ring buffer of per-step activity bits per unit.

The end of the module registers the rows :class:`~crl.diagnostics.Diagnostics` logs for every
hidden layer (``plasticity/<net>/<layer>/<row>``), in the order of their columns:

* ``mean_abs_weight``: mean ``|w|`` of the incoming weight matrix;
* ``dist_from_init``: ``||theta - theta_0||`` of the incoming ``Linear`` (weight and bias);
* ``weight_change``, ``grad_norm``: the change made by the last update and the gradient norm
  after it (rows that follow an update);
* ``dormant_tau`` (ReDo, threshold ``tau``), ``dormant_dohare`` (Dohare: active in at most 1%
  of the last ``dormant_window`` steps): per unit, a CReLU unit's two halves added (it is dormant
  only where both are);
* ``active_fraction``, ``srank``, ``effective_rank``, ``stable_rank``, ``feature_norm``: on the
  activation's output (what the next layer reads, ``2 * width`` columns for CReLU).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from crl.diagnostics.registry import LayerProbe, LayerUpdate, register_diagnostic

__all__ = [
    "tau_dormant_fraction",
    "active_fraction",
    "singular_values",
    "srank",
    "effective_rank",
    "stable_rank",
    "feature_norm",
    "mean_abs_weight",
    "param_distance",
    "grad_norm",
    "DormantRecord",
]


def _np(h: Any) -> np.ndarray:
    if isinstance(h, torch.Tensor):
        h = h.detach().cpu().numpy()
    return np.asarray(h, dtype=np.float64)


def tau_dormant_fraction(h: Any, tau: float = 0.0) -> float:
    """ReDo's dormant fraction: share of units whose normalised score ``s_i <= tau``.

    Example:
        >>> tau_dormant_fraction([[1.0, 0.0, 2.0, 0.0], [3.0, 0.0, 2.0, 0.0]])
        0.5
        >>> tau_dormant_fraction([[1.0, 4.0], [1.0, 4.0]], tau=0.5)  # s = [0.4, 1.6]
        0.5
    """
    a = np.abs(_np(h)).mean(axis=0)
    denom = a.mean()
    if denom <= 0:
        return 1.0
    return float(np.mean(a / denom <= tau))


def active_fraction(h: Any) -> float:
    """Mean over batch and units of ``[h > 0]``.

    Example:
        >>> active_fraction([[1.0, 0.0], [1.0, -1.0]])
        0.5
    """
    return float(np.mean(_np(h) > 0))


def singular_values(h: Any) -> np.ndarray:
    """Singular values of the feature matrix (descending).

    Uses torch (which keeps to ``torch.set_num_threads``): numpy's BLAS threads made the SVD
    100x slower on a busy machine.
    """
    return torch.linalg.svdvals(torch.as_tensor(_np(h))).numpy()


def srank(h: Any, delta: float = 0.01, sv: np.ndarray | None = None) -> int:
    """Kumar et al.'s srank: smallest k with ``sum_{i<=k} sigma_i >= (1 - delta) sum sigma``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> srank(rng.normal(size=(64, 2)) @ rng.normal(size=(2, 16)))
        2
    """
    s = singular_values(h) if sv is None else sv
    total = s.sum()
    if total <= 0:
        return 0
    c = np.cumsum(s) / total
    return int(np.searchsorted(c, 1.0 - delta - 1e-12) + 1)


def effective_rank(h: Any, sv: np.ndarray | None = None) -> float:
    """Roy & Vetterli's effective rank ``exp(-sum p ln p)``, ``p = sigma / sum sigma``.

    Example:
        >>> round(effective_rank(np.eye(4)), 6)
        4.0
    """
    s = singular_values(h) if sv is None else sv
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def stable_rank(h: Any, sv: np.ndarray | None = None) -> float:
    """Stable rank ``sum sigma^2 / max sigma^2``.

    Example:
        >>> stable_rank(np.diag([2.0, 1.0]))
        1.25
    """
    s = singular_values(h) if sv is None else sv
    if s.size == 0 or s[0] <= 0:
        return 0.0
    return float((s**2).sum() / s[0] ** 2)


def feature_norm(h: Any) -> float:
    """Mean over the batch of the L2 norm of the feature vector.

    Example:
        >>> feature_norm([[3.0, 4.0], [0.0, 0.0]])
        2.5
    """
    return float(np.linalg.norm(_np(h), axis=1).mean())


def mean_abs_weight(params: list[torch.Tensor]) -> float:
    """Mean ``|w|`` over all entries of the given tensors.

    Example:
        >>> mean_abs_weight([torch.tensor([1.0, -3.0])])
        2.0
    """
    n = sum(p.numel() for p in params)
    return float(sum(p.detach().abs().sum().item() for p in params) / max(n, 1))


def param_distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """L2 distance ``||a - b||`` between two lists of tensors (flattened together).

    Example:
        >>> param_distance([torch.tensor([3.0, 0.0])], [torch.tensor([0.0, 4.0])])
        5.0
    """
    sq = sum(float(((x.detach().cpu() - y.detach().cpu()) ** 2).sum()) for x, y in zip(a, b, strict=True))
    return float(np.sqrt(sq))


def grad_norm(params: list[torch.Tensor]) -> float:
    """L2 norm of the gradients of ``params`` (0 where no gradient is stored).

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])
        >>> grad_norm([p])
        5.0
    """
    return float(np.sqrt(sum(float((p.grad.detach() ** 2).sum()) for p in params if p.grad is not None)))


class DormantRecord:
    """Dohare's dormant units: active (``h > 0``) in at most ``threshold`` of the last
    ``window`` recorded steps.

    Each :meth:`update` takes a feature matrix ``(n, width)`` (one row per step) and pushes
    its activity bits into a ring buffer (``window x width`` booleans).

    Example:
        >>> r = DormantRecord(width=4, window=10)
        >>> r.update(np.array([[1.0, 0.0, 1.0, 0.0]] * 10))
        >>> r.dormant_fraction()
        0.5
    """

    def __init__(self, width: int, window: int = 1000, threshold: float = 0.01) -> None:
        self.window, self.threshold = int(window), float(threshold)
        self.bits = np.zeros((self.window, width), dtype=bool)
        self.pos = 0
        self.count = 0

    def update(self, h: Any) -> None:
        act = _np(h) > 0
        act = act[-self.window :]
        n = act.shape[0]
        idx = (self.pos + np.arange(n)) % self.window
        self.bits[idx] = act
        self.pos = int((self.pos + n) % self.window)
        self.count = min(self.count + n, self.window)

    def dormant_fraction(self) -> float:
        if self.count == 0:
            return 0.0
        rate = self.bits.sum(axis=0) / self.count
        return float(np.mean(rate <= self.threshold))

    def state(self) -> dict[str, Any]:
        return {"bits": self.bits.copy(), "pos": self.pos, "count": self.count}

    def load(self, s: dict[str, Any]) -> None:
        self.bits, self.pos, self.count = s["bits"].copy(), int(s["pos"]), int(s["count"])


# -- the rows of every hidden layer, in the order of their columns ------------------------
@register_diagnostic("mean_abs_weight", on="weights")
def _mean_abs_weight(weight: torch.Tensor) -> float:
    return mean_abs_weight([weight])


@register_diagnostic("dist_from_init", on="layer")
def _dist_from_init(layer: LayerProbe) -> float:
    return param_distance(layer.params, layer.init)


@register_diagnostic("weight_change", on="update")
def _weight_change(update: LayerUpdate) -> float:
    return param_distance(update.current, update.previous)


@register_diagnostic("grad_norm", on="update")
def _grad_norm(update: LayerUpdate) -> float:
    return grad_norm(update.params)


@register_diagnostic("dormant_tau", on="layer")
def _dormant_tau(layer: LayerProbe) -> float | None:
    units = layer.units
    return None if units is None else tau_dormant_fraction(units, layer.tau)


@register_diagnostic("dormant_dohare", on="layer")
def _dormant_dohare(layer: LayerProbe) -> float | None:
    units = layer.recent_units
    if units is None:
        return None
    record = DormantRecord(units.shape[1], layer.window)
    record.update(units)
    return record.dormant_fraction()


register_diagnostic("active_fraction", on="features")(active_fraction)


@register_diagnostic("srank", on="layer")
def _srank(layer: LayerProbe) -> float | None:
    sv = layer.singular_values
    return None if sv is None else float(srank(layer.features, sv=sv))


@register_diagnostic("effective_rank", on="layer")
def _effective_rank(layer: LayerProbe) -> float | None:
    sv = layer.singular_values
    return None if sv is None else effective_rank(layer.features, sv=sv)


@register_diagnostic("stable_rank", on="layer")
def _stable_rank(layer: LayerProbe) -> float | None:
    sv = layer.singular_values
    return None if sv is None else stable_rank(layer.features, sv=sv)


register_diagnostic("feature_norm", on="features")(feature_norm)
