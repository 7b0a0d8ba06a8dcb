"""fad.minimize against scipy given hand-written derivatives (issue #19, item 6).

The chained Rosenbrock (scipy's rosen) from (-1.2, 1, -1.2, 1, ...), written
the two ways a user would and recorded by fastad once:
    loop         the scalar loop with products over x[i] (a tape of scalar nodes)
    vectorized   NumPy slices (a tape of array blocks)
scipy's trust-krylov and Newton-CG get the analytic rosen_der /
rosen_hess_prod.  Whole minimizations, the solvers alternated (fad, scipy,
fad, scipy, ...) in one process; medians over the repeats of wall and
process CPU time.  Then where the time goes: each piece timed at one point,
interleaved, multiplied by how often a run used it (replays, gradients,
Hessians formed, products); what is left is the solvers' own per-iteration
Python (and, for scipy, trust-krylov's Lanczos solver).

    python benchmarks/bench_minimize.py [--n 1000] [--repeats 3] [--out FILE]
        [--only WORD,...] [--before ROOT]
    python benchmarks/bench_minimize.py --n 10000 --repeats 1     (minutes)

--before ROOT adds fad.minimize of another checkout's build (say the main
branch's) to the alternation, loaded side by side (_common.load_build).
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fastad as fad  # noqa: E402
from _common import load_build, rosen_products  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rosen_vectorized(fd):
    def rosen_vec(x):
        return fd.sum((1 - x[:-1]) ** 2 + 100.0 * (x[1:] - x[:-1] ** 2) ** 2)
    return rosen_vec


def solvers(n, before=None):
    from scipy.optimize import minimize, rosen, rosen_der, rosen_hess_prod
    x0 = np.tile([-1.2, 1.0], n // 2)
    calls = {"f": 0, "g": 0, "hvp": 0}

    def counted(key, fn):
        def run(*a):
            calls[key] += 1
            return fn(*a)
        return run

    def fad_min(fd, f, hessian):
        def run():
            r = fd.minimize(f, x0, hessian=hessian, maxiter=200_000)
            return r, {"nit": r.nit, "nfev": r.nfev, "nhvp": r.nhvp,
                       "nhess": r.get("nhess", 0)}
        return run

    def sp_min(method):
        def run():
            calls.update(f=0, g=0, hvp=0)
            opts = {"maxiter": 200_000}
            opts.update({"gtol": 1e-8} if method != "Newton-CG" else {"xtol": 1e-10})
            r = minimize(counted("f", rosen), x0, jac=counted("g", rosen_der),
                         hessp=counted("hvp", rosen_hess_prod), method=method, options=opts)
            return r, {"nit": r.nit, "nfev": calls["f"], "ngrad": calls["g"],
                       "nhvp": calls["hvp"], "nhess": 0}
        return run
    vec = rosen_vectorized(fad)
    rows = [
        ("fastad `fad.minimize`, loop, hessian=\"auto\" (sparse H by star coloring per "
         "accepted point)", fad_min(fad, rosen_products, "auto")),
        ("fastad `fad.minimize`, vectorized, hessian=\"auto\"", fad_min(fad, vec, "auto")),
        ("fastad `fad.minimize`, loop, hessian=\"hvp\" (a tape sweep per product)",
         fad_min(fad, rosen_products, "hvp")),
    ]
    if before is not None:
        old, root, old_mods, new_mods = before

        def in_old(fn):
            # the old build imports some of its modules inside functions:
            # sys.modules must hold its own while it runs
            def run():
                sys.modules.update(old_mods)
                try:
                    return fn()
                finally:
                    sys.modules.update(new_mods)
            return run
        rows += [(f"fastad before ({root}), loop, hessian=\"auto\"",
                  in_old(fad_min(old, rosen_products, "auto"))),
                 (f"fastad before ({root}), vectorized, hessian=\"auto\"",
                  in_old(fad_min(old, rosen_vectorized(old), "auto")))]
    rows += [
        ("scipy trust-krylov, analytic rosen_der / rosen_hess_prod", sp_min("trust-krylov")),
        ("scipy Newton-CG, analytic (line search; stops on xtol=1e-10, not gtol)",
         sp_min("Newton-CG")),
    ]
    return rows


def whole_runs(n, repeats, only=None, before=None):
    rows = solvers(n, before)
    if only:
        rows = [r for r in rows if any(k in r[0] for k in only)]
    wall = [[] for _ in rows]
    cpu = [[] for _ in rows]
    info = [None] * len(rows)
    for _ in range(repeats):
        for k, (label, fn) in enumerate(rows):
            c0, t0 = time.process_time(), time.perf_counter()
            res, counts = fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
            counts.update(err=float(np.max(np.abs(res.x - 1.0))),
                          gmax=float(np.max(np.abs(res.jac))))
            info[k] = counts
            print(f"  {label[:60]}: {wall[k][-1]:.2f} s wall, {cpu[k][-1]:.2f} s CPU, "
                  f"{counts['nit']} iterations", file=sys.stderr, flush=True)
    ref = next(k for k, r in enumerate(rows) if "trust-krylov" in r[0])
    wref, cref = float(np.median(wall[ref])), float(np.median(cpu[ref]))
    out = [f"### Chained Rosenbrock, n = {n:,}, from (-1.2, 1, ...): whole minimizations "
           f"({repeats} alternated run{'s' if repeats > 1 else ''}, median)", "",
           "| solver | wall s | / trust-krylov | CPU s | / trust-krylov | iterations | "
           "H-vector products | sparse H formed | time per product (CPU, whole run / products) "
           "| max abs(x - 1) | max abs(grad) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, (label, _) in enumerate(rows):
        w, c = float(np.median(wall[k])), float(np.median(cpu[k]))
        i = info[k]
        out.append(f"| {label} | {w:.3f} | {w / wref:.2f}x | {c:.3f} | {c / cref:.2f}x | "
                   f"{i['nit']} | {i['nhvp']} | {i['nhess'] or ''} | "
                   f"{c / max(i['nhvp'], 1) * 1e6:.1f} us | {i['err']:.1e} | {i['gmax']:.1e} |")
    return "\n".join(out), rows, info, cpu


def interleaved(fns, rounds=21):
    """Median process CPU seconds per call of each fn, interleaved."""
    reps = []
    for fn in fns:
        fn()
        t0 = time.process_time()
        fn()
        reps.append(max(1, int(0.005 / max(time.process_time() - t0, 1e-7))))
    times = [[] for _ in fns]
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            t0 = time.process_time()
            for _ in range(reps[k]):
                fn()
            times[k].append((time.process_time() - t0) / reps[k])
    return [float(np.median(t)) for t in times]


def _graded(point):
    point.gradient()
    return point


def costs(n, runs=None):
    """What a run is made of: each piece at one point near the middle of the
    run (interleaved medians of CPU time), times how often the run used it."""
    from scipy.optimize import rosen, rosen_der, rosen_hess_prod
    from fastad.optimize import _sparse_hessian_at, _steihaug
    rng = np.random.default_rng(0)
    x = 1.0 + 0.1 * rng.standard_normal(n)
    v = rng.standard_normal(n)
    g = rosen_der(x)
    pieces = []
    forms = {}
    for form, f in (("loop", rosen_products), ("vectorized", rosen_vectorized(fad))):
        tape = fad.record(f, x)
        pt = tape.at(x)
        pt.gradient()
        mv, data = _sparse_hessian_at(pt)
        forms[form] = len(pieces)
        pieces += [
            (f"fastad {form}: replay at a trial point (`tape.at(x).value`)",
             lambda tape=tape: tape.at(x).value),
            (f"fastad {form}: gradient there (`point.gradient()`, on a kept point)",
             lambda tape=tape: tape.at(x).gradient()),
            (f"fastad {form}: gradient and sparse Hessian there (one 3-direction sweep; "
             + ("with the gradient" if form == "vectorized" else "after it") + ")",
             (lambda tape=tape: _sparse_hessian_at(tape.at(x), gradient=True))
             if form == "vectorized" else
             (lambda tape=tape: _sparse_hessian_at(_graded(tape.at(x))))),
            (f"fastad {form}: one product with it (compiled CSR)",
             lambda mv=mv, data=data: mv.matvec(data, v)),
            (f"fastad {form}: Steihaug-CG, 8 steps (vector work + 8 products)",
             lambda mv=mv, data=data: _steihaug(lambda d: mv.matvec(data, d), g, 1e9, 0.0, 8)),
        ]
    sp = len(pieces)
    pieces += [
        ("scipy: `rosen(x)`", lambda: rosen(x)),
        ("scipy: `rosen_der(x)`", lambda: rosen_der(x)),
        ("scipy: `rosen_hess_prod(x, v)`", lambda: rosen_hess_prod(x, v)),
    ]
    times = interleaved([fn for _, fn in pieces])
    # the replay row is subtracted from the gradient row, the gradient row from
    # the Hessian row (each does what the one before did, then its own part)
    out = [f"### What a run is made of, n = {n:,} (CPU time per piece: interleaved medians "
           f"of 21)", "", "| piece | median ms |", "|---|---:|"]
    for (label, _), t in zip(pieces, times):
        out.append(f"| {label} | {t * 1e3:.4f} |")
    if runs is None:
        return "\n".join(out)
    rows, info, cpu = runs
    out += ["", "Where the time of a whole run goes (counts from the run x the pieces "
            "above; the rest is the solver's own per-iteration work: Python, and for "
            "trust-krylov its Lanczos subproblem solver):", "",
            "| solver | CPU s | replays | gradients | Hessians formed | products "
            "| CG vector work | the rest |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, (label, _) in enumerate(rows):
        i, c = info[k], float(np.median(cpu[k]))
        if label.startswith("fastad `fad.minimize`") and "hvp" not in label:
            b = forms["loop" if "loop" in label else "vectorized"]
            t_rep = times[b]
            t_grad = times[b + 1] - t_rep
            t_hess = times[b + 2] - times[b + 1]
            if "vectorized" in label:       # (the gradient comes with the Hessian)
                t_grad, t_hess = 0.0, times[b + 2] - t_rep
            t_prod = times[b + 3]
            t_cg8 = times[b + 4] - 8 * t_prod
            parts = [i["nfev"] * t_rep, i["nhess"] * t_grad, i["nhess"] * t_hess,
                     i["nhvp"] * t_prod, i["nhvp"] / 8 * t_cg8]
        elif "scipy" in label and "trust-krylov" in label:
            parts = [i["nfev"] * times[sp], i["ngrad"] * times[sp + 1], 0.0,
                     i["nhvp"] * times[sp + 2], 0.0]
        else:
            continue
        cells = " | ".join(f"{p:.3f} ({p / c:.0%})" for p in parts)
        rest = c - sum(parts)
        out.append(f"| {label} | {c:.3f} | {cells} | {rest:.3f} ({rest / c:.0%}) |")
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", help="comma-separated words: run only the solvers naming one")
    ap.add_argument("--out", help="also write the tables to this file")
    ap.add_argument("--before", help="another checkout whose fad.minimize to alternate with")
    a = ap.parse_args()
    before = None
    if a.before:
        def mods():
            return {k: m for k, m in sys.modules.items()
                    if k == "fastad" or k.startswith("fastad.")}
        old = load_build(a.before)
        import fastad.sparse, fastad.optimize  # noqa: E401,F401 (what minimize imports late)
        old_mods = mods()
        fad = load_build(_ROOT)
        import fastad.sparse, fastad.optimize  # noqa: E401,F401,F811
        before = (old, a.before, old_mods, mods())
    head = (f"machine: {platform.platform()} | Python {platform.python_version()} | "
            f"NumPy {np.__version__} | {time.strftime('%Y-%m-%d %H:%M')} | "
            f"load average {os.getloadavg()[0]:.1f}")
    print(head, flush=True)
    table, rows, info, cpu = whole_runs(a.n, a.repeats, a.only.split(",") if a.only else None,
                                        before)
    print(table, flush=True)
    parts = [head, "", table, "", costs(a.n, (rows, info, cpu))]
    print(parts[-1])
    if a.out:
        with open(a.out, "w") as fh:
            fh.write("\n".join(parts) + "\n")
