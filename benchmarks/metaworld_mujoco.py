"""Meta-World's CW10 tasks on this machine's mujoco: random-action rollouts and scripted experts.

Run it once in an environment with mujoco 3.3.0 (metaworld's pin) and once with mujoco 4.x
(``pip install --no-deps metaworld==3.1.1``), then compare (docs/envs.md, "Continual World")::

    python benchmarks/metaworld_mujoco.py mujoco330.json
    python benchmarks/metaworld_mujoco.py mujoco401.json
    python benchmarks/metaworld_mujoco.py --diff mujoco330.json mujoco401.json

The envs are made as :mod:`crl.drift.metaworld` makes them (Continual World's ``random_init_all``,
goal observable, the weld fix on mujoco >= 3.17), without crl itself, so the script also runs in
an environment that has only metaworld.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

CW10 = (
    "hammer-v3", "push-wall-v3", "faucet-close-v3", "push-back-v3", "stick-pull-v3",
    "handle-press-side-v3", "push-v3", "shelf-place-v3", "window-close-v3", "peg-unplug-side-v3",
)  # fmt: skip
WELD = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)


def _welds(env):
    import mujoco

    for i in range(env.model.eq_data.shape[0]):
        if env.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
            env.model.eq_data[i, :11] = WELD
            env.model.eq_data[i, 11:] = 0.0


def make(name: str, seed: int):
    """A CW-style Meta-World env for ``name``, seeded."""
    import metaworld
    import mujoco

    cls = metaworld.ALL_V3_ENVIRONMENTS[name]
    if mujoco.mjNEQDATA != len(WELD):
        cls = type(cls.__name__, (cls,), {"reset_mocap_welds": _welds})
    env = cls()
    env._partially_observable = False
    env.__dict__.pop("sawyer_observation_space", None)
    env._freeze_rand_vec, env.seeded_rand_vec, env._set_task_called = False, True, True
    env._set_task_inner()
    env.seed(seed)
    return env


def measure(episodes: int) -> dict:
    """Random-action observations/rewards and the scripted experts' success per task."""
    import mujoco
    from metaworld.policies import ENV_POLICY_MAP

    out: dict = {"mujoco": mujoco.__version__, "tasks": {}}
    for i, name in enumerate(CW10):
        env, rng = make(name, 100 + i), np.random.default_rng(i)
        obs, rew = [], []
        for _ in range(2):
            obs.append(env.reset()[0].tolist())
            for _ in range(200):
                o, r, *_ = env.step(rng.uniform(-1, 1, 4))
                obs.append(o.tolist())
                rew.append(float(r))
        env, policy, success, returns = make(name, 1000 + i), ENV_POLICY_MAP[name](), [], []
        for _ in range(episodes):
            o, _ = env.reset()
            ok, ret = False, 0.0
            for _ in range(200):
                o, r, _, _, info = env.step(np.clip(policy.get_action(o), -1, 1))
                ok, ret = ok or bool(info["success"]), ret + float(r)
            success.append(ok)
            returns.append(ret)
        out["tasks"][name] = {"obs": obs, "reward": rew, "success": float(np.mean(success)), "return": np.mean(returns)}
        print(f"{name:22s} expert success {np.mean(success):.2f} return {np.mean(returns):8.1f}", flush=True)
    return out


def diff(a: dict, b: dict) -> None:
    """Print the per-task differences of two :func:`measure` results."""
    print(f"mujoco {a['mujoco']} vs {b['mujoco']}")
    for name in CW10:
        x, y = a["tasks"][name], b["tasks"][name]
        d = np.abs(np.array(x["obs"]) - np.array(y["obs"])).max(axis=1)
        rx, ry = sum(x["reward"]), sum(y["reward"])
        print(
            f"{name:22s} obs after reset {d[0]:.1e}, max {d.max():.1e}; random-action reward {rx:8.2f} / {ry:8.2f}; "
            f"expert success {x['success']:.2f} / {y['success']:.2f}, return {x['return']:7.1f} / {y['return']:7.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Measure into a JSON file, or ``--diff A B``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="OUT.json, or with --diff the two results")
    p.add_argument("--diff", action="store_true", help="compare two results")
    p.add_argument("--episodes", type=int, default=20, help="expert episodes per task")
    a = p.parse_args(argv)
    if a.diff:
        diff(*(json.loads(Path(f).read_text()) for f in a.files[:2]))
        return 0
    warnings.filterwarnings("ignore", message="Constant")
    Path(a.files[0]).write_text(json.dumps(measure(a.episodes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
