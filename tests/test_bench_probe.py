"""`crl bench probe` runs end to end at a tiny size (it must not rot)."""

import json

import numpy as np

from crl.bench_probe import numpy_bit_flipping


def test_numpy_side_learns():
    errs = numpy_bit_flipping(seeds=4, examples=3000, change_every=3000)
    assert errs.shape == (4, 3000) and np.isfinite(errs).all()
    assert errs[:, -500:].mean() < errs[:, :500].mean()  # the error falls within a task


def test_cli_json_tiny(crl_cli):
    p = crl_cli("bench", "probe", "--seeds", "2", "--examples", "300", "--methods", "bp,cbp", "--json", timeout=180)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert [r["name"] for r in res["rows"]] == ["numpy bp", "crl bp", "crl 2 methods"]
    assert res["rows"][2]["method_names"] == ["bp", "cbp"]
    assert res["rows"][0]["ratio"] == 1.0
    for r in res["rows"]:
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and np.isfinite(r["last_bin_error"])
    bad = crl_cli("bench", "probe", "--methods", "bp,nope")
    assert bad.returncode == 2 and "unknown probe method 'nope'" in bad.stderr
