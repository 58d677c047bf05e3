"""``crl probe``: loss of plasticity in supervised streams, in minutes of CPU.

Two online problems, each learned one example at a time by many seeds at once:

- ``bit-flipping``: Dohare et al.'s slowly-changing regression (REFERENCE section 7): 20
  binary inputs, the first 15 redrawn every ``change_every`` examples and the last 5 random
  for every example; the target is a fixed random network of 100 linear-threshold units
  (weights and biases +-1, thresholds ``beta (n_inputs + 1) - S_i``, beta 0.7); the learner
  has one hidden layer of 5 ReLU units (Kaiming-uniform input weights, LeCun-uniform
  output weights, zero biases) trained by SGD on the squared error.
- ``permuted-digits``: scikit-learn's 8x8 handwritten digits (shipped with the package),
  classified online by a 64-64-64-10 ReLU net; a new random pixel permutation every
  ``change_every`` examples; the error is the misclassification rate.

Every method is built from crl's own plug-ins, attached to the learner exactly as to an RL
agent: ``bp`` (plain SGD), ``l2`` (SGD ``weight_decay``), ``cbp`` (:class:`ContinualBackprop`,
the adaptable-contribution utility, replacement rate 1e-4, maturity 100), ``shrink-perturb``,
``l2-init``, ``upgd`` (first-order UPGD), ``linear`` (a learner without hidden layer). The SGD
and UPGD methods of a process and their seeds are one batched network
(:class:`crl.fast.probe.ProbeBatch`: methods x seeds networks, gradients by hand, each method's
interventions on its rows, UPGD's rows stepped by crl's UPGD with its own generator), so a step
costs the same few tensor operations for 1 or 30 seeds and for one method or several; the
methods are shared out among ``workers`` processes by cost (:func:`split_methods`). Other
optimizers learn through autograd, one method at a time (:func:`train_method`, the reference:
the batched learner gave its errors bit for bit in every size tested, UPGD's perturbations
included: 2-3 seeds in the tests, 30 seeds x 4,000 examples of permuted digits checked once; its
batched matrix products may still round a hidden activation differently in the last bit, so long
streams at other sizes are equal in distribution, not guaranteed bit for bit).

Example:
    >>> res = run_probe("bit-flipping", ["bp", "cbp"], seeds=2, examples=600, bin_size=200, workers=1)
    >>> sorted(res["methods"]), len(res["methods"]["bp"]["bins"])
    (['bp', 'cbp'], 3)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crl.system import usable_cores

__all__ = [
    "METHODS",
    "TASKS",
    "run_probe",
    "train_method",
    "train_methods",
    "split_methods",
    "probe_figure",
    "write_figure",
    "print_table",
    "early_late",
]


@dataclass(frozen=True)
class Method:
    """An optimizer and interventions, by their registry names."""

    optimizer: str
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    interventions: list[Any] = field(default_factory=list)
    description: str = ""
    hidden: tuple[int, ...] | None = None
    """Hidden layer widths of the learner (``None``: the task's; ``()``: a linear learner)."""

    @property
    def batchable(self) -> bool:
        """Whether :func:`train_methods` learns it by hand with other methods (plain SGD,
        with or without weight decay, or crl's UPGD); other optimizers go through autograd
        (:func:`train_method`).
        """
        if self.optimizer == "upgd":
            return "generator" not in self.optimizer_kwargs
        return self.optimizer == "sgd" and set(self.optimizer_kwargs) <= {"weight_decay"}


#: The probe's methods (step size comes from the task; ``init`` of fresh units is the learner's).
METHODS: dict[str, Method] = {
    "bp": Method("sgd", description="plain backprop (SGD)"),
    "l2": Method("sgd", {"weight_decay": 1e-3}, description="SGD + coupled L2 1e-3"),
    "linear": Method("sgd", hidden=(), description="linear learner (no hidden layer), SGD: Dohare's baseline"),
    "cbp": Method(
        "sgd",
        interventions=[
            {
                "cbp": {
                    "replacement_rate": 1e-4,
                    "maturity": 100,
                    "decay": 0.99,
                    "utility": "adaptable_contribution",
                    "init": "kaiming_uniform",
                }
            }
        ],
        description="continual backprop: rate 1e-4, maturity 100, adaptable contribution (Dohare)",
    ),
    "shrink-perturb": Method(
        "sgd",
        interventions=[{"shrink_perturb": {"shrink": 1 - 1e-4, "sigma": 1e-2, "init": "kaiming_uniform"}}],
        description="Shrink & Perturb every step: p = 1 - 1e-4, sigma 1e-2",
    ),
    "l2-init": Method("sgd", interventions=[{"l2_init": {"strength": 1e-3}}], description="L2 Init, lambda 1e-3"),
    "upgd": Method(
        "upgd",
        {"adaptive": False, "weight_decay": 1e-3, "sigma": 1e-3, "beta_utility": 0.999},
        description="first-order UPGD: weight decay 1e-3, sigma 1e-3, beta_utility 0.999",
    ),
}


class BitFlipping:
    """Dohare's slowly-changing regression, one independent stream per network."""

    n_inputs, n_outputs, classification = 20, 1, False
    default_step_size, default_change_every = 0.01, 10_000

    def __init__(self, n_nets: int, seed: int, change_every: int, n_flip: int = 15, features: int = 100) -> None:
        import torch

        self.n_nets, self.change_every, self.n_flip = n_nets, change_every, n_flip
        self.gen = torch.Generator().manual_seed(seed)
        g = self.gen

        def pm1(*shape: int) -> torch.Tensor:
            return torch.randint(0, 2, shape, generator=g).float() * 2 - 1

        self.w1, self.b1 = pm1(n_nets, features, self.n_inputs), pm1(n_nets, features)
        self.w2, self.b2 = pm1(n_nets, 1, features), pm1(n_nets, 1)
        negatives = (self.n_inputs - self.w1.sum(-1) + self.b1) / 2  # S_i of REFERENCE section 7
        self.tau = 0.7 * (self.n_inputs + 1) - negatives

    def chunk(self, n: int) -> tuple[Any, Any]:
        """The next ``n`` examples (one segment: the flipping bits are redrawn first)."""
        import torch

        flip = torch.randint(0, 2, (self.n_nets, 1, self.n_flip), generator=self.gen).float()
        rand = torch.randint(0, 2, (self.n_nets, n, self.n_inputs - self.n_flip), generator=self.gen).float()
        x = torch.cat([flip.expand(-1, n, -1), rand], -1)
        return x, self.targets(flip, rand)

    def targets(self, flip: Any, rand: Any) -> Any:
        """The target network's outputs for one segment: its value for each of the ``2^k``
        patterns of the ``k`` random bits, then looked up. The sums are of +-1 and 0/1 terms,
        exact in float32 in any order: the same numbers as the network applied to every example.
        """
        import torch

        k = rand.shape[-1]
        bits = (torch.arange(2**k).unsqueeze(1) >> torch.arange(k - 1, -1, -1)) & 1  # 2^k x k, pattern p's bits
        patterns = torch.cat([flip.expand(-1, 2**k, -1), bits.float().expand(self.n_nets, -1, -1)], -1)
        hidden = torch.bmm(patterns, self.w1.transpose(1, 2)) + self.b1.unsqueeze(1) > self.tau.unsqueeze(1)
        table = torch.bmm(hidden.float(), self.w2.transpose(1, 2)) + self.b2.unsqueeze(1)  # nets x 2^k x 1
        code = (rand.long() << torch.arange(k - 1, -1, -1)).sum(-1, keepdim=True)  # nets x n x 1
        return torch.gather(table, 1, code)


class PermutedDigits:
    """Online classification of scikit-learn's digits with a new pixel permutation per task."""

    n_inputs, n_outputs, classification = 64, 10, True
    default_step_size, default_change_every = 0.01, 5_000

    def __init__(self, n_nets: int, seed: int, change_every: int) -> None:
        import torch
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.x = torch.as_tensor(digits.data / 16.0, dtype=torch.float32)
        self.y = torch.as_tensor(digits.target, dtype=torch.long)
        self.n_nets, self.change_every = n_nets, change_every
        self.gen = torch.Generator().manual_seed(seed)

    def chunk(self, n: int) -> tuple[Any, Any]:
        import torch

        perm = torch.stack([torch.randperm(64, generator=self.gen) for _ in range(self.n_nets)])  # nets x 64
        idx = torch.randint(0, len(self.y), (self.n_nets, n), generator=self.gen)
        x = torch.gather(self.x[idx], 2, perm.unsqueeze(1).expand(-1, n, -1))
        return x, self.y[idx].unsqueeze(-1)


#: Probe problems by name.
TASKS: dict[str, type] = {"bit-flipping": BitFlipping, "permuted-digits": PermutedDigits}


def _learner(task: Any, n_nets: int, seed: int, hidden: tuple[int, ...] | None = None) -> Any:
    import torch
    from torch import nn

    from crl.plasticity.nets import INIT_FNS, BatchedLinear

    torch.manual_seed(seed)
    if hidden is None:
        hidden = (5,) if not task.classification else (64, 64)
    sizes = [task.n_inputs, *hidden, task.n_outputs]
    layers: list[nn.Module] = []
    gen = torch.Generator().manual_seed(seed)
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        lin = BatchedLinear(n_nets, a, b)
        last = i == len(sizes) - 2
        with torch.no_grad():  # Kaiming-uniform hidden layers, linear-gain (LeCun) output layer, zero biases
            lin.weight.copy_(INIT_FNS["lecun_uniform" if last else "kaiming_uniform"](lin.weight, gen))
            lin.bias.zero_()
        layers += [lin] if last else [lin, nn.ReLU()]
    return nn.Sequential(*layers)


def _seeded(spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """``spec`` with ``seed`` added where the intervention takes one."""
    import inspect

    from crl.plasticity import INTERVENTIONS

    ((name, args),) = spec.items()
    takes_seed = "seed" in inspect.signature(INTERVENTIONS[name].__init__).parameters
    return {name: {**args, "seed": seed} if takes_seed else dict(args)}


def train_method(
    task_name: str,
    method: str,
    seeds: int,
    examples: int,
    step_size: float | None = None,
    change_every: int | None = None,
    bin_size: int = 20_000,
    seed: int = 0,
    spec: Method | None = None,
) -> dict[str, Any]:
    """Train ``seeds`` networks of one method online; return per-seed binned errors.

    ``spec`` replaces the registered :data:`METHODS` entry (a variant under study).
    """
    import torch

    from crl.plasticity import OPTIMIZERS, attach

    torch.set_num_threads(1)
    cls, spec = TASKS[task_name], spec or METHODS[method]
    change_every = change_every or cls.default_change_every
    lr = step_size or cls.default_step_size
    task = cls(seeds, seed, change_every)
    net = _learner(task, seeds, seed + 1, spec.hidden)
    net.optimizer = OPTIMIZERS[spec.optimizer](net.parameters(), lr=lr, **spec.optimizer_kwargs)
    interventions = attach(net, [_seeded(s, seed + 2) for s in spec.interventions])
    errors = torch.zeros(seeds, examples)
    t0, done = time.perf_counter(), 0
    opt = net.optimizer
    while done < examples:
        n = min(change_every - done % change_every, examples - done)
        xs, ys = task.chunk(n)
        for j in range(n):
            x, y = xs[:, j : j + 1], ys[:, j : j + 1]
            out = net(x)
            if task.classification:
                logits = out.reshape(seeds, -1)
                target = y.reshape(seeds)
                loss_each = torch.nn.functional.cross_entropy(logits, target, reduction="none")
                errors[:, done + j] = (logits.detach().argmax(-1) != target).float()
            else:
                loss_each = (out - y).pow(2).reshape(seeds)
                errors[:, done + j] = loss_each.detach()
            opt.zero_grad()
            loss_each.sum().backward()  # networks are independent: each gets its own gradient
            opt.step()
        done += n
    n_bins = examples // bin_size
    binned = errors[:, : n_bins * bin_size].reshape(seeds, n_bins, bin_size).mean(-1)
    return {
        "method": method,
        "binned": binned.tolist(),
        "seconds": time.perf_counter() - t0,
        "us_per_example": (time.perf_counter() - t0) / examples * 1e6,
        "interventions": interventions.names,
    }


#: Examples per block of :func:`train_methods`: the inputs of a block are laid out per step at once.
BLOCK = 1000


def train_methods(
    task_name: str,
    methods: list[str],
    seeds: int,
    examples: int,
    step_size: float | None = None,
    change_every: int | None = None,
    bin_size: int = 20_000,
    seed: int = 0,
    specs: dict[str, Method] | None = None,
) -> list[dict[str, Any]]:
    """Train ``seeds`` networks of every method online on the same stream, as
    :func:`train_method` does one method at a time, and return the same per-method results.

    The methods that :attr:`Method.batchable` and share a learner architecture learn as one
    :class:`~crl.fast.probe.ProbeBatch` (``methods x seeds`` networks, gradients by hand,
    crl's interventions attached to each method's view; a UPGD method draws its perturbations
    from a generator in the state :func:`train_method`'s global one has when it starts, so
    the same noise); the others go to :func:`train_method`.
    ``specs`` replaces registered :data:`METHODS` entries by name (variants under study).
    """
    import torch

    torch.set_num_threads(1)
    cls = TASKS[task_name]
    specs = {m: (specs or {}).get(m) or METHODS[m] for m in methods}
    change_every = change_every or cls.default_change_every
    lr = step_size or cls.default_step_size
    task = cls(seeds, seed, change_every)
    t0 = time.perf_counter()
    groups = _probe_batches(task, {m: s for m, s in specs.items() if s.batchable}, seeds, seed, lr)
    binned = _learn_batches(task, [g[0] for g in groups], examples, change_every, bin_size)
    seconds = time.perf_counter() - t0
    outs: dict[str, dict[str, Any]] = {}
    for (_, names, ivs), per_bin in zip(groups, binned, strict=True):
        for m, (name, iv) in enumerate(zip(names, ivs, strict=True)):
            rows = per_bin[:, m * seeds : (m + 1) * seeds].T  # seeds x bins
            outs[name] = {"method": name, "binned": rows.tolist(), "seconds": seconds, "interventions": iv}
            outs[name]["us_per_example"] = seconds / examples * 1e6
    for m in methods:
        if m not in outs:
            outs[m] = train_method(task_name, m, seeds, examples, step_size, change_every, bin_size, seed, specs[m])
    return [outs[m] for m in methods]


def _probe_batches(
    task: Any, specs: dict[str, Method], seeds: int, seed: int, lr: float
) -> list[tuple[Any, list[str], list[list[str]]]]:
    """One :class:`~crl.fast.probe.ProbeBatch` per learner architecture, with its methods'
    names and the names of their interventions (attached to the methods' views).
    """
    from crl.fast.probe import ProbeBatch
    from crl.plasticity import attach

    by_arch: dict[tuple[int, ...] | None, list[str]] = {}
    for name, spec in specs.items():
        by_arch.setdefault(spec.hidden, []).append(name)
    out = []
    for hidden, names in by_arch.items():
        decays = [float(specs[n].optimizer_kwargs.get("weight_decay", 0.0)) for n in names]
        template = _learner(task, seeds, seed + 1, hidden)
        batch = ProbeBatch(template, lr, decays, task.classification, _upgd_methods(specs, names))
        ivs = [
            attach(net, [_seeded(s, seed + 2) for s in specs[n].interventions]).names
            for n, net in zip(names, batch.method_nets, strict=True)
        ]
        batch.ready()
        out.append((batch, names, ivs))
    return out


def _upgd_methods(specs: dict[str, Method], names: list[str]) -> dict[int, dict[str, Any]]:
    """The UPGD methods among ``names`` (by index) and their optimizer's keyword arguments,
    each with its own generator for the perturbations: the state of torch's global generator
    now (just after :func:`_learner`), which is where :func:`train_method`'s UPGD draws them.
    """
    import torch

    state = torch.get_rng_state()
    return {
        m: {**specs[n].optimizer_kwargs, "generator": torch.Generator().set_state(state)}
        for m, n in enumerate(names)
        if specs[n].optimizer == "upgd"
    }


def _per_step(t: Any, n_methods: int) -> Any:
    """``t`` (seeds x steps x ...) as steps x (methods * seeds) x ..., method-major."""
    from crl.fast.probe import expand_methods

    return expand_methods(t, n_methods).transpose(0, 1).contiguous()


def _learn_batches(task: Any, batches: list[Any], examples: int, change_every: int, bin_size: int) -> list[Any]:
    """Learn the stream with every batch; each batch's error per bin (bins x networks, NumPy)."""
    import torch

    bufs = [torch.zeros(b.n_nets, bin_size) for b in batches]
    bins: list[list[Any]] = [[] for _ in batches]
    done = 0
    while done < examples and batches:
        n = min(change_every - done % change_every, examples - done)
        xs, ys = task.chunk(n)
        j = 0
        while j < n:
            at = (done + j) % bin_size
            k = min(BLOCK, n - j, bin_size - at)
            for batch, buf in zip(batches, bufs, strict=True):
                buf[:, at : at + k].copy_(_learn_block(batch, xs[:, j : j + k], ys[:, j : j + k]).T)
            j += k
            if at + k == bin_size:
                for batch, buf, out in zip(batches, bufs, bins, strict=True):
                    if not batch.shared():
                        raise RuntimeError("an intervention replaced a parameter of the probe's batched learner")
                    out.append(buf.mean(-1).numpy())
        done += n
    return [np.stack(b) if b else np.zeros((0, batch.n_nets)) for b, batch in zip(bins, batches, strict=True)]


def _learn_block(batch: Any, xs: Any, ys: Any) -> Any:
    """Learn ``k`` examples per network (``xs``, ``ys``: seeds x k x ...); the errors (k x networks)."""
    import torch

    x = _per_step(xs, batch.n_methods).unsqueeze(2)  # k x nets x 1 x inputs
    y = _per_step(ys, batch.n_methods)
    if not batch.classification:
        y = y.unsqueeze(2)  # k x nets x 1 x 1
    errors = torch.empty(x.shape[0], batch.n_nets)
    for i in range(x.shape[0]):
        batch.step(x[i], y[i], errors[i])
    return errors


def run_probe(
    task: str,
    methods: list[str],
    seeds: int = 10,
    examples: int | None = None,
    step_size: float | None = None,
    change_every: int | None = None,
    bin_size: int | None = None,
    workers: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    variants: dict[str, Method] | None = None,
) -> dict[str, Any]:
    """Run every method (in ``workers`` processes) and summarise the binned error per method
    by the IQM over seeds with a 95% stratified-bootstrap confidence interval.

    ``variants`` adds methods by name for this call (e.g. a broken or re-tuned CBP), besides
    the registered :data:`METHODS`.
    """
    from crl.errors import ConfigError, UnknownNameError

    if task not in TASKS:
        raise UnknownNameError("probe task", task, list(TASKS))
    known = {**METHODS, **(variants or {})}
    for m in methods:
        if m not in known:
            raise UnknownNameError("probe method", m, list(known))
    examples = examples or 200_000
    bin_size = bin_size or change_every or TASKS[task].default_change_every  # one bin per task
    if seeds < 1 or examples < bin_size or bin_size < 1:
        raise ConfigError(f"need seeds >= 1 and examples >= bin size >= 1, got {seeds}, {examples}, {bin_size}")
    from crl.stats import import_rliable, iqm_curve

    import_rliable()  # the summary's statistics: fail now, not after the training
    jobs = split_methods(methods, known, workers or usable_cores())
    args = [(task, job, seeds, examples, step_size, change_every, bin_size, seed, known) for job in jobs]
    t0 = time.perf_counter()
    if len(jobs) == 1:
        done = [train_methods(*a) for a in args]
    else:
        with ProcessPoolExecutor(len(jobs)) as pool:
            done = list(pool.map(train_methods, *zip(*args, strict=True)))
    by_name = {out["method"]: out for job in done for out in job}
    outs = [by_name[m] for m in methods]

    result: dict[str, Any] = {
        "task": task,
        "seeds": seeds,
        "examples": examples,
        "bin_size": bin_size,
        "step_size": step_size or TASKS[task].default_step_size,
        "change_every": change_every or TASKS[task].default_change_every,
        "seconds": time.perf_counter() - t0,
        "methods": {},
    }
    for out in outs:
        per_bin = np.asarray(out["binned"])  # seeds x bins
        mid, lo, hi = iqm_curve(per_bin)
        result["methods"][out["method"]] = {
            "description": known[out["method"]].description,
            "bins": [{"iqm": float(a), "lo": float(b), "hi": float(c)} for a, b, c in zip(mid, lo, hi, strict=True)],
            "seeds": per_bin.tolist(),
            "us_per_example": out["us_per_example"],
        }
        if log:
            log(f"{out['method']}: {out['seconds']:.0f} s ({out['us_per_example']:.0f} us per example)")
    return result


#: Relative cost per step of a method in a batch (measured on bit-flipping, 30 seeds): continual
#: backprop's utilities and draws cost about as much as the learning step of four methods.
_COST = {"cbp": 4.0, "shrink_perturb": 1.0}
#: Extra relative cost of an optimizer in a batch: UPGD's step (one Gaussian draw per weight,
#: a dozen passes over the weights) costs about six times the learning step of plain backprop
#: (measured on permuted-digits, 30 seeds: 44 against 7 CPU-s per 10,000 examples).
_OPTIMIZER_COST = {"upgd": 6.0}


def split_methods(methods: list[str], known: dict[str, Method], workers: int) -> list[list[str]]:
    """The methods in at most ``workers`` jobs of about equal cost (one process each): the
    batchable ones shared out by their estimated cost, each other method a job of its own.
    Results do not depend on the split (a method's numbers are the same in any batch).

    Example:
        >>> split_methods(["bp", "l2", "cbp", "shrink-perturb", "linear"], METHODS, 2)
        [['cbp'], ['shrink-perturb', 'bp', 'l2', 'linear']]
        >>> split_methods(["bp", "upgd"], METHODS, 1)
        [['upgd', 'bp']]
        >>> split_methods(list(METHODS), METHODS, 2)
        [['upgd', 'bp', 'linear'], ['cbp', 'shrink-perturb', 'l2', 'l2-init']]
    """

    def cost(m: str) -> float:
        extra = _OPTIMIZER_COST.get(known[m].optimizer, 0.0)
        return 1.0 + extra + sum(_COST.get(next(iter(iv)), 0.0) for iv in known[m].interventions)

    workers = max(1, workers)
    jobs: list[list[str]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for m in sorted((m for m in methods if known[m].batchable), key=cost, reverse=True):
        i = loads.index(min(loads))
        jobs[i].append(m)
        loads[i] += cost(m)
    for m in (m for m in methods if not known[m].batchable):
        i = loads.index(min(loads))
        jobs[i].append(m)
        loads[i] += 4.0
    return [j for j in jobs if j]


def early_late(res: dict[str, Any], method: str, frac: float = 0.2) -> tuple[float, float]:
    """Mean over seeds of the error in the first and the last ``frac`` of the bins."""
    per = np.asarray(res["methods"][method]["seeds"])
    k = max(1, round(per.shape[1] * frac))
    return float(per[:, :k].mean()), float(per[:, -k:].mean())


def probe_figure(res: dict[str, Any], late_fraction: float | None = None) -> Any:
    """Binned error per method (IQM over seeds, 95% CI band), a matplotlib figure; with
    ``late_fraction``, the last ``late_fraction`` of the bins (the window a table scores) shaded.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    n_bins = 0
    for name, m in res["methods"].items():
        n_bins = len(m["bins"])
        x = (np.arange(n_bins) + 0.5) * res["bin_size"]
        iqm = [b["iqm"] for b in m["bins"]]
        ax.plot(x, iqm, label=name)
        ax.fill_between(x, [b["lo"] for b in m["bins"]], [b["hi"] for b in m["bins"]], alpha=0.2)
    if late_fraction is not None and n_bins:
        k = max(1, round(n_bins * late_fraction))
        ax.axvspan((n_bins - k) * res["bin_size"], n_bins * res["bin_size"], color="0.9", zorder=0)
        ax.text(n_bins * res["bin_size"], ax.get_ylim()[1], f"last {k} bins ", ha="right", va="top", fontsize=8)
    what = "misclassification rate" if TASKS[res["task"]].classification else "squared error"
    ax.set_xlabel("examples")
    ax.set_ylabel(f"{what} (bins of {res['bin_size']:,})")
    ax.set_title(
        f"crl probe {res['task']}: IQM over {res['seeds']} seeds, 95% CI; step size {res['step_size']}, "
        f"change every {res['change_every']:,}",
        fontsize=9,
    )
    ax.legend(fontsize=8, frameon=False)
    return fig


def write_figure(res: dict[str, Any], out: Path) -> Path:
    """:func:`probe_figure` saved as ``out/probe-<task>.png`` and ``.svg``; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = probe_figure(res)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"probe-{res['task']}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    fig.savefig(path.with_suffix(".svg"), bbox_inches="tight")
    plt.close(fig)
    return path


def print_table(res: dict[str, Any]) -> None:
    """Print the result of :func:`run_probe` as a table (error bins per method)."""
    from rich.console import Console
    from rich.table import Table

    n_bins = len(next(iter(res["methods"].values()))["bins"])
    picks = sorted({0, n_bins // 4, n_bins // 2, 3 * n_bins // 4, n_bins - 1})
    t = Table(
        title=f"crl probe {res['task']}: {res['examples']:,} examples, {res['seeds']} seeds, "
        f"IQM [95% CI] per bin of {res['bin_size']:,}"
    )
    t.add_column("method")
    for b in picks:
        t.add_column(f"bin {b + 1}", justify="right")
    t.add_column("late / early", justify="right")
    for name, m in res["methods"].items():
        early, late = early_late(res, name)
        cells = [f"{m['bins'][b]['iqm']:.3g} [{m['bins'][b]['lo']:.3g}, {m['bins'][b]['hi']:.3g}]" for b in picks]
        t.add_row(name, *cells, f"{late / early:.2f}" if early > 0 else "n/a")
    Console().print(t)
