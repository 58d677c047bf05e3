"""Plasticity diagnostics: pure functions on activations/weights, and the run-time probe.

Definitions follow ``REFERENCE.md`` section 4. The pure functions take a feature matrix
``h`` (batch x width, post-activation) or parameter tensors and return floats:

* :func:`tau_dormant_fraction` (ReDo): share of units with ``s_i <= tau``,
  ``s_i = mean|h_i| / mean_j mean|h_j|``.
* :func:`active_fraction`: mean over batch and units of ``[h > 0]``.
* :func:`srank` (Kumar et al. 2021), :func:`effective_rank` (Roy & Vetterli 2007),
  :func:`stable_rank` from the singular values of ``h``.
* :func:`feature_norm`, :func:`mean_abs_weight`, :func:`param_distance`, :func:`grad_norm`.
* :class:`DormantRecord`: Dohare's dormant units (active in <= 1% of the last 1000 steps),
  a ring buffer of per-step activity bits per unit. The run-time probe fills it with the
  current nets' activity on the states of the last 1000 training steps (kept with the
  probe batch), which costs one forward pass of 1000 states per diagnostics row.

:class:`Diagnostics` finds every hidden layer (a ``Linear`` followed by an activation) of
every network of an SB3 model (PPO: ``policy``/``value``; SAC/TD3: ``actor``, ``critic_1``,
``critic_2``...) and returns ``plasticity/<net>/<layer>/<metric>`` rows computed on a fixed
probe batch of states. Its state (probe batch, recent states, initial and previous
weights) is part of the run's checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

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
    "hidden_layers",
    "Diagnostics",
]

_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Softplus, nn.Mish)


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


def hidden_layers(net: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """The hidden layers of an MLP: ``(name, linear, activation)`` for every ``Linear``
    (in registration order) directly followed by an activation module (optionally after a
    ``LayerNorm``). The activation's output is the layer's feature.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
        >>> [n for n, _, _ in hidden_layers(net)]
        ['0', '2']
    """
    mods = [(n, m) for n, m in net.named_modules() if not list(m.children())]
    out = []
    for i, (name, m) in enumerate(mods):
        if not isinstance(m, nn.Linear):
            continue
        j = i + 1
        while j < len(mods) and isinstance(mods[j][1], nn.LayerNorm):
            j += 1
        if j < len(mods) and isinstance(mods[j][1], _ACTIVATIONS):
            out.append((name, m, mods[j][1]))
    return out


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

    Args:
        model: the SB3 model (PPO, SAC, ...).
        probe_size: number of probe states (>= 256 recommended).
        dormant_window: steps whose states give Dohare's dormant fraction.
        tau: ReDo threshold.

    Call :meth:`add_states` with recent observations (the probe batch is refreshed from
    them by :meth:`refresh_probe`), :meth:`after_update` after each gradient update (weight
    change and gradient norm), and :meth:`compute` to get the metric row.
    """

    def __init__(self, model: Any, probe_size: int = 256, dormant_window: int = 1000, tau: float = 0.0) -> None:
        self.model = model
        self.probe_size, self.tau, self.dormant_window = int(probe_size), float(tau), int(dormant_window)
        self.nets = _networks(model)
        self.layers = {n: hidden_layers(m) for n, (m, _) in self.nets.items()}
        self.probe: np.ndarray | None = None
        self.recent: list[np.ndarray] = []
        self.init = self._snapshot()
        self.prev = self._snapshot()
        self.last_update = {"weight_change": {}, "grad_norm": {}}

    def _params(self, net: str, lin: nn.Module) -> list[torch.Tensor]:
        return [p for p in lin.parameters()]

    def _snapshot(self) -> dict[str, list[torch.Tensor]]:
        return {
            f"{n}/{name}": [p.detach().cpu().clone() for p in lin.parameters()]
            for n, layers in self.layers.items()
            for name, lin, _ in layers
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
        """Record weight change since the last call and the current gradient norms."""
        snap = self._snapshot()
        for n, layers in self.layers.items():
            for name, lin, _ in layers:
                key = f"{n}/{name}"
                self.last_update["weight_change"][key] = param_distance(snap[key], self.prev[key])
                self.last_update["grad_norm"][key] = grad_norm(list(lin.parameters()))
        self.prev = snap

    def _features(self, states: np.ndarray) -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = {}
        handles = []
        for n, layers in self.layers.items():
            for name, _, act in layers:
                handles.append(
                    act.register_forward_hook(
                        lambda m, i, o, key=f"{n}/{name}": feats.__setitem__(key, o.detach().cpu())
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

    def compute(self) -> dict[str, float]:
        """The ``plasticity/<net>/<layer>/<metric>`` row (empty without a probe batch)."""
        if self.probe is None:
            self.refresh_probe()
        if self.probe is None:
            return {}
        row: dict[str, float] = {}
        feats = self._features(self.probe)
        # Dohare's dormant units: activity of the current nets on the states of the last
        # ``dormant_window`` training steps
        window = np.concatenate(self.recent)[-self.dormant_window :] if self.recent else self.probe
        recent_feats = self._features(window)
        for n, layers in self.layers.items():
            for li, (name, lin, _) in enumerate(layers):
                key = f"{n}/{name}"
                h = feats.get(key)
                p = f"plasticity/{n}/{li}/"
                params = [q.detach().cpu() for q in lin.parameters()]
                row[p + "mean_abs_weight"] = mean_abs_weight([lin.weight])
                row[p + "dist_from_init"] = param_distance(params, self.init[key])
                if key in self.last_update["weight_change"]:
                    row[p + "weight_change"] = self.last_update["weight_change"][key]
                    row[p + "grad_norm"] = self.last_update["grad_norm"][key]
                if h is None:
                    continue
                hn = h.numpy().astype(np.float64)
                sv = singular_values(hn)
                rec = DormantRecord(hn.shape[1], self.dormant_window)
                rec.update(recent_feats[key].numpy())
                row[p + "dormant_tau"] = tau_dormant_fraction(hn, self.tau)
                row[p + "dormant_dohare"] = rec.dormant_fraction()
                row[p + "active_fraction"] = active_fraction(hn)
                row[p + "srank"] = float(srank(hn, sv=sv))
                row[p + "effective_rank"] = effective_rank(hn, sv=sv)
                row[p + "stable_rank"] = stable_rank(hn, sv=sv)
                row[p + "feature_norm"] = feature_norm(hn)
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


# -- evaluation across regimes ----------------------------------------------------
def _find_drift(env: Any) -> Any:
    e = env
    while e is not None:
        if hasattr(e, "set_regime") and hasattr(e, "schedule"):
            return e
        e = getattr(e, "env", None)
    return None


def evaluate_regimes(model: Any, env: Any, regimes: list[int], episodes: int, seed: int) -> dict[str, float]:
    """Mean return of ``model`` (deterministic actions) on each regime id, in ``env`` (a
    drifting env, pinned with ``set_regime``); episode ``j`` of regime ``k`` is reset with
    seed ``seed + 1000 * k + j``. Global RNG states are saved and restored around it, so the
    training run is not disturbed. Returns ``{"eval/regime_<k>/return": mean}``.
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
                obs, _ = env.reset(seed=seed + 1000 * int(k) + j)
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


# -- the run-time monitor (called from crl.run.RunCallback) -------------------------
class RunMonitor:
    """Diagnostics, regime evaluation and per-regime summaries of one run.

    :class:`crl.run.RunCallback` calls it from a few hooks; its :meth:`state` is part of the
    callback's checkpoint state, so a resumed run continues exactly.

    Args:
        model: the SB3 model.
        log: ``log(step, row)`` (the tracker's).
        summary: ``summary(dict)`` (the tracker's wandb summary).
        diagnostics_every: steps between diagnostics rows (0 disables).
        probe_refresh_every: steps between probe batch refreshes.
        eval_every: steps between evaluations across regimes (0 disables).
        eval_episodes: episodes per regime and evaluation.
        make_eval_env: builds the separate evaluation env.
        eval_seed: seed base of the evaluation episodes.
        last_frac: the "last X%" of a regime that its final return is averaged over.
        reach_frac: steps to reach this fraction of the previous regime's final return.
    """

    def __init__(
        self,
        model: Any,
        log: Any,
        summary: Any,
        diagnostics_every: int = 0,
        probe_refresh_every: int = 100_000,
        eval_every: int = 0,
        eval_episodes: int = 3,
        make_eval_env: Any = None,
        eval_seed: int = 0,
        last_frac: float = 0.1,
        reach_frac: float = 0.9,
    ) -> None:
        self.model, self.log, self.summary = model, log, summary
        self.diagnostics_every, self.probe_refresh_every = int(diagnostics_every), int(probe_refresh_every)
        self.eval_every, self.eval_episodes = int(eval_every), int(eval_episodes)
        self.make_eval_env, self.eval_seed = make_eval_env, int(eval_seed)
        self.last_frac, self.reach_frac = float(last_frac), float(reach_frac)
        self.diag = Diagnostics(model) if self.diagnostics_every > 0 else None
        self.eval_env: Any = None
        self.last_diag = 0
        self.last_probe = -(10**18)
        self.last_eval = 0
        self.last_row: dict[str, float] = {}
        self.episodes: list[tuple[int, int, float]] = []  # (step, segment, return) of open segments
        self.prev_final: float | None = None
        self.seen_regimes: list[int] = []

    # -- hooks -----------------------------------------------------------------
    def on_episode(self, step: int, segment: int, ret: float) -> None:
        self.episodes.append((int(step), int(segment), float(ret)))

    def on_regime(self, regime: int) -> None:
        if int(regime) not in self.seen_regimes:
            self.seen_regimes.append(int(regime))

    def collect_states(self) -> None:
        """Keep the states of the last rollout (on-policy) or replay buffer (off-policy)."""
        if self.diag is None:
            return
        m = self.model
        buf = getattr(m, "rollout_buffer", None)
        if buf is not None and buf.full:
            self.diag.add_states(buf.observations.reshape(-1, *m.observation_space.shape))
            return
        rb = getattr(m, "replay_buffer", None)
        if rb is not None:
            end = rb.buffer_size if rb.full else rb.pos
            n = max(self.diag.probe_size, self.diag.dormant_window)
            obs = rb.observations[max(0, rb.pos - n) : rb.pos] if rb.pos else rb.observations[:end]
            self.diag.add_states(obs)

    def after_update(self, step: int) -> None:
        """Called after every update (on-policy) or at each step check (off-policy)."""
        if self.diag is not None and step - self.last_diag >= self.diagnostics_every:
            self.collect_states()
            if step - self.last_probe >= self.probe_refresh_every or self.diag.probe is None:
                self.diag.refresh_probe()
                self.last_probe = step
            self.diag.after_update()
            row = self.diag.compute()
            if row:
                self.log(step, row)
                self.last_row = row
            self.last_diag = step
        elif (
            self.diag is not None
            and getattr(self.model, "rollout_buffer", None) is not None
            and step - self.last_diag + self._rollout() >= self.diagnostics_every
        ):
            # on-policy: snapshot the weights one update before the next diagnostics row, so that
            # its weight_change is the change made by exactly one update
            self.diag.after_update()
        if self.eval_every > 0 and step - self.last_eval >= self.eval_every:
            self.evaluate(step)

    def _rollout(self) -> int:
        return int(getattr(self.model, "n_steps", 1) * getattr(self.model, "n_envs", 1))

    def evaluate(self, step: int) -> None:
        if self.make_eval_env is None or not self.seen_regimes:
            return
        if self.eval_env is None:
            self.eval_env = self.make_eval_env()
        row = evaluate_regimes(self.model, self.eval_env, sorted(self.seen_regimes), self.eval_episodes, self.eval_seed)
        if row:
            self.log(step, row)
        self.last_eval = step

    def regime_ended(self, reg: dict[str, Any]) -> dict[str, Any]:
        """Summary columns of the regime row ``reg`` (which has ``start_step``, ``end_step``)."""
        seg, start, end = reg["segment"], int(reg["start_step"]), int(reg["end_step"])
        eps = [(s, r) for s, g, r in self.episodes if g == seg]
        self.episodes = [e for e in self.episodes if e[1] > seg]
        out: dict[str, Any] = {"episodes": len(eps)}
        if eps:
            cut = end - self.last_frac * (end - start)
            late = [r for s, r in eps if s >= cut] or [eps[-1][1]]
            final = float(np.mean(late))
            out["final_return"] = final
            out["best_return"] = max(r for _, r in eps)
            if self.prev_final is not None:
                target = self.prev_final - (1.0 - self.reach_frac) * abs(self.prev_final)
                hit = next((s for s, r in eps if r >= target), None)
                out["steps_to_reach"] = None if hit is None else hit - start
            self.prev_final = final
        for k, v in self._boundary_diagnostics().items():
            out[k] = v
        self.summary({f"regime_{seg}/{k}": v for k, v in out.items() if v is not None})
        return out

    def _boundary_diagnostics(self) -> dict[str, float]:
        """Latest diagnostics, averaged over the layers of each network: ``<net>/<metric>``."""
        acc: dict[str, list[float]] = {}
        for k, v in self.last_row.items():
            _, net, _, metric = k.split("/")
            acc.setdefault(f"{net}/{metric}", []).append(v)
        return {k: float(np.mean(v)) for k, v in acc.items()}

    # -- checkpoint ------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "diag": None if self.diag is None else self.diag.state(),
            "last_diag": self.last_diag,
            "last_probe": self.last_probe,
            "last_eval": self.last_eval,
            "last_row": dict(self.last_row),
            "episodes": list(self.episodes),
            "prev_final": self.prev_final,
            "seen_regimes": list(self.seen_regimes),
        }

    def load(self, s: dict[str, Any]) -> None:
        if self.diag is not None and s["diag"] is not None:
            self.diag.load(s["diag"])
        self.last_diag, self.last_probe, self.last_eval = s["last_diag"], s["last_probe"], s["last_eval"]
        self.last_row, self.episodes = dict(s["last_row"]), list(s["episodes"])
        self.prev_final, self.seen_regimes = s["prev_final"], list(s["seen_regimes"])
