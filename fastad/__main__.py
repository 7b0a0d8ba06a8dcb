"""python -m fastad: a short tour, then a quick benchmark against pure Python.

The tour is the lecture notes' logistic regression:
    z = w x + b,  y = sigmoid(z),  L = (y - t)^2 / 2,  R = w^2 / 2,
    Lreg = L + lam R
recorded on a fastad tape, with the reverse sweep's adjoints printed next to
the notes' hand-derived formulas.

The benchmark differentiates two plain Python loops, the extended Rosenbrock
function and that regression summed over 10,000 data points, with fad.grad,
and times them against the same loops on plain floats and on a pure-Python
tape written the way a careful Python programmer would (below; every
gradient is checked against its formula).  The full benchmarks, with their
complete pure-Python tape, are in the source tree: python benchmarks/run.py.
"""
import argparse
import gc
import math
import statistics
import sys
import time
import types

import numpy as np

import fastad as fad
from fastad.transforms import _record

X, T, LAM = 1.5, 0.8, 0.1


def logistic(w, b, x=X, t=T, lam=LAM):
    z = w * x + b
    y = fad.sigmoid(z)
    L = 0.5 * (y - t) ** 2
    R = 0.5 * w ** 2
    Lreg = L + lam * R
    return Lreg, dict(z=z, y=y, L=L, R=R, Lreg=Lreg)


def tour(w=0.3, b=-0.2):
    print("fastad tour: the notes' logistic regression, recorded on a tape\n")
    tape, (out, parts) = _record(logistic, (w, b), {}, (0, 1))
    print(tape)
    adj = tape.reverse(out.slot)
    z, y = parts["z"].value, parts["y"].value
    sig_prime = y * (1 - y)
    ybar = y - T
    zbar = ybar * sig_prime
    hand = {
        "Lreg": 1.0,
        "R": LAM,
        "L": 1.0,
        "y": ybar,
        "z": zbar,
    }
    print(f"\nvalues: x={X} t={T} lam={LAM} w={w} b={b}")
    print(f"  z={z:.6f} y={y:.6f} L={parts['L'].value:.6f} "
          f"R={parts['R'].value:.6f} Lreg={out.value:.6f}\n")
    print(f"  {'adjoint':<8}{'reverse sweep':>16}{'notes formula':>16}   formula")
    formulas = {"Lreg": "1", "R": "Lreg_bar * lam", "L": "Lreg_bar",
                "y": "L_bar (y - t)", "z": "y_bar sigmoid'(z)"}
    worst = 0.0
    for name in ("Lreg", "R", "L", "y", "z"):
        got = adj[parts[name].slot]
        worst = max(worst, abs(got - hand[name]))
        print(f"  {name + '_bar':<8}{got:>16.10f}{hand[name]:>16.10f}   {formulas[name]}")
    gw, gb = fad.grad(lambda w, b: logistic(w, b)[0], argnums=(0, 1))(w, b)
    wbar, bbar = zbar * X + LAM * w, zbar
    for name, got, want, formula in (("w", gw, wbar, "z_bar x + lam w"),
                                     ("b", gb, bbar, "z_bar")):
        worst = max(worst, abs(got - want))
        print(f"  {name + '_bar':<8}{got:>16.10f}{want:>16.10f}   {formula}")
    print(f"\n  largest difference from the notes: {worst:.1e}")
    if not worst < 1e-12:
        raise SystemExit("fastad tour: adjoints disagree with the notes' formulas")


# ------------------------------------------------ a compact pure-Python tape
# The baseline (benchmarks/_purepy.py is its full version, with the same
# design and self-checks): a Var holds only its value and its slot; the
# Wengert list is four flat lists, argument slots and local partials (slot 0
# is a sink for absent arguments); the reverse sweep is one loop.  Only what
# the two workloads use: + - * with numbers and Vars, ** by a number, sigmoid.
_A, _PA, _B, _PB = [], [], [], []
_a, _pa, _b, _pb = _A.append, _PA.append, _B.append, _PB.append


class PyVar:
    __slots__ = ("value", "index")

    def __init__(self, value, index):
        self.value = value
        self.index = index

    def __add__(self, o):
        i = len(_A)
        _a(self.index); _pa(1.0)
        if o.__class__ is PyVar:
            _b(o.index); _pb(1.0)
            return PyVar(self.value + o.value, i)
        _b(0); _pb(0.0)
        return PyVar(self.value + o, i)

    def __radd__(self, o):
        i = len(_A)
        _a(self.index); _pa(1.0); _b(0); _pb(0.0)
        return PyVar(o + self.value, i)

    def __sub__(self, o):
        i = len(_A)
        _a(self.index); _pa(1.0)
        if o.__class__ is PyVar:
            _b(o.index); _pb(-1.0)
            return PyVar(self.value - o.value, i)
        _b(0); _pb(0.0)
        return PyVar(self.value - o, i)

    def __rsub__(self, o):
        i = len(_A)
        _a(self.index); _pa(-1.0); _b(0); _pb(0.0)
        return PyVar(o - self.value, i)

    def __mul__(self, o):
        i = len(_A)
        _a(self.index)
        if o.__class__ is PyVar:
            _pa(o.value); _b(o.index); _pb(self.value)
            return PyVar(self.value * o.value, i)
        _pa(o); _b(0); _pb(0.0)
        return PyVar(self.value * o, i)

    def __rmul__(self, o):
        i = len(_A)
        _a(self.index); _pa(o); _b(0); _pb(0.0)
        return PyVar(o * self.value, i)

    def __pow__(self, k):
        i = len(_A)
        v = self.value
        _a(self.index); _b(0); _pb(0.0)
        if k == 2:
            _pa(2.0 * v)
            return PyVar(v * v, i)
        _pa(k * v ** (k - 1))
        return PyVar(v ** k, i)


def _sigmoid(z):
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _py_sigmoid(z):
    if z.__class__ is PyVar:
        y = _sigmoid(z.value)
        i = len(_A)
        _a(z.index); _pa(y * (1.0 - y)); _b(0); _pb(0.0)
        return PyVar(y, i)
    return _sigmoid(z)


def py_grad(f):
    """grad(f)(x) on the pure-Python tape, for a 1-D array x."""
    def g(x):
        del _A[:], _PA[:], _B[:], _PB[:]
        _a(0); _pa(0.0); _b(0); _pb(0.0)  # the sink
        xs = []
        for v in x.tolist():
            xs.append(PyVar(v, len(_A)))
            _a(0); _pa(0.0); _b(0); _pb(0.0)
        out = f(xs)
        A, PA, B, PB = _A, _PA, _B, _PB
        adj = [0.0] * len(A)
        adj[out.index] = 1.0
        for i in range(out.index, 0, -1):
            w = adj[i]
            if w:
                adj[A[i]] += PA[i] * w
                adj[B[i]] += PB[i] * w
        grad = np.array([adj[v.index] for v in xs])
        del _A[:], _PA[:], _B[:], _PB[:]
        return grad
    return g


# ------------------------------------------------------------- workloads
# Plain Python over a math namespace m, so one function runs on floats, on
# the pure tape and on fastad (as in benchmarks/bench.py, which has more).
FLOATS = types.SimpleNamespace(sigmoid=_sigmoid)
PURE = types.SimpleNamespace(sigmoid=_py_sigmoid)


def rosenbrock(m, x):
    """Extended Rosenbrock as a scalar loop, written with products (with ** 2,
    Python's slow float power would flatter the ratio to floats)."""
    s = 0.0
    for i in range(len(x) - 1):
        a = 1.0 - x[i]
        b = x[i + 1] - x[i] * x[i]
        s = s + a * a + 100.0 * (b * b)
    return s


def logreg(m, p, xs, ts, lam):
    """The notes' L_reg, summed over data points: p = [w, b]."""
    w = p[0]
    b = p[1]
    R = 0.5 * w ** 2
    lamR = lam * R
    s = 0.0
    for x, t in zip(xs, ts):
        z = w * x + b
        y = m.sigmoid(z)
        d = y - t
        L = 0.5 * (d * d)
        Lreg = L + lamR
        s = s + Lreg
    return s


def _workloads():
    """(name, size, f(m, x), x0, analytic gradient of f at x0)."""
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1.2, 1.2, 10_000)
    a, c = x0[:-1], x0[1:]
    g_rosen = np.zeros_like(x0)
    g_rosen[:-1] = -2 * (1 - a) - 400 * a * (c - a ** 2)
    g_rosen[1:] += 200 * (c - a ** 2)

    rng = np.random.default_rng(1)
    xs = rng.normal(0.0, 2.0, 10_000)
    ts = (1.5 * xs - 0.5 + rng.normal(0.0, 1.0, xs.size) > 0).astype(float)
    lam, p0 = 0.1, np.array([0.3, -0.2])
    y = 1.0 / (1.0 + np.exp(-(p0[0] * xs + p0[1])))
    zbar = (y - ts) * y * (1 - y)
    g_logreg = np.array([np.sum(zbar * xs) + xs.size * lam * p0[0], np.sum(zbar)])
    xl, tl = xs.tolist(), ts.tolist()
    return [("Extended Rosenbrock loop", "n=10,000", rosenbrock, x0, g_rosen),
            ("Logistic regression L_reg", "10,000 points",
             lambda m, p: logreg(m, p, xl, tl, lam), p0, g_logreg)]


def _times(fns, rounds=7, min_time=0.01):
    """Median seconds per call of each of fns, timed in interleaved rounds
    (a change of machine speed hits them all), each sample >= min_time."""
    numbers = []
    for fn in fns:
        t = time.perf_counter()
        fn()  # warm-up, and the calls per sample
        numbers.append(max(1, math.ceil(min_time / max(time.perf_counter() - t, 1e-9))))
    samples = [[] for _ in fns]
    for _ in range(rounds):
        for fn, number, out in zip(fns, numbers, samples):
            gc.collect()
            t = time.perf_counter()
            for _ in range(number):
                fn()
            out.append((time.perf_counter() - t) / number)
    return [statistics.median(s) for s in samples]


def benchmark():
    """The quick benchmark as a markdown table; raises SystemExit on a wrong gradient."""
    rows = ["| workload | size | plain floats | pure-Python tape | fastad grad "
            "| fastad replay | grad / floats | pure-Python / fastad |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, size, f, x0, want in _workloads():
        xl = x0.tolist()
        g_pure = py_grad(lambda v: f(PURE, v))
        g_fad = fad.grad(lambda v: f(fad, v))
        tape = fad.record(lambda v: f(fad, v), x0)
        for who, got in (("pure-Python tape", g_pure(x0)), ("fad.grad", g_fad(x0)),
                         ("tape.gradient", tape.gradient(x0))):
            err = np.max(np.abs(got - want)) / np.max(np.abs(want))
            if not err < 1e-9:
                raise SystemExit(f"fastad benchmark: {who} of {name} is off its formula "
                                 f"by {err:.1e}")
        t_float, t_pure, t_fad, t_replay = _times([
            lambda: f(FLOATS, xl), lambda: g_pure(x0), lambda: g_fad(x0),
            lambda: tape.gradient(x0)])
        rows.append(f"| {name} | {size} | {t_float * 1e3:.2f} ms | {t_pure * 1e3:.1f} ms "
                    f"| {t_fad * 1e3:.2f} ms | {t_replay * 1e3:.3f} ms "
                    f"| {t_fad / t_float:.2f}x | {t_pure / t_fad:.1f}x |")
    return "\n".join(rows + [
        "", "Medians of 7 interleaved samples (each >= 10 ms, gc enabled); every gradient "
        "checked against its formula.", "fastad replay: tape.gradient at the same point, "
        "the loop recorded once (fad.record)."])


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastad", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    args = parser.parse_args(argv)
    tour()
    if not args.no_bench:
        print("\nBenchmark: fastad against plain floats and a pure-Python tape\n")
        sys.stdout.flush()
        print(benchmark())


if __name__ == "__main__":
    main()
