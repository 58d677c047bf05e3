"""The run-time probe: :class:`Diagnostics`, the ``plasticity/*`` rows of an SB3 model
(:class:`crl.run.DiagnosticsCallback` logs them during training).

:class:`Diagnostics` finds every hidden layer of every network of an SB3 model (PPO:
``policy``/``value``; SAC/TD3: ``actor``, ``critic_1``, ``critic_2``...) with the one MLP
walker (:func:`crl.plasticity.nets.hidden_layers`) and returns
``plasticity/<net>/<layer>/<metric>`` rows, one per registered metric
(:data:`crl.diagnostics.DIAGNOSTICS`), computed on a fixed probe batch of states. Dohare's
dormant fraction uses the current nets' activity on the states of the last 1000 training
steps (kept with the probe batch), which costs one forward pass of 1000 states per row. Its
state (probe batch, recent states, initial and previous weights) is part of the run's
checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import crl.diagnostics.metrics  # noqa: F401  (registers the built-in rows)
from crl.diagnostics.registry import DIAGNOSTICS, Diagnostic, LayerProbe, LayerUpdate
from crl.plasticity.nets import HiddenLayer, hidden_layers

__all__ = ["Diagnostics"]


def _networks(model: Any) -> dict[str, tuple[nn.Module, Any]]:
    """Networks of an SB3 model: name -> (module holding the hidden layers, forward(obs))."""
    pol = model.policy
    nets: dict[str, tuple[nn.Module, Any]] = {}
    if hasattr(pol, "mlp_extractor"):  # on-policy ActorCriticPolicy

        def feats(obs: torch.Tensor) -> torch.Tensor:
            return pol.extract_features(
                obs, pol.pi_features_extractor if not pol.share_features_extractor else pol.features_extractor
            )

        def vfeats(obs: torch.Tensor) -> torch.Tensor:
            return pol.extract_features(
                obs, pol.vf_features_extractor if not pol.share_features_extractor else pol.features_extractor
            )

        ex = pol.mlp_extractor
        nets["policy"] = (ex.policy_net, lambda o: ex.policy_net(feats(o)))
        nets["value"] = (ex.value_net, lambda o: ex.value_net(vfeats(o)))
        return nets
    actor = getattr(pol, "actor", None)

    def act(o: torch.Tensor) -> torch.Tensor:  # deterministic: never draws from the torch RNG
        try:
            return actor(o, deterministic=True)
        except TypeError:
            return actor(o)

    if actor is not None:
        nets["actor"] = (actor, act)
    critic = getattr(pol, "critic", None)
    if critic is not None:
        for k, q in enumerate(getattr(critic, "q_networks", [])):

            def run_q(o: torch.Tensor, q: nn.Module = q) -> Any:
                f = critic.extract_features(o, critic.features_extractor)
                a = act(o) if actor is not None else torch.zeros((o.shape[0], critic.action_space.shape[0]))
                return q(torch.cat([f, a], dim=1))

            nets[f"critic_{k + 1}"] = (q, run_q)
    return nets


class Diagnostics:
    """Computes the plasticity diagnostics of an SB3 model on a probe batch.

    Every metric of :data:`~crl.diagnostics.registry.DIAGNOSTICS` is computed for every hidden
    layer (:func:`crl.plasticity.nets.hidden_layers`: ``Linear`` [+ ``LayerNorm``] + activation,
    CReLU included) of every network of the model.

    Args:
        model: the SB3 model (PPO, SAC, ...).
        probe_size: number of probe states (>= 256 recommended).
        dormant_window: steps whose states give Dohare's dormant fraction.
        tau: ReDo threshold.

    Call :meth:`add_states` with recent observations (the probe batch is refreshed from
    them by :meth:`refresh_probe`), :meth:`after_update` after each gradient update (the
    ``on="update"`` metrics: weight change, gradient norm), and :meth:`compute` to get the
    metric row.
    """

    def __init__(self, model: Any, probe_size: int = 256, dormant_window: int = 1000, tau: float = 0.0) -> None:
        self.model = model
        self.probe_size, self.tau, self.dormant_window = int(probe_size), float(tau), int(dormant_window)
        self.nets = _networks(model)
        self.layers: dict[str, list[HiddenLayer]] = {n: hidden_layers(m) for n, (m, _) in self.nets.items()}
        self.probe: np.ndarray | None = None
        self.recent: list[np.ndarray] = []
        self.init = self._snapshot()
        self.prev = self._snapshot()
        self.last_update: dict[str, dict[str, float]] = {}
        """``{metric: {"<net>/<path>": value}}`` of the ``on="update"`` metrics."""

    def _snapshot(self) -> dict[str, list[torch.Tensor]]:
        """CPU copies of every hidden layer's incoming ``Linear`` parameters, by ``<net>/<path>``."""
        return {
            f"{n}/{layer.path}": [p.detach().cpu().clone() for p in layer.inp.parameters()]
            for n, layers in self.layers.items()
            for layer in layers
        }

    def add_states(self, obs: np.ndarray) -> None:
        """Keep recent observations (``(n, *obs_shape)``) for the next probe refresh."""
        obs = np.asarray(obs, dtype=np.float32).reshape(-1, *self.model.observation_space.shape)
        self.recent.append(obs)
        total = sum(len(o) for o in self.recent)
        keep = max(self.probe_size, self.dormant_window)
        while self.recent and total - len(self.recent[0]) >= keep:
            total -= len(self.recent.pop(0))

    def refresh_probe(self) -> None:
        """Make the probe batch the last ``probe_size`` recorded states."""
        if self.recent:
            self.probe = np.concatenate(self.recent)[-self.probe_size :].copy()

    def after_update(self) -> None:
        """Compute the ``on="update"`` metrics (weight change since the last call, gradient norms)."""
        snap = self._snapshot()
        metrics = [d for d in DIAGNOSTICS.values() if d.on == "update"]
        for n, layers in self.layers.items():
            for layer in layers:
                key = f"{n}/{layer.path}"
                update = LayerUpdate(layer=layer, current=snap[key], previous=self.prev[key])
                for d in metrics:
                    value = d.fn(update)
                    if value is not None:
                        self.last_update.setdefault(d.name, {})[key] = float(value)
        self.prev = snap

    def _features(self, states: np.ndarray) -> dict[str, torch.Tensor]:
        """The activation outputs of every hidden layer on ``states``, by ``<net>/<path>``."""
        feats: dict[str, torch.Tensor] = {}
        handles = []
        for n, layers in self.layers.items():
            for layer in layers:
                handles.append(
                    layer.act.register_forward_hook(
                        lambda m, i, o, key=f"{n}/{layer.path}": feats.__setitem__(key, o.detach().cpu())
                    )
                )
        try:
            obs = torch.as_tensor(states, device=self.model.device)
            with torch.no_grad():
                for n, (_, fwd) in self.nets.items():
                    if self.layers[n]:
                        fwd(obs)
        finally:
            for h in handles:
                h.remove()
        return feats

    def probes(self) -> list[LayerProbe]:
        """A :class:`~crl.diagnostics.registry.LayerProbe` per hidden layer, on the current
        probe batch (empty without one).
        """
        if self.probe is None:
            self.refresh_probe()
        if self.probe is None:
            return []
        feats = self._features(self.probe)
        # Dohare's dormant units: activity of the current nets on the states of the last
        # ``dormant_window`` training steps
        window = np.concatenate(self.recent)[-self.dormant_window :] if self.recent else self.probe
        recent = self._features(window)
        out = []
        for n, layers in self.layers.items():
            for index, layer in enumerate(layers):
                key = f"{n}/{layer.path}"
                h, r = feats.get(key), recent.get(key)
                out.append(
                    LayerProbe(
                        net=n,
                        index=index,
                        layer=layer,
                        features=None if h is None else h.numpy().astype(np.float64),
                        recent=None if r is None else r.numpy().astype(np.float64),
                        init=self.init[key],
                        update={m: v[key] for m, v in self.last_update.items() if key in v},
                        tau=self.tau,
                        window=self.dormant_window,
                    )
                )
        return out

    def compute(self) -> dict[str, float]:
        """The ``plasticity/<net>/<layer>/<metric>`` row (empty without a probe batch)."""
        row: dict[str, float] = {}
        for probe in self.probes():
            prefix = f"plasticity/{probe.net}/{probe.index}/"
            for d in list(DIAGNOSTICS.values()):
                value = _value(d, probe)
                if value is not None:
                    row[prefix + d.name] = float(value)
        return row

    # -- checkpoint ------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "probe": None if self.probe is None else self.probe.copy(),
            "recent": [r.copy() for r in self.recent],
            "init": self.init,
            "prev": self.prev,
            "last_update": self.last_update,
        }

    def load(self, s: dict[str, Any]) -> None:
        self.probe, self.recent, self.init, self.prev = s["probe"], list(s["recent"]), s["init"], s["prev"]
        self.last_update = s["last_update"]


def _value(d: Diagnostic, probe: LayerProbe) -> float | None:
    """The metric ``d`` of one layer (``None``: no value in this row)."""
    if d.on == "features":
        return None if probe.features is None else d.fn(probe.features)
    if d.on == "weights":
        return d.fn(probe.layer.inp.weight.detach())
    if d.on == "layer":
        return d.fn(probe)
    return probe.update.get(d.name)  # "update": computed by Diagnostics.after_update
