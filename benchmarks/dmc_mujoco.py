"""DeepMind Control's Continual DMC tasks on this machine's dm_control and mujoco: seeded episodes.

Run it once in an environment with Plasticine's pins (``dm-control==1.0.11 mujoco==2.3.3
"numpy<2"``) and once with crl's ``dmc`` extra (dm_control 1.0.52, mujoco 4.0.1), then compare
(docs/envs.md, "Continual DMC")::

    MUJOCO_GL=disable python benchmarks/dmc_mujoco.py plasticine.json
    MUJOCO_GL=disable python benchmarks/dmc_mujoco.py crl.json
    python benchmarks/dmc_mujoco.py --diff plasticine.json crl.json

Each walker and quadruped task of Plasticine's sequences runs one 1000-step episode from
``suite.load(..., task_kwargs={"random": 0})`` with zero actions and one with seeded uniform
random actions, straight from dm_control (without shimmy or crl, so the script runs in an
environment that has only dm_control).
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version

import numpy as np

TASKS = [("walker", "stand"), ("walker", "walk"), ("walker", "run"), ("quadruped", "walk"), ("quadruped", "run")]
STEPS = 1000


def _flat(observation: dict) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in observation.values()])


def episode(domain: str, task: str, policy: str) -> dict:
    """One seeded episode: the first observation, every reward and observation."""
    from dm_control import suite

    env = suite.load(domain, task, task_kwargs={"random": 0})
    ts = env.reset()
    spec = env.action_spec()
    rng = np.random.default_rng(0)
    first, rewards, obs = _flat(ts.observation), [], []
    for _ in range(STEPS):
        action = np.zeros(spec.shape) if policy == "zero" else rng.uniform(spec.minimum, spec.maximum)
        ts = env.step(action)
        rewards.append(float(ts.reward))
        obs.append(_flat(ts.observation).tolist())
    return {"obs0": first.tolist(), "rewards": rewards, "obs": obs, "last": bool(ts.last())}


def record(path: str) -> None:
    """Write every task's two episodes and the package versions to ``path``."""
    out = {"versions": {p: version(p) for p in ("mujoco", "dm-control", "numpy")}}
    for domain, task in TASKS:
        for policy in ("zero", "random"):
            out[f"{domain}-{task}-{policy}"] = episode(domain, task, policy)
    with open(path, "w") as f:
        json.dump(out, f)


def diff(a_path: str, b_path: str) -> None:
    """Print, per episode, how far two recordings are apart."""
    with open(a_path) as f:
        a = json.load(f)
    with open(b_path) as f:
        b = json.load(f)
    print(f"A: {a['versions']}\nB: {b['versions']}")
    for key in (k for k in a if k != "versions"):
        x, y = a[key], b[key]
        start = np.abs(np.subtract(x["obs0"], y["obs0"])).max()
        ra, rb = np.array(x["rewards"]), np.array(y["rewards"])
        gap = np.abs(np.subtract(x["obs"], y["obs"])).max(axis=1)
        first = int(np.argmax(gap > 1e-6)) + 1 if (gap > 1e-6).any() else None
        print(
            f"{key:22s} reset obs {start:.0e}  return {ra.sum():7.2f} / {rb.sum():7.2f}  max |reward diff| "
            f"{np.abs(ra - rb).max():.0e}  max |obs diff| after 10/100/1000 steps {gap[9]:.0e} {gap[99]:.0e} "
            f"{gap[-1]:.0e}  first step > 1e-6: {first}  both end truncated: {x['last'] and y['last']}"
        )


def main() -> None:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="where to write this environment's episodes (JSON)")
    parser.add_argument("--diff", nargs=2, metavar=("A", "B"), help="compare two recorded files")
    args = parser.parse_args()
    if args.diff:
        diff(*args.diff)
    elif args.out:
        record(args.out)
    else:
        parser.error("give OUT.json or --diff A.json B.json")


if __name__ == "__main__":
    main()
