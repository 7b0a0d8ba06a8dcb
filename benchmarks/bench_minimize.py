"""fad.minimize against scipy given hand-written derivatives (issue #19, item 6).

The chained Rosenbrock (scipy's rosen) from (-1.2, 1, -1.2, 1, ...), written
as the scalar loop with products and recorded by fastad once; scipy's
trust-krylov and Newton-CG get the analytic rosen_der / rosen_hess_prod.
Whole minimizations, the solvers alternated (fad, scipy, fad, scipy, ...)
in one process; medians over the repeats.  Then what an iteration costs:
each piece timed at one point, interleaved, medians.

    python benchmarks/bench_minimize.py [--n 1000] [--repeats 3] [--out FILE]
    python benchmarks/bench_minimize.py --n 10000 --repeats 1     (minutes)
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastad as fad  # noqa: E402
from _common import rosen_products  # noqa: E402




def solvers(n):
    from scipy.optimize import minimize, rosen, rosen_der, rosen_hess_prod
    x0 = np.tile([-1.2, 1.0], n // 2)
    calls = {"hvp": 0}

    def hessp(x, p):
        calls["hvp"] += 1
        return rosen_hess_prod(x, p)

    def fad_min(hessian):
        def run():
            r = fad.minimize(rosen_products, x0, hessian=hessian, maxiter=200_000)
            return r, r.nit, r.nhvp, r.get("nhess", 0)
        return run

    def sp_min(method):
        def run():
            calls["hvp"] = 0
            opts = {"maxiter": 200_000}
            opts.update({"gtol": 1e-8} if method != "Newton-CG" else {"xtol": 1e-10})
            r = minimize(rosen, x0, jac=rosen_der, hessp=hessp, method=method, options=opts)
            return r, r.nit, calls["hvp"], 0
        return run
    return [
        ("fastad `fad.minimize`, hessian=\"auto\" (here: sparse H by star coloring each iteration)",
         fad_min("auto")),
        ("fastad `fad.minimize`, hessian=\"hvp\" (Hessian-free: a tape sweep per product)",
         fad_min("hvp")),
        ("scipy trust-krylov, analytic rosen_der / rosen_hess_prod", sp_min("trust-krylov")),
        ("scipy Newton-CG, analytic (line search; stops on xtol=1e-10, not gtol)",
         sp_min("Newton-CG")),
    ]


def whole_runs(n, repeats, only=None):
    rows = solvers(n)
    if only:
        rows = [r for r in rows if any(k in r[0] for k in only)]
    times = [[] for _ in rows]
    info = [None] * len(rows)
    for _ in range(repeats):
        for k, (label, fn) in enumerate(rows):
            t0 = time.perf_counter()
            res, nit, nhvp, nhess = fn()
            times[k].append(time.perf_counter() - t0)
            err = float(np.max(np.abs(res.x - 1.0)))
            gmax = float(np.max(np.abs(res.jac)))
            info[k] = (nit, nhvp, nhess, err, gmax)
    ref = next(k for k, r in enumerate(rows) if "trust-krylov" in r[0])
    tref = float(np.median(times[ref]))
    out = [f"### Chained Rosenbrock, n = {n:,}, from (-1.2, 1, ...): whole minimizations "
           f"({repeats} alternated run{'s' if repeats > 1 else ''}, median)", "",
           "| solver | wall s | / trust-krylov | iterations | H-vector products | "
           "sparse H formed | time per iteration | max abs(x - 1) | max abs(grad) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, (label, _) in enumerate(rows):
        t = float(np.median(times[k]))
        nit, nhvp, nhess, err, gmax = info[k]
        out.append(f"| {label} | {t:.3f} | {t / tref:.2f}x | {nit} | {nhvp} | {nhess or ''} | "
                   f"{t / max(nit, 1) * 1e3:.3f} ms | {err:.1e} | {gmax:.1e} |")
    return "\n".join(out)


def interleaved(fns, rounds=21):
    times = [[] for _ in fns]
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def costs(n):
    """What an iteration is made of, at one point near the middle of the run."""
    from scipy.optimize import rosen, rosen_der, rosen_hess_prod
    from fastad.sparse import tape_sparse_hessian
    from fastad.optimize import _steihaug
    rng = np.random.default_rng(0)
    x = 1.0 + 0.1 * rng.standard_normal(n)
    v = rng.standard_normal(n)
    tape = fad.record(rosen_products, x)
    pt = tape.at(x)
    pt.gradient()
    H = tape_sparse_hessian(tape, None, point=pt)
    g = rosen_der(x)
    pieces = [
        ("fastad: replay at a trial point (`tape.at(x)`, value)", lambda: tape.at(x).value),
        ("fastad: replay + gradient (`tape.at(x).gradient()`)", lambda: tape.at(x).gradient()),
        ("fastad: replay + sparse Hessian (3 colors: one 3-direction sweep, scipy csr)",
         lambda: tape_sparse_hessian(tape, None, point=tape.at(x))),
        ("fastad: one product with that csr (`H @ v`)", lambda: H @ v),
        ("fastad: one product by the tape (`point.hvp(v)`, after the first)", lambda: pt.hvp(v)),
        ("fastad: Steihaug-CG, 8 steps on `H @ v` (vector work + 8 products)",
         lambda: _steihaug(lambda d: H @ d, g, 1e9, 0.0, 8)),
        ("scipy: `rosen(x)`", lambda: rosen(x)),
        ("scipy: `rosen_der(x)`", lambda: rosen_der(x)),
        ("scipy: `rosen_hess_prod(x, v)`", lambda: rosen_hess_prod(x, v)),
    ]
    fns = [fn for _, fn in pieces]
    times = interleaved(fns)
    out = [f"### What an iteration costs, n = {n:,} (interleaved medians of 21)",
           "", "| piece | median ms |", "|---|---:|"]
    for (label, _), t in zip(pieces, times):
        out.append(f"| {label} | {t * 1e3:.4f} |")
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", help="comma-separated words: run only the solvers naming one")
    ap.add_argument("--out", help="also write the tables to this file")
    a = ap.parse_args()
    head = (f"machine: {platform.platform()} | Python {platform.python_version()} | "
            f"NumPy {np.__version__} | {time.strftime('%Y-%m-%d %H:%M')}")
    print(head, flush=True)
    parts = [head, "", costs(a.n), ""]
    print(parts[2], flush=True)
    parts.append(whole_runs(a.n, a.repeats, a.only.split(",") if a.only else None))
    print(parts[-1])
    if a.out:
        with open(a.out, "w") as fh:
            fh.write("\n".join(parts) + "\n")
