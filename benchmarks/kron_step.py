"""One optimizer step of Dohare's PPO networks: PSGD Kron against torch's fused Adam (docs/agents.md, "Kron").

The policy and value nets of ``ppo`` on Ant (105 inputs, 256x256 ReLU, 8 actions and 1 value),
a minibatch of 128, one torch thread; Kron with a preconditioner update at every step (its
schedule's first 500 steps) and with probability 0.03 (where the schedule ends). Alternating
rounds; prints the optimizer step's milliseconds (best and median round).

    PYTHONPATH=. python benchmarks/kron_step.py [ROUNDS]
"""

import statistics
import sys
import time

import torch

from crl.plasticity.kron import Kron

CASES = {
    "adam (fused)": lambda p: torch.optim.Adam(p, lr=1e-4, fused=True),
    "kron, p = 1": lambda p: Kron(p, lr=1e-4, preconditioner_update_probability=1.0),
    "kron, p = 0.03": lambda p: Kron(p, lr=1e-4, preconditioner_update_probability=0.03),
}


def nets() -> torch.nn.ModuleList:
    """Dohare's policy (8 actions) and value nets on Ant."""

    def mlp(out: int) -> torch.nn.Sequential:
        hidden = [torch.nn.Linear(105, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU()]
        return torch.nn.Sequential(*hidden, torch.nn.Linear(256, out))

    return torch.nn.ModuleList([mlp(8), mlp(1)])


def step_seconds(net: torch.nn.ModuleList, opt: torch.optim.Optimizer, x: torch.Tensor, steps: int) -> float:
    """Mean seconds of ``opt.step()`` over ``steps`` minibatches (gradients computed outside the timing)."""
    total = 0.0
    for _ in range(steps):
        opt.zero_grad()
        sum((m(x) ** 2).mean() for m in net).backward()
        t = time.perf_counter()
        opt.step()
        total += time.perf_counter() - t
    return total / steps


def main(rounds: int = 5) -> None:
    """Time every case, alternating, ``rounds`` rounds."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(128, 105)
    runs = {}
    for name, make in CASES.items():
        net = nets()
        runs[name] = (net, make(net.parameters()))
        step_seconds(*runs[name], x, 3)  # first steps: state created, package imported
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, (net, opt) in runs.items():
            times[name].append(step_seconds(net, opt, x, 10))
    for name, ts in times.items():
        print(f"{name:15s} {1e3 * min(ts):8.2f} ms best, {1e3 * statistics.median(ts):8.2f} ms median")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
