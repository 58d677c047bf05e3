"""Diagnostics overhead on plain PPO (README, "Measuring plasticity and forgetting").

Trains Dohare's PPO on slippery-ant with and without diagnostics, same seed, alternating in
one process, and reports wall time, CPU time and the CPU time spent inside the diagnostics
hooks (robust to other processes competing for the CPU).

    PYTHONPATH=. python benchmarks/diagnostics_overhead.py STEPS REPS DIAGNOSTICS_EVERY
    PYTHONPATH=. python benchmarks/diagnostics_overhead.py 16384 2 10000
"""

import sys
import tempfile
import time

from crl.run import RunConfig, train
from crl.run.callbacks import DiagnosticsCallback

steps, reps, every = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
spent = [0.0]
for name in ("after_update", "collect_states"):
    orig = getattr(DiagnosticsCallback, name)

    def wrap(self, *a, _o=orig, **k):
        """Call the wrapped method and add its CPU time to ``spent``."""
        t = time.process_time()
        r = _o(self, *a, **k)
        spent[0] += time.process_time() - t
        return r

    setattr(DiagnosticsCallback, name, wrap)
root = tempfile.mkdtemp()
for rep in range(reps):
    for ev in (0, every):
        spent[0] = 0.0
        cfg = RunConfig(
            env="slippery-ant",
            agent="ppo",
            steps=steps,
            seed=0,
            run_dir=root,
            experiment=f"e{ev}_{rep}",
            wandb="disabled",
            progress=False,
            diagnostics_every=ev,
            checkpoint_every=10**9,
        )
        t, c = time.perf_counter(), time.process_time()
        train(cfg)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        print(
            f"rep {rep} diagnostics_every={ev}: wall {wall:.1f} s, cpu {cpu:.1f} s, "
            f"in diagnostics hooks {spent[0]:.3f} cpu-s ({100 * spent[0] / cpu:.2f} % of cpu)",
            flush=True,
        )
