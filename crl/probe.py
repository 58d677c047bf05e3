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
``l2-init``, ``upgd`` (first-order UPGD). The seeds of one method are one batched network
(:class:`~crl.plasticity.nets.BatchedLinear`), so a step costs the same few tensor operations
for 1 or 30 seeds; methods run in parallel processes.

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

__all__ = ["METHODS", "TASKS", "run_probe", "train_method", "write_figure", "print_table", "early_late"]


@dataclass(frozen=True)
class Method:
    """An optimizer and interventions, by their registry names."""

    optimizer: str
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    interventions: list[Any] = field(default_factory=list)
    description: str = ""


#: The probe's methods (step size comes from the task; ``init`` of fresh units is the learner's).
METHODS: dict[str, Method] = {
    "bp": Method("sgd", description="plain backprop (SGD)"),
    "l2": Method("sgd", {"weight_decay": 1e-3}, description="SGD + coupled L2 1e-3"),
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
        hidden = (torch.bmm(x, self.w1.transpose(1, 2)) + self.b1.unsqueeze(1) > self.tau.unsqueeze(1)).float()
        y = torch.bmm(hidden, self.w2.transpose(1, 2)) + self.b2.unsqueeze(1)
        return x, y


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


def _learner(task: Any, n_nets: int, seed: int) -> Any:
    import torch
    from torch import nn

    from crl.plasticity.nets import INIT_FNS, BatchedLinear

    torch.manual_seed(seed)
    sizes = [task.n_inputs, 5, 1] if not task.classification else [task.n_inputs, 64, 64, task.n_outputs]
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
    net = _learner(task, seeds, seed + 1)
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
    args = [(task, m, seeds, examples, step_size, change_every, bin_size, seed, known[m]) for m in methods]
    workers = max(1, min(workers or usable_cores(), len(methods)))
    t0 = time.perf_counter()
    if workers == 1:
        outs = [train_method(*a) for a in args]
    else:
        with ProcessPoolExecutor(workers) as pool:
            outs = list(pool.map(train_method, *zip(*args, strict=True)))

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


def early_late(res: dict[str, Any], method: str, frac: float = 0.2) -> tuple[float, float]:
    """Mean over seeds of the error in the first and the last ``frac`` of the bins."""
    per = np.asarray(res["methods"][method]["seeds"])
    k = max(1, round(per.shape[1] * frac))
    return float(per[:, :k].mean()), float(per[:, -k:].mean())


def write_figure(res: dict[str, Any], out: Path) -> Path:
    """Binned error per method (IQM over seeds, 95% CI band), as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, m in res["methods"].items():
        x = (np.arange(len(m["bins"])) + 0.5) * res["bin_size"]
        iqm = [b["iqm"] for b in m["bins"]]
        ax.plot(x, iqm, label=name)
        ax.fill_between(x, [b["lo"] for b in m["bins"]], [b["hi"] for b in m["bins"]], alpha=0.2)
    what = "misclassification rate" if TASKS[res["task"]].classification else "squared error"
    ax.set_xlabel("examples")
    ax.set_ylabel(f"{what} (bins of {res['bin_size']:,})")
    ax.set_title(
        f"crl probe {res['task']}: IQM over {res['seeds']} seeds, 95% CI; step size {res['step_size']}, "
        f"change every {res['change_every']:,}",
        fontsize=9,
    )
    ax.legend(fontsize=8, frameon=False)
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
