"""Sparse Jacobians and Hessians by coloring: first call and repeated calls.

    python benchmarks/bench_sparse.py [--quick]

Workloads (issue #7): the Bratu residual as a scalar loop and with array
operations, n = 100,000; the arrowhead (dense first row and column plus the
diagonal), n = 100,000; the extended Rosenbrock Hessian (scalar loop),
n = 10,000.  "first" is record + sparsity detection + coloring + the first
compressed sweep and decompression; "repeat" is tape.sparse_jacobian /
tape.sparse_hessian at a new point (pattern and coloring kept on the tape),
median of repeats.  Every result is checked against an independent answer.
"""
import argparse
import os
import sys
import time

import numpy as np

import fastad as fad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_time, rosen  # noqa: E402


def bratu_loop(x):
    n = len(x)
    h2 = 1.0 / (n + 1) ** 2
    out = []
    for i in range(n):
        left = x[i - 1] if i > 0 else 0.0
        right = x[i + 1] if i < n - 1 else 0.0
        out.append(left - 2 * x[i] + right + h2 * fad.exp(x[i]))
    return fad.stack(out)


def bratu_arrays(x):
    h2 = 1.0 / (len(x) + 1) ** 2
    xp = fad.concatenate([np.zeros(1), x, np.zeros(1)])
    return xp[:-2] - 2 * x + xp[2:] + h2 * np.exp(x)


def bratu_check(J, x):
    h2 = 1.0 / (len(x) + 1) ** 2
    d = J.diagonal()
    assert np.allclose(d, -2 + h2 * np.exp(x), rtol=1e-13)
    assert np.allclose(J.diagonal(1), 1.0) and np.allclose(J.diagonal(-1), 1.0)
    assert J.nnz == 3 * len(x) - 2


def arrowhead(x):
    head = fad.reshape(fad.sum(x * x), (1,))
    return fad.concatenate([head, x[0] * x[1:] + np.sin(x[1:])])


def arrow_check(J, x):
    assert np.allclose(J[0].toarray().ravel(), 2 * x, rtol=1e-13)
    assert np.allclose(J[1:, 0].toarray().ravel(), x[1:], rtol=1e-13)
    assert np.allclose(J.diagonal()[1:], x[0] + np.cos(x[1:]), rtol=1e-13)
    assert J.nnz == 3 * len(x) - 2


def rosen_check(H, x):
    from scipy.optimize import rosen_hess
    assert abs(H - rosen_hess(x)).max() <= 1e-9 * np.abs(rosen_hess(x)).max()


def _case(name, f, x, check, hessian=False, reps=11):
    t0 = time.perf_counter()
    tape = fad.record(f, x)
    first = tape.sparse_hessian(x) if hessian else tape.sparse_jacobian(x)
    t_first = time.perf_counter() - t0
    check(first, x)
    x2 = x + 0.01
    call = (lambda: tape.sparse_hessian(x2)) if hessian else (lambda: tape.sparse_jacobian(x2))
    check(call(), x2)
    t_rep = median_time(call, reps)
    if hessian:
        plan = tape.sparse_cache["hessian_plan"]
        sweeps = f"{plan.n_colors} (forward-over-reverse)"
    else:
        plan = tape.sparse_cache[("jacobian_plan", "auto")]
        fwd, rev = plan.sweeps
        sweeps = f"{fwd} fwd + {rev} rev ({plan.mode})"
    return f"| {name} | {len(x):,} | {len(tape):,} | {sweeps} | {t_first * 1e3:.1f} | {t_rep * 1e3:.2f} |"


def run(quick=False):
    import scipy.sparse  # noqa: F401 - importing SciPy (~0.1 s, once a process) is not a first call
    n = 20_000 if quick else 100_000
    reps = 5 if quick else 11
    rows = ["| workload | n | tape length | colors (lanes) | first call ms | repeat ms |",
            "|---|---:|---:|---|---:|---:|"]
    x = np.linspace(0.0, 1.0, n)
    rows.append(_case("Bratu residual, scalar loop", bratu_loop, x, bratu_check, reps=reps))
    rows.append(_case("Bratu residual, array operations", bratu_arrays, x, bratu_check, reps=reps))
    rows.append(_case("arrowhead, array operations", arrowhead, np.linspace(0.5, 1.5, n),
                      arrow_check, reps=reps))
    m = 2_000 if quick else 10_000
    rows.append(_case("extended Rosenbrock Hessian, scalar loop", rosen,
                      np.tile([-1.2, 1.0], m // 2), rosen_check, hessian=True, reps=reps))
    return "\n".join(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    print(run(ap.parse_args().quick))
