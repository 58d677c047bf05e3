"""``crl bench probe``: crl's supervised probe against plain NumPy on the bit-flipping problem.

The NumPy side is written here, on its own: Dohare's bit-flipping stream (REFERENCE section 7:
20 input bits, the first 15 redrawn every ``change_every`` examples; a fixed target network of
100 linear-threshold units with +-1 weights) and the learner (5 ReLU units, Kaiming-uniform
input weights, LeCun-uniform output weights, zero biases), trained online by SGD on the squared
error, one example per step, every seed at once as arrays with a leading seeds axis. It shares
no code with :mod:`crl.probe`; its random streams differ, so only its error level is comparable.

crl's side is :func:`crl.probe.train_methods` in this process (backprop alone, then every
method asked for, batched), timed after a warm-up. Wall seconds, CPU seconds of this process
and their ratios to NumPy's are reported side by side.

Example:
    >>> res = probe_bench(seeds=2, examples=300, methods=["bp", "cbp"], bin_size=100)
    >>> [r["name"] for r in res["rows"]]
    ['numpy bp', 'crl bp', 'crl 2 methods']
    >>> res["rows"][0]["ratio"]
    1.0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["numpy_bit_flipping", "probe_bench", "print_probe_table"]


def _target(rng: np.random.Generator, seeds: int, n_in: int = 20, features: int = 100) -> tuple[np.ndarray, ...]:
    """The target network's weights (+-1) and thresholds ``0.7 (n_in + 1) - S_i``."""
    w1 = rng.choice(np.float32([-1, 1]), (seeds, features, n_in))
    b1 = rng.choice(np.float32([-1, 1]), (seeds, features))
    w2 = rng.choice(np.float32([-1, 1]), (seeds, features))
    b2 = rng.choice(np.float32([-1, 1]), seeds)
    tau = 0.7 * (n_in + 1) - (n_in - w1.sum(-1) + b1) / 2
    return w1, b1, w2, b2, tau


def _segment(rng: np.random.Generator, target: tuple[np.ndarray, ...], seeds: int, n: int) -> tuple[np.ndarray, ...]:
    """``n`` examples of one task: inputs (seeds x n x 20) and targets (seeds x n)."""
    w1, b1, w2, b2, tau = target
    flip = rng.integers(0, 2, (seeds, 1, 15)).astype(np.float32)
    x = np.concatenate([np.broadcast_to(flip, (seeds, n, 15)), rng.integers(0, 2, (seeds, n, 5))], -1)
    x = x.astype(np.float32)
    hidden = (np.einsum("snj,sfj->snf", x, w1) + b1[:, None] > tau[:, None]).astype(np.float32)
    return x, np.einsum("snf,sf->sn", hidden, w2) + b2[:, None]


def numpy_bit_flipping(
    seeds: int, examples: int, step_size: float = 0.01, change_every: int = 10_000, seed: int = 0
) -> np.ndarray:
    """Plain NumPy backprop on the bit-flipping stream; the squared error per seed and example."""
    rng = np.random.default_rng(seed)
    target = _target(rng, seeds)
    w1 = rng.uniform(-1, 1, (seeds, 5, 20)).astype(np.float32) * np.sqrt(6 / 20, dtype=np.float32)
    w2 = rng.uniform(-1, 1, (seeds, 5)).astype(np.float32) * np.sqrt(3 / 5, dtype=np.float32)
    c1, c2 = np.zeros((seeds, 5), np.float32), np.zeros(seeds, np.float32)
    lr = np.float32(step_size)
    errors = np.empty((seeds, examples), np.float32)
    for start in range(0, examples, change_every):
        x, y = _segment(rng, target, seeds, min(change_every, examples - start))
        for j in range(x.shape[1]):
            xj = x[:, j]
            h = np.maximum((w1 @ xj[:, :, None])[:, :, 0] + c1, 0)
            d = (w2 * h).sum(-1) + c2 - y[:, j]
            errors[:, start + j] = d * d
            g = 2 * d
            gh = g[:, None] * w2 * (h > 0)
            w2 -= lr * g[:, None] * h
            c2 -= lr * g
            w1 -= lr * gh[:, :, None] * xj[:, None, :]
            c1 -= lr * gh
    return errors


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def probe_bench(
    seeds: int = 30,
    examples: int = 20_000,
    methods: list[str] | None = None,
    bin_size: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time plain NumPy backprop, crl's probe with backprop and with ``methods`` batched, on
    the same problem size (``seeds`` networks, ``examples`` examples each), in this process.
    """
    from crl.probe import train_methods

    methods = methods or ["bp", "l2", "cbp", "shrink-perturb", "linear"]
    bin_size = bin_size or min(examples, 10_000)
    warm = min(examples, 200)
    train_methods("bit-flipping", methods, 2, warm, bin_size=warm)  # warm-up: imports, first calls
    rows = []
    errs, wall, cpu = _timed(lambda: numpy_bit_flipping(seeds, examples))
    n_bins = examples // bin_size
    last = float(errs[:, (n_bins - 1) * bin_size : n_bins * bin_size].mean())
    rows.append({"name": "numpy bp", "methods": 1, "wall_s": wall, "cpu_s": cpu, "last_bin_error": last})
    for ms in (["bp"], methods):
        outs, wall, cpu = _timed(lambda ms=ms: train_methods("bit-flipping", ms, seeds, examples, bin_size=bin_size))
        last = float(np.mean(np.asarray(outs[0]["binned"])[:, -1]))
        name = "crl bp" if ms == ["bp"] else f"crl {len(ms)} methods"
        rows.append({"name": name, "methods": len(ms), "method_names": ms, "wall_s": wall, "cpu_s": cpu})
        rows[-1]["last_bin_error"] = last
        if log:
            log(f"{rows[-1]['name']}: {wall:.1f} s")
    for r in rows:
        r["ratio"] = r["wall_s"] / rows[0]["wall_s"]
        r["cpu_ratio"] = r["cpu_s"] / rows[0]["cpu_s"]
        r["us_per_example_per_method"] = r["wall_s"] / examples / r["methods"] * 1e6
    return {"seeds": seeds, "examples": examples, "bin_size": bin_size, "rows": rows}


def print_probe_table(res: dict[str, Any]) -> None:
    """Print :func:`probe_bench`'s result as a table."""
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"crl bench probe: bit-flipping, {res['seeds']} seeds x {res['examples']:,} examples, one process",
        caption="ratio: seconds / plain NumPy's (lower is faster); us/ex/method: wall us per example and method; "
        "bp err: backprop's mean squared error in the last bin",
    )
    for col in ("run", "wall s", "CPU s", "ratio", "CPU ratio", "us/ex/method", "bp err"):
        t.add_column(col, justify="left" if col == "run" else "right")
    for r in res["rows"]:
        t.add_row(
            r["name"],
            f"{r['wall_s']:.2f}",
            f"{r['cpu_s']:.2f}",
            f"{r['ratio']:.2f}",
            f"{r['cpu_ratio']:.2f}",
            f"{r['us_per_example_per_method']:.0f}",
            f"{r['last_bin_error']:.3g}",
        )
    Console().print(t)
