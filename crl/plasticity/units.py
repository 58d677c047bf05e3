"""The unit-reinitialisation family: continual backprop, ReDo, Shrink & Perturb, resets.

All of them act on :class:`~crl.plasticity.nets.MLPView` s after optimizer steps (through
``optimizer.register_step_post_hook``) or at regime boundaries, and keep every counter,
utility and random generator in ``state_dict()`` so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from crl.errors import ConfigError, check_int, check_non_negative
from crl.plasticity.base import Intervention, register_intervention
from crl.plasticity.nets import INIT_FNS, HiddenLayer, MLPView, capture_features, find_mlps, init_rows

__all__ = [
    "UnitIntervention",
    "ContinualBackprop",
    "ReDo",
    "ShrinkPerturb",
    "Reset",
    "NetworkDraws",
    "zero_optimizer_state",
]


def zero_optimizer_state(
    optimizer: torch.optim.Optimizer | None, param: torch.Tensor, index: Any, dim: int, net: int | None = None
) -> None:
    """Zero the optimizer's per-parameter moments (Adam's ``exp_avg``/``exp_avg_sq``...) of
    ``param`` at ``index`` along ``dim`` (of network ``net`` of a batched parameter).
    """
    if optimizer is None or param not in optimizer.state:
        return
    for key, value in optimizer.state[param].items():
        if key != "step" and isinstance(value, torch.Tensor) and value.shape == param.shape:
            (value if net is None else value[net]).index_fill_(dim, index, 0.0)


class NetworkDraws:
    """The random streams of a batched network: network ``b`` draws from its own generator,
    seeded ``seed + b``, in exactly the order in which an intervention on a single network
    draws from its generator seeded ``seed + b``. A batched run of B networks is then, draw for
    draw, B single runs with seeds ``seed, ..., seed + B - 1``.

    The per-step uniforms of all networks come from blocks drawn ``ahead`` at a time (one
    tensor operation per step instead of one call per network); :meth:`generator` hands out a
    network's generator for other draws (fresh weights) after rewinding it to the start of its
    block and advancing it past the uniforms used, and the block is redrawn from there.

    Example:
        >>> draws = NetworkDraws(seed=5, n_nets=3, ahead=4)
        >>> u = [draws.uniform(torch.tensor([True, False, True])) for _ in range(6)]
        >>> g = torch.Generator().manual_seed(7)  # network 2, alone: seed 5 + 2
        >>> [round(float(x[2]), 6) for x in u] == [round(float(torch.rand(1, generator=g)), 6) for _ in range(6)]
        True
        >>> torch.equal(torch.rand(3, generator=draws.generator(2)), torch.rand(3, generator=g))
        True
    """

    def __init__(self, seed: int, n_nets: int, ahead: int = 256) -> None:
        self.n_nets, self.ahead = int(n_nets), int(ahead)
        self.gens = [torch.Generator().manual_seed(int(seed) + b) for b in range(self.n_nets)]
        self.start: list[torch.Tensor] = [g.get_state() for g in self.gens]
        self.buf = torch.empty(self.n_nets, self.ahead)
        self.pos = torch.zeros(self.n_nets, dtype=torch.long)
        self.stale: set[int] = set()
        for b in range(self.n_nets):
            self._refill(b)
        self.left = self.ahead  # a lower bound of the unused uniforms of every block
        self.skipped = 0
        """Uniforms consumed by every network through :meth:`skip`, not yet counted in ``pos``."""

    def _refill(self, b: int) -> None:
        self.start[b] = self.gens[b].get_state()
        self.buf[b] = torch.rand(self.ahead, generator=self.gens[b])
        self.pos[b] = 0

    def _settle(self) -> None:
        """Redraw the blocks of networks whose generator was handed out, then count the skipped uniforms."""
        for b in self.stale:
            self._refill(b)
        self.stale.clear()
        if self.skipped:
            self.pos += self.skipped
            self.left -= self.skipped
            self.skipped = 0

    def skip(self) -> None:
        """Consume the next uniform of every network without reading it (after :meth:`quiet`
        said that it is not below its threshold): no tensor operation until the next read.
        """
        self.skipped += 1

    def quiet(self, thresholds: list[torch.Tensor]) -> int:
        """How many steps, each consuming one uniform of every network per entry of
        ``thresholds`` (float64, one per network) in turn, draw no uniform below its
        threshold, counted within the blocks already drawn (no step past a block's end).
        """
        self._settle()
        per_step = len(thresholds)
        rel = torch.arange(self.ahead).unsqueeze(0) - self.pos.unsqueeze(1)  # offsets from each network's position
        thr = torch.stack(thresholds, 1).gather(1, rel.clamp(min=0) % per_step)
        hit = (rel >= 0) & (self.buf.double() < thr)
        first = torch.where(hit, rel, self.ahead).amin(1) // per_step  # steps before a network's first hit
        room = (self.ahead - self.pos) // per_step  # complete steps left in a network's block
        return int(torch.minimum(first, room).min())

    def uniform(self, mask: torch.Tensor) -> torch.Tensor:
        """The next uniform of every network (float64); only networks in ``mask`` consume it."""
        self._settle()
        if self.left <= 0:
            for b in torch.nonzero(self.pos >= self.ahead).flatten().tolist():
                self._refill(b)
            self.left = self.ahead - int(self.pos.max())
        u = self.buf.gather(1, self.pos.unsqueeze(1)).squeeze(1)
        self.pos += mask
        self.left -= 1
        return u.double()

    def generator(self, b: int) -> torch.Generator:
        """Network ``b``'s generator, positioned right after the uniforms it has used."""
        self._settle()
        g = self.gens[b]
        g.set_state(self.start[b])
        used = int(self.pos[b])
        if used:
            torch.rand(used, generator=g)
        self.stale.add(b)
        return g

    def state_dict(self) -> dict[str, Any]:
        self._settle()
        return {
            "gens": [g.get_state() for g in self.gens],
            "start": [s.clone() for s in self.start],
            "buf": self.buf.clone(),
            "pos": self.pos.clone(),
            "stale": sorted(self.stale),
            "left": self.left,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, s in zip(self.gens, state["gens"], strict=True):
            g.set_state(s)
        self.start = [s.clone() for s in state["start"]]
        self.buf, self.pos = state["buf"].clone(), state["pos"].clone()
        self.stale, self.left = set(state["stale"]), int(state["left"])


def _of_net(t: torch.Tensor, net: int | None) -> torch.Tensor:
    """``t``, or network ``net``'s slice of a batched ``t`` (a view: writes reach ``t``)."""
    return t if net is None else t[net]


def _check_init(init: str) -> None:
    if init not in INIT_FNS:
        raise ConfigError(f"init must be one of {', '.join(INIT_FNS)}, got {init!r}")


class UnitIntervention(Intervention):
    """Shared plumbing: find the MLPs, capture features, hook every optimizer's step."""

    needs_features = True
    batched = True
    """Whether it handles :class:`~crl.plasticity.nets.BatchedLinear` networks (the probe's)."""

    def __init__(self, seed: int = 0, init: str = "lecun_uniform") -> None:
        _check_init(init)
        self.seed = int(seed)
        self.init = init
        self.gen = torch.Generator().manual_seed(self.seed)
        self.steps = 0
        self.views: list[MLPView] = []
        self._targets: dict[int, MLPView] = {}
        self._optimizers: list[torch.optim.Optimizer] = []
        self._optimizer_steps: list[int] = []

    def _on_attach(self, model: Any) -> None:
        opt = getattr(model, "optimizer", None) if isinstance(model, nn.Module) else None
        self.views = find_mlps(model, opt)
        if not self.batched and any(layer.batched for view in self.views for layer in view.layers):
            raise ConfigError(f"intervention {self.name!r} does not handle batched networks (BatchedLinear)")
        for view in self.views:
            if view.targets:
                (target,) = view.targets
                self._targets[id(view)] = find_mlps(target)[0]
        if self.needs_features:
            capture_features(self.views)
        for view in self.views:
            if view.optimizer is not None and all(view.optimizer is not o for o in self._optimizers):
                self._optimizers.append(view.optimizer)
                view.optimizer.register_step_post_hook(self._post_step)
        self._optimizer_steps = [0] * len(self._optimizers)
        self._setup()

    def _setup(self) -> None:
        """Hook: allocate per-layer state once the views are known."""

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for i, o in enumerate(self._optimizers):
            if o is optimizer:
                self._optimizer_steps[i] += 1
        with torch.no_grad():
            for view in self.views:
                if view.optimizer is optimizer:
                    self._after_step(view)
        if optimizer is self.views[0].optimizer:
            self.steps += 1

    def optimizer_steps(self, view: MLPView) -> int:
        """The steps ``view``'s optimizer has taken, the one just taken included (each network
        counts its own: TD3's critics step twice per actor step).
        """
        for o, n in zip(self._optimizers, self._optimizer_steps, strict=True):
            if o is view.optimizer:
                return n
        return self.steps + 1

    def _after_step(self, view: MLPView) -> None:
        """Hook: called after every optimizer step of ``view``."""

    # -- surgery -------------------------------------------------------------
    def reset_units(
        self,
        view: MLPView,
        layer: HiddenLayer,
        idx: torch.Tensor,
        reset_optimizer: bool,
        net: int | None = None,
        gen: torch.Generator | None = None,
    ) -> None:
        """Re-initialise units ``idx`` of ``layer`` (of network ``net`` if the layer is batched):
        incoming weights redrawn (from ``gen``, default the intervention's generator), incoming
        bias 0, LayerNorm gain 1 and shift 0, outgoing weights 0 (so the network's output is
        unchanged at that moment).
        """
        if idx.numel() == 0:
            return
        cols = layer.out_columns(idx)
        init_rows(_of_net(layer.inp.weight.data, net), idx, self.init, gen or self.gen)
        if layer.inp.bias is not None:
            _of_net(layer.inp.bias.data, net)[idx] = 0.0
        if layer.norm is not None and layer.norm.weight is not None and net is None:  # shared by batched networks
            layer.norm.weight.data[idx] = 1.0
            layer.norm.bias.data[idx] = 0.0
        for out in layer.outs:
            _of_net(out.weight.data, net)[:, cols] = 0.0
        if reset_optimizer:
            zero_optimizer_state(view.optimizer, layer.inp.weight, idx, 0, net)
            if layer.inp.bias is not None:
                zero_optimizer_state(view.optimizer, layer.inp.bias, idx, 0, net)
            for out in layer.outs:
                zero_optimizer_state(view.optimizer, out.weight, cols, 1, net)
        target = self._targets.get(id(view))
        if target is not None:  # keep a target network's copy of these units consistent
            t_layer = target.layers[view.layers.index(layer)]
            _of_net(t_layer.inp.weight.data, net)[idx] = _of_net(layer.inp.weight.data, net)[idx]
            if t_layer.inp.bias is not None:
                _of_net(t_layer.inp.bias.data, net)[idx] = 0.0
            for out in t_layer.outs:
                _of_net(out.weight.data, net)[:, cols] = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "gen": self.gen.get_state(), "optimizer_steps": list(self._optimizer_steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.gen.set_state(state["gen"])
        steps = state.get("optimizer_steps", [self.steps] * len(self._optimizers))  # crl 0.2: one counter
        self._optimizer_steps = [int(n) for n in steps]


@register_intervention
class ContinualBackprop(UnitIntervention):
    """Continual backprop (Dohare et al., Nature 2024): replace low-utility mature units.

    After every optimizer step, for each hidden layer with post-activation features ``h``
    (minibatch x units) and outgoing weights ``W_out``:

    1. ``age += 1``;
    2. ``u <- decay * u + (1 - decay) * mean_k |W_out[k, i]| * mean_b |h[b, i]|``
       (``utility="contribution"``; ``"adaptable_contribution"`` uses
       ``mean_k |W_out[k, i]| * mean_b |h[b, i] - f_hat_i| / mean_j |W_in[i, j]|`` with
       ``f_hat`` the bias-corrected running mean of ``h_i``, as in the bit-flipping problem);
    3. ``u_hat = u / (1 - decay ** age)``;
    4. eligible units have ``age > maturity``; ``r = replacement_rate * n_eligible``; if
       ``r < 1`` one unit is replaced with probability ``r``, else ``floor(r)`` units: the
       eligible ones with the smallest ``u_hat``;
    5. a replaced unit gets fresh incoming weights from the init distribution, incoming bias
       0, outgoing weights 0, age, utility and running mean 0 (and, with
       ``reset_optimizer_state``, zero Adam moments; Dohare's RL runs leave them).

    On CReLU layers (:class:`~crl.plasticity.nets.CReLU`) unit ``i`` is read through outputs
    ``i`` and ``i + width``: ``h_i`` is their sum ``relu(x_i) + relu(-x_i) = |x_i|`` and
    ``W_out[k, i]`` the mean of its two columns; a replaced unit's two columns are zeroed. On
    LayerNorm layers a replaced unit's gain and shift go back to 1 and 0.

    Args:
        replacement_rate: rho (RL: 1e-4).
        maturity: m, in optimizer steps (RL: 10,000).
        decay: eta (0.99).
        utility: ``"contribution"`` or ``"adaptable_contribution"``.
        init: distribution of fresh incoming weights (see ``crl.plasticity.nets.INIT_FNS``).
        reset_optimizer_state: zero the optimizer moments of replaced units.
        seed: seed of the replacement draws (crl passes ``crl.seeding.derive(run seed, "intervention", i)``).
    """

    name = "cbp"

    def __init__(
        self,
        replacement_rate: float = 1e-4,
        maturity: int = 10_000,
        decay: float = 0.99,
        utility: str = "contribution",
        init: str = "lecun_uniform",
        reset_optimizer_state: bool = False,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= replacement_rate <= 1.0:
            raise ConfigError(f"replacement_rate must be in [0, 1], got {replacement_rate!r}")
        maturity = check_int("maturity", maturity)
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"decay must be in [0, 1), got {decay!r}")
        if utility not in ("contribution", "adaptable_contribution"):
            raise ConfigError(f"utility must be 'contribution' or 'adaptable_contribution', got {utility!r}")
        super().__init__(seed=seed, init=init)
        self.replacement_rate, self.maturity, self.decay = float(replacement_rate), maturity, float(decay)
        self.utility, self.reset_optimizer_state = utility, bool(reset_optimizer_state)
        self.age: dict[str, torch.Tensor] = {}
        self.util: dict[str, torch.Tensor] = {}
        self.mean: dict[str, torch.Tensor] = {}
        self.replaced = 0
        self._oldest: dict[str, int] = {}
        """An upper bound of each layer's ages (steps seen), to skip counting mature units early on."""
        self.draws: NetworkDraws | None = None
        """Per-network random streams of a batched network (created at its first step)."""
        self._quiet = 0
        """Batched layer steps to come in which no network can replace a unit (see :meth:`_look_ahead`)."""

    def _setup(self) -> None:
        for view in self.views:
            for layer in view.layers:
                key = f"{view.name}/{layer.name}"
                self.age[key] = torch.zeros(layer.width, dtype=torch.long)
                self.util[key] = torch.zeros(layer.width)
                self.mean[key] = torch.zeros(layer.width)

    def utilities(self, view: MLPView, layer: HiddenLayer) -> torch.Tensor:
        """Bias-corrected utilities ``u_hat`` of ``layer``'s units."""
        key = f"{view.name}/{layer.name}"
        age = self.age[key].clamp(min=1).to(self.util[key].dtype)
        return self.util[key] / (1.0 - self.decay**age)

    def _after_step(self, view: MLPView) -> None:
        for layer in view.layers:
            h = layer.features
            if h is None:
                self._quiet = 0  # counted in steps of every layer
                continue
            if layer.batched:
                self._after_step_batched(view, layer, h)
                continue
            key = f"{view.name}/{layer.name}"
            self.age[key] += 1
            self._update_utility(layer, key, h)
            self._oldest[key] = self._oldest.get(key, 0) + 1
            if self._oldest[key] <= self.maturity:  # no unit is old enough yet: skip the count
                continue
            eligible = self.age[key] > self.maturity
            n_eligible = int(eligible.sum())
            if n_eligible == 0:
                continue
            r = self.replacement_rate * n_eligible
            if r < 1.0:
                n = int(torch.rand(1, generator=self.gen).item() < r)
            else:
                n = int(r)
            if n == 0:
                continue
            u_hat = self.utilities(view, layer).masked_fill(~eligible, float("inf"))
            self._replace(view, layer, torch.topk(u_hat, n, largest=False).indices)

    def _replace(
        self,
        view: MLPView,
        layer: HiddenLayer,
        idx: torch.Tensor,
        net: int | None = None,
        gen: torch.Generator | None = None,
    ) -> None:
        """Step 5 for units ``idx`` (of network ``net`` of a batched layer): fresh weights
        (see :meth:`reset_units`), and age, utility and running mean 0.
        """
        self.reset_units(view, layer, idx, self.reset_optimizer_state, net=net, gen=gen)
        key = f"{view.name}/{layer.name}"
        for state in (self.age, self.util, self.mean):
            _of_net(state[key], net)[idx] = 0
        self.replaced += idx.numel()

    def _update_utility(self, layer: HiddenLayer, key: str, h: torch.Tensor) -> None:
        """Steps 2 (and the running mean of the adaptable utility) for ``layer``'s features
        ``h`` (batch x units, or nets x batch x units): every reduction is over the batch
        dimension -2, so one formula serves single and batched networks.
        """
        eta = self.decay
        w_out = layer.outgoing_magnitude()  # (nets x) units
        if self.utility == "contribution":
            inst = w_out * layer.unit_activity(h.float()).mean(-2)
        else:
            h = layer.units(h if layer.batched else h.reshape(-1, h.shape[-1])).float()  # CReLU: |x| per unit
            self.mean[key].mul_(eta).add_((1 - eta) * h.mean(-2))
            f_hat = self.mean[key] / torch.rsub(torch.pow(eta, self.age[key].float()), 1.0)  # 1 - eta^age
            w_in = layer.inp.weight.detach().abs().mean(-1).clamp(min=1e-12)
            inst = w_out * (h - f_hat.unsqueeze(-2)).abs().mean(-2) / w_in
        self.util[key].mul_(eta).add_(inst, alpha=1 - eta)

    def _after_step_batched(self, view: MLPView, layer: HiddenLayer, h: torch.Tensor) -> None:
        """The same steps for a :class:`~crl.plasticity.nets.BatchedLinear` layer: every
        network updates its own utilities and ages and makes its own draws (network ``b`` from
        its own generator seeded ``seed + b``, see :class:`NetworkDraws`), so that network
        ``b`` evolves exactly as a single network under ``ContinualBackprop(seed=seed + b)``.
        """
        key = f"{view.name}/{layer.name}"
        n_nets = layer.inp.weight.shape[0]
        if self.age[key].dim() == 1:  # first step: per-network state
            for d in (self.age, self.util, self.mean):
                d[key] = d[key].expand(n_nets, -1).clone()
        if self.draws is None:
            self.draws = NetworkDraws(self.seed, n_nets)
        age = self.age[key]
        age += 1
        self._update_utility(layer, key, h)
        if self._quiet > 0:  # every network draws, none below its rate: skip the draw unread
            self._quiet -= 1
            self.draws.skip()
            return
        eligible = age > self.maturity
        n_eligible = eligible.sum(-1)
        r = n_eligible.double() * self.replacement_rate  # float64, as the single-network code
        fractional = r < 1.0
        draw = self.draws.uniform(fractional & (n_eligible > 0))  # a network draws when it has eligible units
        n = torch.where(fractional, (draw < r).long(), r.floor().long())
        if not bool(n.any()):
            if layer is view.layers[-1]:
                self._quiet = self._look_ahead(view)
            return
        u_hat = self.utilities(view, layer).masked_fill(~eligible, float("inf"))
        for b in torch.nonzero(n).flatten().tolist():
            idx = torch.topk(u_hat[b], int(n[b]), largest=False).indices
            self._replace(view, layer, idx, net=b, gen=self.draws.generator(b))

    def _look_ahead(self, view: MLPView) -> int:
        """After a step of the last layer of ``view`` (the only view) in which no network
        replaced a unit: the number of layer steps to come in which none will. Until a young
        unit comes of age, every layer's eligible counts stay as they are; if every network
        has eligible units and fractional expected replacements ``r`` in every layer, each
        network draws one uniform per layer and step and replaces a unit only when it falls
        below ``r``: :meth:`NetworkDraws.quiet` counts the steps without such a draw. Those
        steps skip the draw unread: the same numbers, a dozen tensor operations fewer.
        """
        if len(self.views) != 1 or self.draws is None:
            return 0
        rates, steps = [], None
        for layer in view.layers:
            age = self.age[f"{view.name}/{layer.name}"]
            eligible = age > self.maturity
            n_eligible = eligible.sum(-1)
            r = n_eligible.double() * self.replacement_rate  # as in _after_step_batched
            if not bool(((r < 1.0) & (n_eligible > 0)).all()):
                return 0
            rates.append(r)
            if not bool(eligible.all()):  # the youngest unit comes of age in maturity + 1 - age steps
                young = int(self.maturity - age.masked_fill(eligible, -1).max())
                steps = young if steps is None else min(steps, young)
        quiet = self.draws.quiet(rates)
        return (quiet if steps is None else min(quiet, steps)) * len(rates)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "replaced": self.replaced,
            "age": {k: v.clone() for k, v in self.age.items()},
            "util": {k: v.clone() for k, v in self.util.items()},
            "mean": {k: v.clone() for k, v in self.mean.items()},
            **({"draws": self.draws.state_dict()} if self.draws is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.replaced = int(state["replaced"])
        for name in ("age", "util", "mean"):
            for k, v in state[name].items():
                getattr(self, name)[k] = v.clone()
        self._oldest = {k: int(v.max()) if v.numel() else 0 for k, v in self.age.items()}
        self._quiet = 0
        if "draws" in state:
            self.draws = NetworkDraws(self.seed, len(state["draws"]["gens"]), ahead=state["draws"]["buf"].shape[1])
            self.draws.load_state_dict(state["draws"])


@register_intervention
class ReDo(UnitIntervention):
    """ReDo (Sokar et al., ICML 2023): recycle tau-dormant units every ``every`` steps.

    Score ``s_i = mean_b |h[b, i]| / mean_j mean_b |h[b, j]|`` on the last minibatch; units
    with ``s_i <= tau`` get fresh incoming weights, zero outgoing weights and zero optimizer
    moments. Output layers are never recycled.

    Args:
        tau: dormancy threshold (ReDo paper: 0.025; Dohare's Ant runs: 0.1).
        every: optimizer steps between checks.
        init: distribution of fresh incoming weights.
        seed: seed of the fresh weights (crl derives it from the run seed, see :mod:`crl.seeding`).
    """

    name = "redo"
    batched = False

    def __init__(self, tau: float = 0.1, every: int = 100, init: str = "lecun_uniform", seed: int = 0) -> None:
        tau = check_non_negative("tau", tau)
        every = check_int("every", every, minimum=1)
        super().__init__(seed=seed, init=init)
        self.tau, self.every = tau, every
        self.recycled = 0

    @staticmethod
    def scores(activity: torch.Tensor) -> torch.Tensor:
        """ReDo scores from |features| per unit (batch x units)."""
        a = activity.abs().mean(0)
        return a / a.mean().clamp(min=1e-12)

    def _after_step(self, view: MLPView) -> None:
        if self.optimizer_steps(view) % self.every != 0:
            return
        for layer in view.layers:
            if layer.features is None:
                continue
            idx = torch.nonzero(self.scores(layer.unit_activity(layer.features)) <= self.tau).flatten()
            self.reset_units(view, layer, idx, reset_optimizer=True)
            self.recycled += int(idx.numel())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "recycled": self.recycled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.recycled = int(state["recycled"])


@register_intervention
class ShrinkPerturb(UnitIntervention):
    """Shrink & Perturb (Ash & Adams 2020): ``theta <- shrink * theta + sigma * eps``.

    ``eps`` is drawn from the init distribution for weights (biases are only shrunk).
    Applied after every optimizer step (``per_step``) and/or at known regime changes.

    Args:
        shrink: p (per-step form: 1 - 1e-4 ... 1 - 1e-3; at regime changes e.g. 0.4).
        sigma: noise scale (about 1e-2).
        per_step: apply after every optimizer step.
        at_regime_change: apply at regime boundaries (boundary-aware agents).
        init: distribution of the noise.
        seed: seed of the noise (crl derives it from the run seed, see :mod:`crl.seeding`).
    """

    name = "shrink_perturb"
    needs_features = False

    def __init__(
        self,
        shrink: float = 1 - 1e-4,
        sigma: float = 1e-2,
        per_step: bool = True,
        at_regime_change: bool = False,
        init: str = "lecun_uniform",
        seed: int = 0,
    ) -> None:
        if not 0.0 < shrink <= 1.0:
            raise ConfigError(f"shrink must be in (0, 1], got {shrink!r}")
        sigma = check_non_negative("sigma", sigma)
        super().__init__(seed=seed, init=init)
        self.shrink, self.sigma = float(shrink), sigma
        self.per_step, self.at_regime_change = per_step, at_regime_change

    def apply(self) -> None:
        """Shrink and perturb every Linear of every view now."""
        with torch.no_grad():
            for view in self.views:
                linears = [layer.inp for layer in view.layers] + view.output
                for lin in linears:
                    noise = INIT_FNS[self.init](lin.weight, self.gen).to(lin.weight.dtype)
                    lin.weight.mul_(self.shrink).add_(self.sigma * noise)
                    if lin.bias is not None:
                        lin.bias.mul_(self.shrink)

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.per_step and optimizer is self.views[0].optimizer:
            self.apply()
            self.steps += 1

    def _on_regime_change(self, regime: int) -> None:
        if self.at_regime_change:
            self.apply()


@register_intervention
class Reset(UnitIntervention):
    """Resets (Nikishin et al., ICML 2022): re-initialise the last layers or whole networks,
    periodically and/or at known regime changes; the optimizer state of reset parameters is
    cleared.

    Args:
        layers: how many of the last Linear layers of each network to reset (``"all"``: all).
        every: optimizer steps between periodic resets (0: never).
        at_regime_change: reset at regime boundaries (boundary-aware agents).
        init: distribution of fresh weights.
        seed: seed of the fresh weights (crl derives it from the run seed, see :mod:`crl.seeding`).
    """

    name = "reset"
    batched = False
    needs_features = False

    def __init__(
        self,
        layers: int | str = 1,
        every: int = 0,
        at_regime_change: bool = True,
        init: str = "lecun_uniform",
        seed: int = 0,
    ) -> None:
        if layers != "all":
            try:
                layers = check_int("layers", layers, minimum=1)
            except ConfigError:
                raise ConfigError(f"layers must be a positive integer or 'all', got {layers!r}") from None
        every = check_int("every", every)
        super().__init__(seed=seed, init=init)
        self.layers, self.every, self.at_regime_change = layers, every, at_regime_change
        self.resets = 0

    def apply(self) -> None:
        """Reset now."""
        with torch.no_grad():
            for view in self.views:
                linears = [layer.inp for layer in view.layers] + view.output
                chosen = linears if self.layers == "all" else linears[-int(self.layers) - len(view.output) + 1 :]
                for lin in chosen:
                    lin.weight.copy_(INIT_FNS[self.init](lin.weight, self.gen))
                    if lin.bias is not None:
                        lin.bias.zero_()
                    if view.optimizer is not None:
                        for p in lin.parameters():
                            view.optimizer.state.pop(p, None)
                for target in view.targets:  # a reset network restarts its target copy too
                    if view.module is not None:
                        target.load_state_dict(view.module.state_dict())
        self.resets += 1

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if optimizer is self.views[0].optimizer:
            self.steps += 1
            if self.every and self.steps % self.every == 0:
                self.apply()

    def _on_regime_change(self, regime: int) -> None:
        if self.at_regime_change:
            self.apply()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "resets": self.resets}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.resets = int(state["resets"])


class InjectedLinear(nn.Module):
    """``old(x) + new(x) - frozen(x)``: the output head after a plasticity injection.

    ``old`` and ``frozen`` are frozen; ``frozen`` is a copy of ``new`` at injection, so the
    output is unchanged at that moment while ``new`` learns from there on.
    """

    def __init__(self, old: nn.Linear, gen: torch.Generator, init: str) -> None:
        super().__init__()
        self.in_features, self.out_features = old.in_features, old.out_features
        self.old = old
        self.new = nn.Linear(old.in_features, old.out_features).to(old.weight.device, old.weight.dtype)
        with torch.no_grad():
            self.new.weight.copy_(INIT_FNS[init](self.new.weight, gen))
            self.new.bias.zero_()
        self.frozen = nn.Linear(old.in_features, old.out_features).to(old.weight.device, old.weight.dtype)
        self.frozen.load_state_dict(self.new.state_dict())
        for p in (*self.old.parameters(), *self.frozen.parameters()):
            p.requires_grad_(False)

    @classmethod
    def target_copy(cls, injected: InjectedLinear, old: nn.Linear) -> InjectedLinear:
        """The head of a target network (SAC's ``critic_target``) after ``injected`` replaced
        the online head it tracks: its own ``old`` head plus copies of ``injected``'s ``new``
        and ``frozen`` parts. Its output is unchanged, and its parameters line up with the
        online head's, so Polyak averaging goes on pairing them.
        """
        head = cls.__new__(cls)
        nn.Module.__init__(head)
        head.in_features, head.out_features = old.in_features, old.out_features
        head.old, head.new, head.frozen = old, copy.deepcopy(injected.new), copy.deepcopy(injected.frozen)
        for p in (*head.new.parameters(), *head.frozen.parameters()):
            p.requires_grad_(old.weight.requires_grad)
        return head

    @property
    def weight(self) -> torch.Tensor:  # what reads the head's weights sees the trainable part
        return self.new.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.old(x) + self.new(x) - self.frozen(x)


@register_intervention
class Injection(UnitIntervention):
    """Plasticity injection (Nikishin et al., NeurIPS 2023): freeze each output head, add a
    fresh trainable head and subtract a frozen copy of it, so outputs are unchanged at the
    moment of injection. Injected at a given optimizer step and/or at known regime changes.

    Args:
        at_step: optimizer step of the injection (0: never).
        at_regime_change: inject at regime boundaries (boundary-aware agents).
        init: distribution of the new heads' weights.
        seed: seed of the new heads (crl derives it from the run seed, see :mod:`crl.seeding`).
    """

    name = "injection"
    batched = False
    needs_features = False

    def __init__(
        self, at_step: int = 0, at_regime_change: bool = True, init: str = "lecun_uniform", seed: int = 0
    ) -> None:
        at_step = check_int("at_step", at_step)
        super().__init__(seed=seed, init=init)
        self.at_step, self.at_regime_change = at_step, at_regime_change
        self.injections = 0

    def inject(self) -> None:
        """Inject now: every output head becomes an :class:`InjectedLinear`."""
        root = self.model.policy if hasattr(self.model, "policy") else self.model
        parents = {id(child): (parent, name) for parent in root.modules() for name, child in parent.named_children()}
        for view in self.views:
            new_heads = []
            target = self._targets.get(id(view))  # SAC's target critic: its heads follow
            for k, head in enumerate(view.output):
                parent, attr = parents[id(head)]
                injected = InjectedLinear(head, self.gen, self.init)
                setattr(parent, attr, injected)
                if target is not None:
                    t_parent, t_attr = parents[id(target.output[k])]
                    t_head = InjectedLinear.target_copy(injected, target.output[k])
                    setattr(t_parent, t_attr, t_head)
                    target.output[k] = t_head.new
                if view.optimizer is not None:
                    view.optimizer.add_param_group(
                        {
                            **{k: v for k, v in view.optimizer.param_groups[0].items() if k != "params"},
                            "params": list(injected.new.parameters()),
                        }
                    )
                for layer in view.layers:
                    layer.outs = [injected.new if o is head else o for o in layer.outs]
                new_heads.append(injected.new)
            view.output = new_heads
        self.injections += 1

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if optimizer is self.views[0].optimizer:
            self.steps += 1
            if self.at_step and self.steps == self.at_step:
                self.inject()

    def _on_regime_change(self, regime: int) -> None:
        if self.at_regime_change:
            self.inject()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "injections": self.injections}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for _ in range(int(state["injections"]) - self.injections):
            self.inject()  # rebuild the structure; the checkpointed weights are loaded after
        self.gen.set_state(state["gen"])  # undo the rebuild's draws: later injections draw as uninterrupted
