"""Newton-Krylov: fad.minimize against scipy's trust-krylov.

Extended Rosenbrock, n = 10,000, from (-1.2, 1, -1.2, 1, ...).  fastad
records the scalar-loop objective once and replays it at every iterate;
CG's products come from a sparse Hessian formed by star coloring
(hessian="auto") or from forward-over-reverse sweeps (hessian="hvp",
Hessian-free).  scipy gets its own
analytic rosen_der and rosen_hess_prod.  Also: scipy's trust-krylov driven by
fastad's tape through fad.optimize.objective.  Wall times in one run.

    python benchmarks/bench_optimize.py [--n N]
"""
import argparse
import os
import sys
import time

import numpy as np

import fastad as fad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import rosen  # noqa: E402


def run(n=10_000):
    from scipy.optimize import minimize, rosen as srosen, rosen_der, rosen_hess_prod
    x0 = np.tile([-1.2, 1.0], n // 2)
    t0 = time.perf_counter()
    r = fad.minimize(rosen, x0, maxiter=200_000)              # hessian="auto": sparse here
    t_fad = time.perf_counter() - t0
    t0 = time.perf_counter()
    rh = fad.minimize(rosen, x0, maxiter=200_000, hessian="hvp")   # Hessian-free
    t_hvp = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = minimize(srosen, x0, jac=rosen_der, hessp=rosen_hess_prod, method="trust-krylov",
                 options={"gtol": 1e-8, "maxiter": 200_000})
    t_sp = time.perf_counter() - t0
    t0 = time.perf_counter()
    fun, jac, hessp = fad.optimize.objective(rosen, x0)
    s2 = minimize(fun, x0, jac=jac, hessp=hessp, method="trust-krylov", options={"gtol": 1e-8, "maxiter": 200_000})
    t_sp2 = time.perf_counter() - t0
    for name, res in (("fad", r), ("fad hvp", rh), ("scipy", s), ("scipy+tape", s2)):
        assert np.max(np.abs(res.x - 1)) < 1e-5, (name, res.message)
    rows = ["| solver | wall s | iterations | f evals | Hessian-vector products | vs scipy |",
            "|---|---:|---:|---:|---:|---:|",
            f"| fad.minimize, hessian='auto' (sparse H by star coloring, {r.nhess} formed) | {t_fad:.3f} | {r.nit} | {r.nfev} | {r.nhvp} (sparse products) | {t_fad / t_sp:.2f}x |",
            f"| fad.minimize, hessian='hvp' (Hessian-free, recorded loop) | {t_hvp:.3f} | {rh.nit} | {rh.nfev} | {rh.nhvp} | {t_hvp / t_sp:.2f}x |",
            f"| scipy trust-krylov, analytic rosen_der / rosen_hess_prod | {t_sp:.3f} | {s.nit} | {s.nfev} | {s.get('nhev', 'n/a')} | 1.00x |",
            f"| scipy trust-krylov on fad.optimize.objective (hessian='auto': sparse H) | {t_sp2:.3f} | {s2.nit} | {s2.nfev} | {s2.get('nhev', 'n/a')} | {t_sp2 / t_sp:.2f}x |"]
    return f"Extended Rosenbrock, n = {n}, from (-1.2, 1, ...)\n\n" + "\n".join(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000, help="10,000 is the contract size (minutes)")
    print(run(ap.parse_args().n))
