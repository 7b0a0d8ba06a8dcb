"""Recording scalar Python code: fad.grad of three loops divided by the same
loops on plain floats (issue #19, item 1), and a per-operation breakdown.

    python benchmarks/bench_recording.py [--quick] [--cpu] [--ops] [BUILD_ROOT ...]

Loops (each fad.grad(f)(x) / f on floats, measured interleaved in one
process: floats, build a, build b, floats, ...):

- rosen:  extended Rosenbrock with products, n = 10,000
          (a = 1 - x[i]; b = x[i+1] - x[i]*x[i]; s = s + a*a + 100.0*(b*b));
- rosen_pow: the same written with ** 2 (Python's float ** is slow, so
          the ratio looks better);
- logreg: logistic regression with cross-entropy over 10,000 points
          (z = w*x + b; y = sigmoid(z); s = s - (t*log(y) + (1-t)*log(1-y))),
          the float version with math.log and a compiled float sigmoid
          (fad.sigmoid on a float: the op table, as fast as math.exp);
- logreg_exp: the same with sigmoid written 1 / (1 + exp(-z)) (math.exp on
          floats, fad.exp on Vars);
- lorenz: Lorenz RK4, 1,000 steps (benchmarks/bench.py's lorenz_rk4_step).

Every gradient is checked against an independent answer (analytic formula,
or central differences for Lorenz).  --ops adds single-operation timings
(ns per op beyond floats) for the breakdown; --cpu times with
time.process_time.  Each BUILD_ROOT is a checkout with built extensions; by
default this checkout.
"""
import argparse
import math
import os
import statistics
import sys
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
from bench import lorenz_rk4_step  # noqa: E402
from _common import load_build as load, rosen_products as rosen  # noqa: E402


# ------------------------------------------------------------------ loops
# rosen: the extended Rosenbrock loop with products (benchmarks/_common.py)

def rosen_pow(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + (1 - x[i]) ** 2 + 100 * (x[i + 1] - x[i] ** 2) ** 2
    return s


def rosen_grad(x):
    g = np.zeros_like(x)
    a, c = x[:-1], x[1:]
    g[:-1] += -2 * (1 - a) - 400 * a * (c - a * a)
    g[1:] += 200 * (c - a * a)
    return g


def make_logreg(sigmoid, log, xs, ts):
    def logreg(p):
        w = p[0]
        b = p[1]
        s = 0.0
        for x, t in zip(xs, ts):
            z = w * x + b
            y = sigmoid(z)
            s = s - (t * log(y) + (1.0 - t) * log(1.0 - y))
        return s
    return logreg


def logreg_grad(p, xs, ts):
    y = 1.0 / (1.0 + np.exp(-(p[0] * xs + p[1])))
    r = y - ts
    return np.array([np.sum(r * xs), np.sum(r)])


def make_logreg_exp(exp, log, xs, ts):
    def logreg_exp(p):
        w = p[0]
        b = p[1]
        s = 0.0
        for x, t in zip(xs, ts):
            y = 1.0 / (1.0 + exp(-(w * x + b)))
            s = s - (t * log(y) + (1.0 - t) * log(1.0 - y))
        return s
    return logreg_exp


def lorenz(p, steps=1000, dt=0.01):
    x, y, z, s, r, b = p[0], p[1], p[2], p[3], p[4], p[5]
    for _ in range(steps):
        x, y, z = lorenz_rk4_step(x, y, z, s, r, b, dt)
    return x


def workloads(fsig, n=10000, npts=10000, steps=1000):
    """name -> (float function, float argument, fad function maker, fad argument, check)."""
    rng = np.random.default_rng(0)
    xr = rng.uniform(-1.2, 1.2, n)
    xs_a = rng.normal(0.0, 2.0, npts)
    ts_a = (1.5 * xs_a - 0.5 + rng.normal(0.0, 1.0, npts) > 0).astype(float)
    xs, ts = xs_a.tolist(), ts_a.tolist()
    p_lr = np.array([0.3, -0.2])
    p_lz = np.array([1.0, 1.0, 1.0, 10.0, 28.0, 8.0 / 3.0])

    def lz(p):
        return lorenz(p, steps)

    def lorenz_fd(p, h=1e-6):
        g = np.empty(6)
        for k in range(6):
            e = np.zeros(6)
            e[k] = h * max(1.0, abs(p[k]))
            g[k] = (lz((p + e).tolist()) - lz((p - e).tolist())) / (2 * e[k])
        return g

    return {
        "rosen": (rosen, xr.tolist(), lambda fad: rosen, xr,
                  lambda g: np.allclose(g, rosen_grad(xr), rtol=1e-9, atol=1e-9)),
        "rosen_pow": (rosen_pow, xr.tolist(), lambda fad: rosen_pow, xr,
                      lambda g: np.allclose(g, rosen_grad(xr), rtol=1e-9, atol=1e-9)),
        "logreg": (make_logreg(fsig, math.log, xs, ts), p_lr.tolist(),
                   lambda fad: make_logreg(fad.sigmoid, fad.log, xs, ts), p_lr,
                   lambda g: np.allclose(g, logreg_grad(p_lr, xs_a, ts_a), rtol=1e-9)),
        "logreg_exp": (make_logreg_exp(math.exp, math.log, xs, ts), p_lr.tolist(),
                       lambda fad: make_logreg_exp(fad.exp, fad.log, xs, ts), p_lr,
                       lambda g: np.allclose(g, logreg_grad(p_lr, xs_a, ts_a), rtol=1e-9)),
        "lorenz": (lz, p_lz.tolist(), lambda fad: lz, p_lz,
                   lambda g: np.allclose(g, lorenz_fd(p_lz), rtol=1e-4, atol=1e-6)),
    }


def run(roots, reps=21, clock=time.perf_counter, only=None, quick=False):
    fads = {r: load(r) for r in roots}
    # on a float, fad.sigmoid is compiled (the op table), as fast as math.exp
    wls = workloads(fads[roots[0]].sigmoid, *((2000, 2000, 200) if quick else ()))
    rows = {}
    for name, (ff, fx, mk, x, check) in wls.items():
        if only and name not in only:
            continue
        grads = {}
        for r in roots:
            g = fads[r].grad(mk(fads[r]))
            if not check(g(x)):
                raise AssertionError(f"{name}: wrong gradient from {r}")
            grads[r] = g
        t_f, t = [], {r: [] for r in roots}
        for _ in range(reps):
            t0 = clock()
            ff(fx)
            t_f.append(clock() - t0)
            for r in roots:
                g = grads[r]
                t0 = clock()
                g(x)
                t[r].append(clock() - t0)
        mf = statistics.median(t_f)
        rows[name] = (mf, {r: statistics.median(v) for r, v in t.items()})
    what = "CPU time" if clock is time.process_time else "wall time"
    print(f"fad.grad(f)(x) / f on floats, medians of {reps} interleaved repeats ({what})")
    print("| loop | floats ms | " + " | ".join(f"{r} ratio" for r in roots) + " |")
    print("|---|---|" + "---|" * len(roots))
    for name, (mf, m) in rows.items():
        print(f"| {name} | {mf * 1e3:.3f} | " +
              " | ".join(f"{m[r] / mf:.2f}x" for r in roots) + " |")
    return rows


# ------------------------------------------------------------- single ops
def op_timings(roots, reps=15, inner=20000, clock=time.perf_counter):
    """ns per operation of single operations on Vars, and the same on floats,
    each in a loop of `inner` repeats unrolled 10 ways (loop overhead shared)."""
    import fastad._var as _  # noqa: F401 (the first root's, after load)
    progs = {
        "v*v": "r = a*b; r = a*b; r = a*b; r = a*b; r = a*b; r = a*b; r = a*b; r = a*b; r = a*b; r = a*b",
        "v+v": "r = a+b; r = a+b; r = a+b; r = a+b; r = a+b; r = a+b; r = a+b; r = a+b; r = a+b; r = a+b",
        "v*c": "r = a*2.5; r = a*2.5; r = a*2.5; r = a*2.5; r = a*2.5; r = a*2.5; r = a*2.5; r = a*2.5; r = a*2.5; r = a*2.5",
        "c-v": "r = 1.0-a; r = 1.0-a; r = 1.0-a; r = 1.0-a; r = 1.0-a; r = 1.0-a; r = 1.0-a; r = 1.0-a; r = 1.0-a; r = 1.0-a",
        "sigmoid(v)": "r = sig(a); r = sig(a); r = sig(a); r = sig(a); r = sig(a); r = sig(a); r = sig(a); r = sig(a); r = sig(a); r = sig(a)",
        "log(v)": "r = log(b); r = log(b); r = log(b); r = log(b); r = log(b); r = log(b); r = log(b); r = log(b); r = log(b); r = log(b)",
    }
    src = "def body(a, b, sig, log):\n    for _ in range(%d):\n        %s\n"
    fns = {}
    for k, p in progs.items():
        ns = {}
        exec(src % (inner, p), ns)
        fns[k] = ns["body"]
    fads = {r: load(r) for r in roots}
    res = {k: {r: [] for r in ["float"] + roots} for k in progs}
    for k in progs:
        body = fns[k]
        fsig = fads[roots[0]].sigmoid
        for _ in range(reps):
            t0 = clock()
            body(0.3, 1.7, fsig, math.log)
            res[k]["float"].append(clock() - t0)
            for r in roots:
                fad = fads[r]
                out = []

                def f(x):
                    t0 = clock()
                    body(x[0], x[1], fad.sigmoid, fad.log)
                    out.append(clock() - t0)
                    return x[0]
                fad.grad(f)(np.array([0.3, 1.7]))
                res[k][r].append(out[0])
    n = inner * 10
    print(f"single operations, ns per op (median of {reps}; floats with math.log "
          "and the compiled float sigmoid)")
    print("| op | floats | " + " | ".join(roots) + " |")
    print("|---|---|" + "---|" * len(roots))
    for k, d in res.items():
        print(f"| {k} | {statistics.median(d['float']) / n * 1e9:.1f} | " +
              " | ".join(f"{statistics.median(d[r]) / n * 1e9:.1f}" for r in roots) + " |")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="*")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--only", default="")
    ap.add_argument("--cpu", action="store_true", help="time with time.process_time")
    ap.add_argument("--ops", action="store_true", help="also single-operation timings")
    a = ap.parse_args()
    roots = a.roots or [os.path.dirname(_HERE)]
    clock = time.process_time if a.cpu else time.perf_counter
    run(roots, a.reps or (7 if a.quick else 21), clock,
        [s for s in a.only.split(",") if s], a.quick)
    if a.ops:
        op_timings(roots, clock=clock)
