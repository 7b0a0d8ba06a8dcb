"""A primitive with one rule, in the mode that rule does not cover: the
cost of the transposed rule against the rule itself (issue #17, item 3).

Each line times the same call with a primitive given both rules (a) and
with only the other rule (b), interleaved a, b, a, b, ... in one process;
medians, and the ratio b / a.

    python benchmarks/bench_primitive_modes.py
"""
import os
import sys
import time

import numpy as np

import fastad as fad
from fastad import primitives as P

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def interleaved(a, b, reps=41, inner=1):
    ta, tb = [], []
    for _ in range(reps):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            out.append((time.perf_counter() - t0) / inner)
    return float(np.median(ta)), float(np.median(tb))


def softmax_prim(rules, vectorized=False):
    @fad.primitive
    def softmax(x):
        e = np.exp(x - np.max(x))
        return e / np.sum(e)
    rule = lambda d, y, x: y * (d - np.sum(d * y, axis=-1, keepdims=True))
    if rules in ("both", "vjp"):
        softmax.defvjp(rule, vectorized=vectorized)
    if rules in ("both", "jvp"):
        softmax.defjvp(rule, vectorized=vectorized)
    return softmax


def layer_prim(rules):
    @fad.primitive
    def layer(W, v):
        return np.tanh(W @ v)

    def vjp(ybar, y, W, v):
        g = ybar * (1 - y * y)
        return np.outer(g, v), W.T @ g

    def jvp(dots, y, W, v):
        Wd, vd = dots
        return (1 - y * y) * (Wd @ v + W @ vd)
    if rules in ("both", "vjp"):
        layer.defvjp(vjp)
    if rules in ("both", "jvp"):
        layer.defjvp(jvp)
    return layer


def scalar_prim(rules):
    @fad.primitive
    def sq_sin(a, b):
        return a * a * np.sin(b)
    vjp = lambda ybar, y, a, b: (ybar * 2 * a * np.sin(b), ybar * a * a * np.cos(b))
    def jvp(d, y, a, b):
        return (0.0 if d[0] is None else 2 * a * np.sin(b) * d[0]) + \
            (0.0 if d[1] is None else a * a * np.cos(b) * d[1])
    if rules in ("both", "vjp"):
        sq_sin.defvjp(vjp)
    if rules in ("both", "jvp"):
        sq_sin.defjvp(jvp)
    return sq_sin


def row(label, a, b):
    print(f"| {label:<58} | {a * 1e6:10.1f} | {b * 1e6:10.1f} | {b / a:6.2f} |")


def main():
    rng = np.random.default_rng(0)
    print("| call (a: both rules, b: one rule, transposed) | a (us) | b (us) | b / a |")
    print("|---|---:|---:|---:|")
    # the rule alone at one point: given jvp rule vs the transposed vjp rule
    for vec in (False, True):
        for n in (10, 100, 1000):
            x = rng.normal(size=n)
            both, vo = softmax_prim("both", vec), softmax_prim("vjp", vec)
            y = both.fn(x)
            for k in (1, 16):
                V = rng.normal(size=(k, n))
                a, b = interleaved(lambda: both._pushforward([V], y, [x], {}, k),
                                   lambda: vo._pushforward([V], y, [x], {}, k))
                row(f"softmax n={n}{' (vectorized rules)' if vec else ''}: J v, k={k}, "
                    f"rule vs transposed", a, b)
    for n in (10, 100):
        x = rng.normal(size=n)
        both, jo = softmax_prim("both"), softmax_prim("jvp")
        y = both.fn(x)
        W = rng.normal(size=(1, n))
        a, b = interleaved(lambda: both._pullback(W, y, [x], {}, [x.shape], 1),
                           lambda: jo._pullback(W, y, [x], {}, [x.shape], 1))
        row(f"softmax n={n}: ybar J, k=1, rule vs transposed jvp", a, b)
    # whole transforms
    for n in (10, 100):
        x = rng.normal(size=n)
        v = rng.normal(size=n)
        both, vo, jo = softmax_prim("both"), softmax_prim("vjp"), softmax_prim("jvp")
        fb = lambda x: both(x * x)
        a, b = interleaved(lambda: fad.jvp(fb, x, v), lambda: fad.jvp(lambda x: vo(x * x), x, v))
        row(f"fad.jvp through softmax n={n}", a, b)
        a, b = interleaved(lambda: fad.jacfwd(fb)(x), lambda: fad.jacfwd(lambda x: vo(x * x))(x))
        row(f"fad.jacfwd through softmax n={n}", a, b)
        sb = lambda p: (lambda x: fad.sum(fad.sin(p(x * x))))
        a, b = interleaved(lambda: fad.grad(sb(both))(x), lambda: fad.grad(sb(jo))(x))
        row(f"fad.grad through softmax n={n} (b: jvp rule only)", a, b)
        a, b = interleaved(lambda: fad.hvp(sb(both), x, v), lambda: fad.hvp(sb(vo), x, v))
        row(f"fad.hvp through softmax n={n} (b: vjp rule only)", a, b)
        a, b = interleaved(lambda: fad.hvp(sb(both), x, v), lambda: fad.hvp(sb(jo), x, v))
        row(f"fad.hvp through softmax n={n} (b: jvp rule only)", a, b)
        tb, tv = fad.record(fb, x), fad.record(lambda x: vo(x * x), x)
        V = rng.normal(size=(8, n))
        a, b = interleaved(lambda: tb._jvp(None, V), lambda: tv._jvp(None, V))
        row(f"tape.jvp, recorded point (kept recording), n={n}, k=8", a, b)
        a, b = interleaved(lambda: tb.jvp(x + 0.1, V), lambda: tv.jvp(x + 0.1, V))
        row(f"tape.jvp, replay at a new point, n={n}, k=8", a, b)
    W0, v0 = rng.normal(size=(30, 40)), rng.normal(size=40)
    z = np.concatenate([W0.ravel(), v0])
    lb, lv, lj = layer_prim("both"), layer_prim("vjp"), layer_prim("jvp")
    fl = lambda p: (lambda z: p(fad.reshape(z[:1200], (30, 40)), z[1200:]))
    vz = rng.normal(size=z.size)
    a, b = interleaved(lambda: fad.jvp(fl(lb), z, vz), lambda: fad.jvp(fl(lv), z, vz))
    row("fad.jvp through tanh(W @ v), W 30x40", a, b)
    sl = lambda p: (lambda z: fad.sum(fl(p)(z) ** 2))
    a, b = interleaved(lambda: fad.grad(sl(lb))(z), lambda: fad.grad(sl(lj))(z))
    row("fad.grad through tanh(W @ v), W 30x40 (b: jvp rule only)", a, b)
    # a scalar loop: the lean path (a scalar output: one rule call, no recording)
    sb, sv, sj = scalar_prim("both"), scalar_prim("vjp"), scalar_prim("jvp")

    def loop(p):
        def f(x):
            s = 0.0
            for i in range(len(x) - 1):
                s = s + p(x[i], x[i + 1])
            return s
        return f
    x = rng.normal(size=200)
    v = rng.normal(size=200)
    a, b = interleaved(lambda: fad.jvp(loop(sb), x, v), lambda: fad.jvp(loop(sv), x, v))
    row("fad.jvp, scalar loop of 199 primitive calls (vjp only)", a, b)
    a, b = interleaved(lambda: fad.grad(loop(sb))(x), lambda: fad.grad(loop(sj))(x))
    row("fad.grad, scalar loop of 199 primitive calls (jvp only)", a, b)
    a, b = interleaved(lambda: fad.hvp(loop(sb), x, v), lambda: fad.hvp(loop(sv), x, v))
    row("fad.hvp, scalar loop of 199 primitive calls (vjp only)", a, b)
    a, b = interleaved(lambda: fad.hvp(loop(sb), x, v), lambda: fad.hvp(loop(sj), x, v))
    row("fad.hvp, scalar loop of 199 primitive calls (jvp only)", a, b)


if __name__ == "__main__":
    main()
