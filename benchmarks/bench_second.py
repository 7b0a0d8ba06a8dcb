"""Second order: replayed Hessian-vector products and dense Hessians.

Extended Rosenbrock as a scalar loop.  HVP (forward-over-reverse) against
the replayed gradient at n = 10,000 (ADOL-C's hess_vec is 2.4x its
gradient); the dense Hessian at n = 100, replayed.  Medians, one run.
(benchmarks/bench_hvp.py measures the HVP ratio interleaved, and the
vectorized HVP against PyTorch and JAX.)

    python benchmarks/bench_second.py
"""
import os
import sys

import numpy as np

import fastad as fad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_time, rosen  # noqa: E402


def run():
    from scipy.optimize import rosen_hess, rosen_hess_prod
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 10_000)
    v = rng.standard_normal(10_000)
    tape = fad.record(rosen, x)
    assert np.allclose(tape.hvp(x, v), rosen_hess_prod(x, v))
    t_g = median_time(lambda: tape.gradient(x))
    t_h = median_time(lambda: tape.hvp(x, v))
    pt = tape.at(x)
    t_hp = median_time(lambda: pt.hvp(v))
    x1 = rng.uniform(-1, 1, 100)
    t1 = fad.record(rosen, x1)
    assert np.allclose(t1.hessian(x1), rosen_hess(x1))
    t_H = median_time(lambda: t1.hessian(x1))
    rows = ["| quantity | measured | target |", "|---|---:|---:|",
            f"| replayed gradient, n = 10,000 | {t_g * 1e3:.3f} ms | |",
            f"| replayed HVP, n = 10,000 | {t_h * 1e3:.3f} ms ({t_h / t_g:.2f}x the gradient) | <= 2.5x |",
            f"| HVP at an already replayed point (`tape.at(x).hvp`) | {t_hp * 1e3:.3f} ms | |",
            f"| dense Hessian, n = 100, replayed | {t_H * 1e3:.3f} ms | <= 0.25 ms |"]
    return "\n".join(rows)


if __name__ == "__main__":
    print(run())
