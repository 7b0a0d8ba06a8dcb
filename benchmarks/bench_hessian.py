"""Hessians that exploit sparsity by themselves (issue #19, item 5).

fad.hessian / tape.hessian with method="auto" (the default: the colored
sweep when the pattern found on the tape needs at most half as many colors
as inputs) against method="dense" (one direction per input: what
fad.hessian always did) and JAX's jitted jax.hessian, all in one process,
interleaved (a, b, c, a, b, c, ...), medians.

    extended Rosenbrock loop (products), n = 100 and 1,000: sparse
    sum(tanh(W @ x)), dense W, n = 50 and 200: dense (auto must cost nothing)

JAX (optional) gets the Rosenbrock vectorized (jnp slices) and as the same
Python loop (unrolled when traced; n = 100 only: its compile time grows
faster than linearly); compile time excluded and reported apart.  Every
answer is checked against the dense path and, for Rosenbrock, the formula.

    python benchmarks/bench_hessian.py [--quick] [--out FILE]
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

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")




def rosen_hess(x):
    n = x.size
    H = np.zeros((n, n))
    i = np.arange(n - 1)
    H[i, i] += 2 - 400 * (x[1:] - x[:-1] ** 2) + 800 * x[:-1] ** 2
    H[i + 1, i + 1] += 200
    H[i, i + 1] = H[i + 1, i] = -400 * x[:-1]
    return H


def interleaved(fns, rounds, min_time=0.01):
    """Median seconds per call of each fn, calls interleaved round by round
    (each round runs each fn `reps` times, reps calibrated to min_time)."""
    reps = []
    for fn in fns:
        fn()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        reps.append(max(1, int(min_time / max(dt, 1e-7))))
    times = [[] for _ in fns]
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(reps[k]):
                fn()
            times[k].append((time.perf_counter() - t0) / reps[k])
    return [float(np.median(t)) for t in times]


def _jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None, None
    jax.config.update("jax_enable_x64", True)
    return jax, jnp


def rosen_case(n, rounds, with_loop_jax):
    x = np.random.default_rng(n).uniform(-1.2, 1.2, n)
    ref = rosen_hess(x)
    tape = fad.record(rosen_products, x)
    hf = fad.hessian(rosen_products)
    rows = [
        ("fastad `fad.hessian(f)(x)`, auto (record, find pattern, color, sweep: every call)",
         lambda: fad.hessian(rosen_products)(x)),
        ("fastad `hf(x)`, `hf = fad.hessian(f)` kept (record; the plan reused on a tape of "
         "the same structure)", lambda: hf(x)),
        ("fastad `fad.hessian(f, method=\"dense\")(x)` (record + n directions)",
         lambda: fad.hessian(rosen_products, method="dense")(x)),
        ("fastad `tape.hessian(x)`, auto (replayed; plan kept on the tape)",
         lambda: tape.hessian(x)),
        ("fastad `tape.hessian(x, method=\"dense\")` (replayed)",
         lambda: tape.hessian(x, method="dense")),
    ]
    notes = {}
    jax, jnp = _jax()
    if jax is not None:
        def rosen_vec(z):
            return jnp.sum((1 - z[:-1]) ** 2 + 100.0 * (z[1:] - z[:-1] ** 2) ** 2)
        xj = jnp.asarray(x)
        t0 = time.perf_counter()
        hv = jax.jit(jax.hessian(rosen_vec)).lower(xj).compile()
        notes["JAX jit, vectorized"] = time.perf_counter() - t0
        rows.append(("JAX jit `jax.hessian`, vectorized (jnp slices)",
                     lambda: hv(xj).block_until_ready()))
        if with_loop_jax:
            t0 = time.perf_counter()
            hl = jax.jit(jax.hessian(rosen_products)).lower(xj).compile()
            notes["JAX jit, loop"] = time.perf_counter() - t0
            rows.append(("JAX jit `jax.hessian`, the same Python loop (unrolled)",
                         lambda: hl(xj).block_until_ready()))
    for label, fn in rows:
        err = np.max(np.abs(np.asarray(fn()) - ref)) / np.max(np.abs(ref))
        assert err < 1e-12, (label, err)
    times = interleaved([fn for _, fn in rows], rounds)
    plan = tape.sparse_cache["hessian_auto"]
    title = (f"Extended Rosenbrock loop, n = {n} ({len(tape)} ops; the Hessian's pattern "
             f"needs {plan.n_colors} colors)")
    return title, rows, times, notes


def dense_case(n, rounds):
    rng = np.random.default_rng(n)
    W = rng.standard_normal((n, n)) / np.sqrt(n)
    x = rng.uniform(-1, 1, n)

    def f(z):
        return fad.sum(fad.tanh(W @ z))
    t = np.tanh(W @ x)
    ref = W.T @ np.diag(-2 * t * (1 - t * t)) @ W
    tape = fad.record(f, x)
    rows = [
        ("fastad `fad.hessian(f)(x)`, auto", lambda: fad.hessian(f)(x)),
        ("fastad `fad.hessian(f, method=\"dense\")(x)`", lambda: fad.hessian(f, method="dense")(x)),
        ("fastad `tape.hessian(x)`, auto (choice kept on the tape)", lambda: tape.hessian(x)),
        ("fastad `tape.hessian(x, method=\"dense\")`", lambda: tape.hessian(x, method="dense")),
    ]
    for label, fn in rows:
        err = np.max(np.abs(np.asarray(fn()) - ref)) / np.max(np.abs(ref))
        assert err < 1e-10, (label, err)
    times = interleaved([fn for _, fn in rows], rounds)
    fresh = fad.record(f, x)
    budget_s = interleaved([lambda: (setattr(fresh, "sparse_cache", None),
                                     fresh.hessian(x)),
                            lambda: fresh.hessian(x, method="dense")], rounds)
    title = f"sum(tanh(W @ x)), dense W, n = {n} (dense Hessian: auto must stay dense)"
    notes = {"auto's pattern search on a fresh tape (then dense), / dense":
             budget_s[0] / budget_s[1]}
    return title, rows, times, notes


def table(title, rows, times, notes, ref_row):
    out = [f"### {title}", "",
           f"| call | median ms | / `{ref_row[1]}` |", "|---|---:|---:|"]
    ref = times[ref_row[0]]
    for (label, _), t in zip(rows, times):
        out.append(f"| {label} | {t * 1e3:.4g} | {t / ref:.2f}x |")
    for k, v in notes.items():
        out.append("")
        out.append(f"{k}: " + (f"{v:.2f} s (trace + compile, once)" if k.startswith("JAX")
                               else f"{v:.2f}x"))
    return "\n".join(out)


def run(quick=False):
    rounds = 5 if quick else 21
    jax, _ = _jax()
    head = [f"machine: {platform.platform()} | Python {platform.python_version()} | "
            f"NumPy {np.__version__} | JAX {jax.__version__ if jax else 'not installed'} | "
            f"{time.strftime('%Y-%m-%d')}",
            f"interleaved medians of {rounds} rounds; JAX with x64, XLA_FLAGS="
            f"{os.environ.get('XLA_FLAGS')!r}", ""]
    parts = []
    for n in (100, 1000):
        title, rows, times, notes = rosen_case(n, rounds, with_loop_jax=(n == 100))
        jrow = next((i for i, r in enumerate(rows) if r[0].startswith("JAX jit `jax.hessian`, vec")), 2)
        parts.append(table(title, rows, times, notes, (jrow, "JAX vectorized" if jrow != 2 else "dense")))
        parts.append("")
        parts.append(f"auto / dense: fad.hessian {times[0] / times[2]:.3f}x (kept hf: "
                     f"{times[1] / times[2]:.3f}x), tape.hessian {times[3] / times[4]:.3f}x")
        parts.append("")
    for n in (50, 200):
        title, rows, times, notes = dense_case(n, rounds)
        parts.append(table(title, rows, times, notes, (1, "dense")))
        parts.append("")
        parts.append(f"auto / dense: fad.hessian {times[0] / times[1]:.3f}x, "
                     f"tape.hessian {times[2] / times[3]:.3f}x")
        parts.append("")
    return "\n".join(head + parts)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", help="also write the tables to this file")
    a = ap.parse_args()
    text = run(a.quick)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
