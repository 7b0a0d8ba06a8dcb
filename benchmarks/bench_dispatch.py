"""Scalar dispatch through the op table: recording, replay, replayed gradient.

    python benchmarks/bench_dispatch.py [--quick] [BUILD_ROOT ...]

The extended Rosenbrock loop written with products (n = 5,000; 8 ops per
element: c_sub, mul, sub, mul, mul, mul_c, add, add), three per-op figures:

- record:  fad.grad(f)(x) divided by the same loop on plain floats (ratio);
- forward: the replay tape(x2) at a new point, ns per op;
- gradient: the replayed tape.gradient(x2), ns per op.

Each BUILD_ROOT is a checkout with built extensions (importable from its
root); with several, their figures are taken interleaved in one process (a,
b, a, b, ...), so a busy core slows every build alike.  Without one, the
checkout this script belongs to.  Gradients are checked against the
analytic formula (rtol 1e-9).  --cpu times with the process's CPU time
(time.process_time) instead of the wall clock: on a machine whose cores are
busy with other work, time spent waiting for a core then counts for no
build.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

from _common import load_build as load, rosen_grad, rosen_products  # noqa: E402 (this folder is on the path)


def workloads(fad, n):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, n)
    x2 = x + 0.01 * rng.standard_normal(n)
    tape = fad.record(rosen_products, x)
    ops = len(tape) - n
    g = fad.grad(rosen_products)
    for got, at in ((g(x), x), (tape.gradient(x2), x2)):
        assert np.allclose(got, rosen_grad(at), rtol=1e-9, atol=1e-9), "wrong gradient"
    assert abs(tape(x2) - rosen_products(x2.tolist())) <= 1e-9 * abs(rosen_products(x2.tolist()))
    return ops, {"record": lambda: g(x), "forward": lambda: tape(x2),
                 "gradient": lambda: tape.gradient(x2)}


def run(roots, n=5000, reps=41, clock=time.perf_counter):
    builds = {}
    for r in roots:
        fad = load(r)
        builds[r] = workloads(fad, n)
    xs = np.random.default_rng(0).uniform(-1, 1, n).tolist()
    floats = []
    times = {r: {k: [] for k in ("record", "forward", "gradient")} for r in roots}
    # one workload at a time: a recording frees its tape, and with it pooled
    # replay buffers that the next replay would then allocate anew
    for k in ("record", "forward", "gradient"):
        for _ in range(reps):
            if k == "record":
                t0 = clock()
                rosen_products(xs)
                floats.append(clock() - t0)
            for r in roots:
                fn = builds[r][1][k]
                t0 = clock()
                fn()
                times[r][k].append(clock() - t0)
    t_float = statistics.median(floats)
    base = roots[0]
    rows = []
    for r in roots:
        ops = builds[r][0]
        med = {k: statistics.median(v) for k, v in times[r].items()}
        rows.append((r, ops, med))
    what = "CPU time" if clock is time.process_time else "wall time"
    print(f"Rosenbrock loop with products, n = {n} ({rows[0][1]} ops), medians of "
          f"{reps} interleaved repeats ({what}); plain floats {t_float * 1e3:.3f} ms")
    print("| build | record / floats | forward ns/op | gradient ns/op | "
          "forward vs first | gradient vs first | record vs first |")
    print("|---|---|---|---|---|---|---|")
    b = rows[0][2]
    for r, ops, med in rows:
        print(f"| {r} | {med['record'] / t_float:.2f}x | {med['forward'] / ops * 1e9:.2f} | "
              f"{med['gradient'] / ops * 1e9:.2f} | {med['forward'] / b['forward']:.2f} | "
              f"{med['gradient'] / b['gradient']:.2f} | {med['record'] / b['record']:.2f} |")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="*")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--reps", type=int)
    ap.add_argument("--cpu", action="store_true", help="time with time.process_time")
    a = ap.parse_args()
    roots = a.roots or [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    run(roots, a.n, a.reps or (11 if a.quick else 41),
        time.process_time if a.cpu else time.perf_counter)
