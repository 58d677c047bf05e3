"""crl.fast.protocol: the FastLoop protocol and rollout-safe callbacks, without torch or SB3."""

import subprocess
import sys


def test_the_protocol_module_loads_neither_torch_nor_sb3():
    code = "import sys, crl.fast.protocol, crl.fast\nprint('torch' in sys.modules, 'stable_baselines3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
