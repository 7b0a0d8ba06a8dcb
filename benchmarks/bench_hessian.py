"""Hessians that exploit sparsity by themselves (issue #19, item 5).

fad.hessian / tape.hessian with method="auto" (the default: the colored
sweep when the pattern found on the tape needs at most half as many colors
as inputs) against method="dense" (one direction per input) and JAX's
jitted jax.hessian, all in one process, interleaved (a, b, c, a, b, c, ...),
medians of wall time and of process CPU time (the CPU time is the steadier
figure on a loaded machine; it counts every thread, JAX's too).

    extended Rosenbrock, n = 100 and 1,000: sparse, written two ways:
        the Python loop over x[i] (a tape of scalar nodes)
        vectorized with NumPy slices (a tape of array blocks)
    sum(tanh(W @ x)), dense W, n = 50 and 200: dense (auto must cost nothing)

"fresh" rows are the way a user calls it, `fad.hessian(f)(x)`: a new
function and a new recording every call.  fastad keeps the plans (pattern and
coloring, or "dense") of recently seen tape structures (fastad.sparse._PLANS),
so a fresh call on a tape like an earlier one only records and sweeps; the
"cold" rows clear that cache before every call (what a first call costs).

JAX (optional) gets the Rosenbrock vectorized (jnp slices) and as the same
Python loop (unrolled when traced; n = 100 only: its compile time grows
faster than linearly); compile time excluded and reported apart.  Every
answer is checked against the formula (Rosenbrock) or the dense path.

    python benchmarks/bench_hessian.py [--quick] [--out FILE] [--before ROOT]

--before ROOT adds the fresh rows of another checkout's build (say the main
branch's), loaded side by side in the same process (_common.load_build).
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
import fastad as fad  # noqa: E402
from fastad import sparse as fsparse  # noqa: E402
from _common import load_build, rosen_hess, rosen_products  # noqa: E402


def rosen_vectorized(fd):
    """The Rosenbrock with NumPy slices, for the fastad module fd."""
    def rosen_vec(x):
        return fd.sum((1 - x[:-1]) ** 2 + 100.0 * (x[1:] - x[:-1] ** 2) ** 2)
    return rosen_vec


rosen_vec = rosen_vectorized(fad)


def interleaved(fns, rounds, min_time=0.01):
    """(wall, cpu): median seconds per call of each fn, calls interleaved
    round by round (each round runs each fn `reps` times, reps calibrated to
    min_time); cpu is process CPU time (all threads)."""
    reps = []
    for fn in fns:
        fn()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        reps.append(max(1, int(min_time / max(dt, 1e-7))))
    wall = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            # XLA's worker threads spin a while after a call: let them settle
            # outside the timed window, or the next row's CPU time gets theirs
            time.sleep(0.005)
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(reps[k]):
                fn()
            wall[k].append((time.perf_counter() - t0) / reps[k])
            cpu[k].append((time.process_time() - c0) / reps[k])
    return [float(np.median(t)) for t in wall], [float(np.median(t)) for t in cpu]


def _jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None, None
    jax.config.update("jax_enable_x64", True)
    return jax, jnp


def _cold(fn):
    def run():
        fsparse.forget_plans()
        return fn()
    return run


def rosen_case(n, rounds, with_loop_jax, before=None):
    x = np.random.default_rng(n).uniform(-1.2, 1.2, n)
    ref = rosen_hess(x)
    tape = fad.record(rosen_products, x)
    vtape = fad.record(rosen_vec, x)
    rows = [
        ("loop: fastad `fad.hessian(f)(x)`, fresh (record, plan of this structure kept, sweep)",
         lambda: fad.hessian(rosen_products)(x)),
        ("loop: fastad `fad.hessian(f)(x)`, fresh, cold (record, find pattern, color, sweep)",
         _cold(lambda: fad.hessian(rosen_products)(x))),
        ("loop: fastad `fad.hessian(f, method=\"dense\")(x)`, fresh (record + n directions)",
         lambda: fad.hessian(rosen_products, method="dense")(x)),
        ("loop: fastad `tape.hessian(x)`, auto (replayed; plan kept on the tape)",
         lambda: tape.hessian(x)),
        ("vectorized: fastad `fad.hessian(f)(x)`, fresh", lambda: fad.hessian(rosen_vec)(x)),
        ("vectorized: fastad `fad.hessian(f)(x)`, fresh, cold",
         _cold(lambda: fad.hessian(rosen_vec)(x))),
        ("vectorized: fastad `tape.hessian(x)`, auto (replayed)", lambda: vtape.hessian(x)),
    ]
    if before is not None:
        old, root = before
        old_vec = rosen_vectorized(old)
        rows += [(f"loop: fastad before ({root}) `fad.hessian(f)(x)`, fresh",
                  lambda: old.hessian(rosen_products)(x)),
                 (f"vectorized: fastad before ({root}) `fad.hessian(f)(x)`, fresh",
                  lambda: old.hessian(old_vec)(x))]
    notes = {}
    jax, jnp = _jax()
    if jax is not None:
        def rosen_jnp(z):
            return jnp.sum((1 - z[:-1]) ** 2 + 100.0 * (z[1:] - z[:-1] ** 2) ** 2)
        xj = jnp.asarray(x)
        t0 = time.perf_counter()
        hv = jax.jit(jax.hessian(rosen_jnp)).lower(xj).compile()
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
    title = (f"Extended Rosenbrock, n = {n} (loop: {len(tape)} scalar ops; vectorized: "
             f"{len(vtape.blocks)} blocks; the Hessian's pattern needs {plan.n_colors} colors)")
    return title, rows, times, notes


def breakdown(n, rounds, f, form):
    """Where a fresh fad.hessian(f)(x) call's time goes (plan kept), and what
    a cold call adds: each piece alone, interleaved."""
    x = np.random.default_rng(n).uniform(-1.2, 1.2, n)
    tape = fad.record(f, x)
    fad.hessian(f)(x)
    key = fsparse._structure_key(tape)
    plan = fsparse._cached_plan(key)
    seeds, src = plan.seeds, plan.src
    vals = tape._hvp_seeds(None, seeds, True, gather=src)
    plan.dense(tape, None)
    flat = plan._flat

    def assemble():
        H = np.zeros((n, n))
        H.reshape(-1)[flat] = vals
        return H

    def search():
        tape.sparse_cache = None
        return fsparse._propagate(tape, True)

    tape.sparse_cache = None
    pats = fsparse.tape_patterns(tape, hessian=True)

    def coloring():
        tape.sparse_cache = {"jacobian_pattern": pats[0], "hessian_pattern": pats[1]}
        return fsparse.HessianPlan(tape)
    pieces = [
        ("the whole fresh call `fad.hessian(f)(x)`", lambda: fad.hessian(f)(x)),
        ("recording f (`fad.record(f, x)`)", lambda: fad.record(f, x)),
        ("the structure key (with the blocks' sparsity descriptions) and its look-up",
         lambda: (setattr(tape, "sparse_cache", None),
                  fsparse._cached_plan(fsparse._structure_key(tape)))),
        ("the colored sweep (3 directions, at the recorded point)",
         lambda: tape._hvp_seeds(None, seeds, True, gather=src)),
        ("the dense result: np.zeros((n, n)) and the scatter of the nonzeros", assemble),
        ("cold only: the pattern search (index sets over the tape)", search),
        ("cold only: star coloring and recovery plan (pattern kept)", coloring),
    ]
    wall, cpu = interleaved([fn for _, fn in pieces], rounds)
    out = [f"#### Where a fresh call's time goes: {form}, n = {n} (CPU, interleaved medians)",
           "", "| piece | CPU ms | / whole call |", "|---|---:|---:|"]
    for (label, _), c in zip(pieces, cpu):
        out.append(f"| {label} | {c * 1e3:.4g} | {c / cpu[0]:.2f}x |")
    return "\n".join(out)


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
        ("fastad `fad.hessian(f, method=\"dense\")(x)`, fresh",
         lambda: fad.hessian(f, method="dense")(x)),
        ("fastad `fad.hessian(f)(x)`, auto, fresh (the structure's \"dense\" kept)",
         lambda: fad.hessian(f)(x)),
        ("fastad `fad.hessian(f)(x)`, auto, fresh, cold (search, give up, dense)",
         _cold(lambda: fad.hessian(f)(x))),
        ("fastad `tape.hessian(x)`, auto (choice kept on the tape)", lambda: tape.hessian(x)),
        ("fastad `tape.hessian(x, method=\"dense\")`", lambda: tape.hessian(x, method="dense")),
    ]
    for label, fn in rows:
        err = np.max(np.abs(np.asarray(fn()) - ref)) / np.max(np.abs(ref))
        assert err < 1e-10, (label, err)
    times = interleaved([fn for _, fn in rows], rounds)
    title = f"sum(tanh(W @ x)), dense W, n = {n} (dense Hessian: auto must stay dense)"
    return title, rows, times, {}


def table(title, rows, times, notes, ref_row):
    wall, cpu = times
    out = [f"### {title}", "",
           f"| call | wall ms | / `{ref_row[1]}` | CPU ms | / `{ref_row[1]}` |",
           "|---|---:|---:|---:|---:|"]
    k = ref_row[0]
    for (label, _), t, c in zip(rows, wall, cpu):
        out.append(f"| {label} | {t * 1e3:.4g} | {t / wall[k]:.2f}x | {c * 1e3:.4g} | "
                   f"{c / cpu[k]:.2f}x |")
    for key, v in notes.items():
        out.append("")
        out.append(f"{key}: {v:.2f} s (trace + compile, once)")
    return "\n".join(out)


def run(quick=False, before=None):
    global fad, fsparse, rosen_vec
    rounds = 5 if quick else 21
    if before is not None:
        old = load_build(before)
        fad = load_build(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from fastad import sparse as fsparse
        rosen_vec = rosen_vectorized(fad)
        before = (old, before)
    jax, _ = _jax()
    head = [f"machine: {platform.platform()} | Python {platform.python_version()} | "
            f"NumPy {np.__version__} | JAX {jax.__version__ if jax else 'not installed'} | "
            f"{time.strftime('%Y-%m-%d %H:%M')} | load average {os.getloadavg()[0]:.1f}",
            f"interleaved medians of {rounds} rounds; JAX with x64, XLA_FLAGS="
            f"{os.environ.get('XLA_FLAGS')!r}", ""]
    parts = []
    for n in (100, 1000):
        title, rows, times, notes = rosen_case(n, rounds, n == 100, before)
        jrow = next((i for i, r in enumerate(rows)
                     if r[0].startswith("JAX jit `jax.hessian`, vec")), None)
        parts.append(table(title, rows, times, notes,
                           (2, "dense") if jrow is None else (jrow, "JAX vectorized")))
        parts.append("")
        for f, form in ((rosen_products, "loop"), (rosen_vec, "vectorized")):
            parts.append(breakdown(n, rounds, f, form))
            parts.append("")
    for n in (50, 200):
        title, rows, times, notes = dense_case(n, rounds)
        parts.append(table(title, rows, times, notes, (0, "dense")))
        parts.append("")
    return "\n".join(head + parts)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", help="also write the tables to this file")
    ap.add_argument("--before", help="another checkout whose build's fresh rows to add")
    a = ap.parse_args()
    text = run(a.quick, a.before)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
